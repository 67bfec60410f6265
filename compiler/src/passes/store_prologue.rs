//! `store_prologue`: an elementwise op (after `fuse_prologue`, which took those that only
//! convolutions read) that other ops read besides a convolution becomes the prologue of the
//! first convolution that reads it as x (or of the input gradient of one, reading it as dy),
//! which stores x as it computes it, where its kernels compute each element of x once
//! (`conv::copies_computed_x_once`: they copy x with its padding written out, whole, once per
//! image). x is still written, but the elementwise op's own pass over memory and the
//! convolution's read of x are gone. ResNet's block output (batch norm's apply, the residual sum
//! and ReLU) is computed by the next block's first convolution, and batch norm's backward by the
//! input gradient of the convolution before it.
//!
//! The convolution moves up to just before x's first other reader where that reader comes
//! first (a weight gradient reads dy before the input gradient does), if its other inputs exist
//! by then. The chain lists x last among its results, after the convolution's and its sums.

use super::fuse_prologue::{chain_reads_first, prologue_chain};
use super::fuse_sums::read_after_the_step;
use super::{rewrite_in_order, Rewrite, Uses};
use crate::ir::ops::fused::{is_pointwise, Chain};
use crate::ir::{Graph, OpKind, ValueId};
use std::collections::{HashMap, HashSet};

/// An elementwise op that a convolution computes and stores as it reads it (`producer`), the
/// convolution (`reader`), and the op before which the two run: the reader, or x's first other
/// reader where that comes first.
struct Stored {
    producer: usize,
    reader: usize,
    before: usize,
}

/// The elementwise ops that other ops read besides a convolution, computed by the first
/// convolution that can store them.
pub fn run(graph: &Graph) -> Graph {
    let uses = Uses::of(graph);
    let read_after = read_after_the_step(graph);
    let mut involved: HashSet<usize> = HashSet::new();
    let mut stored: Vec<Stored> = Vec::new();
    for (producer, op) in graph.ops.iter().enumerate() {
        let readers = &uses.readers[op.output.0];
        if !is_pointwise(&op.kind) || read_after[op.output.0] || involved.contains(&producer) {
            continue;
        }
        let Some(&reader) = readers.iter().find(|&&r| stores(graph, producer, r)) else {
            continue;
        };
        let Some(&first_other) = readers.iter().find(|&&r| r != reader) else {
            continue;
        };
        let before = reader.min(first_other);
        if [producer, reader, before]
            .iter()
            .any(|index| involved.contains(index))
        {
            continue;
        }
        stored.push(Stored {
            producer,
            reader,
            before,
        });
        // Kept where every op still comes after the ops whose results it reads: the reader's
        // other inputs exist by then, and no other reader that moves up reads the producer.
        if runs_in_order(graph, &order(graph, &stored)) {
            involved.extend([producer, reader, before]);
        } else {
            stored.pop();
        }
    }
    let order = order(graph, &stored);
    let reader_of: HashMap<usize, usize> = stored.iter().map(|s| (s.producer, s.reader)).collect();
    let mut computed: HashMap<usize, ValueId> = HashMap::new();
    rewrite_in_order(graph, order, |new, index, renumber| {
        if let Some(&value) = computed.get(&index) {
            return Rewrite::Replace(value);
        }
        let Some(&reader) = reader_of.get(&index) else {
            return Rewrite::Keep;
        };
        let (inputs, chain) = stored_chain(graph, index, reader);
        let inputs: Vec<ValueId> = inputs.iter().map(|v| renumber[v]).collect();
        let reader_op = &graph.ops[reader];
        let fused = new.op(OpKind::Fused(chain), &inputs, reader_op.layer.as_deref());
        computed.insert(reader, fused);
        let x = &graph.ops[index];
        let shape = graph.shape(x.output).clone();
        let len = shape.iter().product();
        let slice = OpKind::Slice {
            axis: 0,
            start: graph.shape(reader_op.output).iter().product(),
            len,
        };
        let part = new.op(slice, &[fused], x.layer.as_deref());
        Rewrite::Replace(new.op(OpKind::Reshape(shape), &[part], x.layer.as_deref()))
    })
}

/// Whether op `reader`, a convolution (or its input gradient) with an epilogue and sums,
/// can compute op `producer`'s result as its prologue and store it.
fn stores(graph: &Graph, producer: usize, reader: usize) -> bool {
    let (x, op) = (graph.ops[producer].output, &graph.ops[reader]);
    let OpKind::Fused(chain) = &op.kind else {
        return false;
    };
    let takes = |kind: &OpKind| matches!(kind, OpKind::Conv2d(_) | OpKind::Conv2dInputGrad(..));
    chain_reads_first(chain, op, x, takes) && !chain.results.is_empty() && {
        let (inputs, chain) = stored_chain(graph, producer, reader);
        let shapes: Vec<&Vec<usize>> = inputs.iter().map(|&v| graph.shape(v)).collect();
        let floats = |value: ValueId| graph.shape(value).iter().product::<usize>();
        OpKind::Fused(chain).shape(&shapes) == Ok(vec![floats(op.output) + floats(x)])
    }
}

/// [`prologue_chain`], with the prologue's value as the last result.
fn stored_chain(graph: &Graph, producer: usize, reader: usize) -> (Vec<ValueId>, Chain) {
    let (inputs, mut chain) = prologue_chain(graph, producer, reader);
    let x = chain
        .contraction()
        .expect("a convolution's chain")
        .prologue
        .len()
        - 1;
    chain.results.push(x);
    (inputs, chain)
}

/// The ops in order, each stored op's producer and reader just before the op it runs before.
fn order(graph: &Graph, stored: &[Stored]) -> Vec<usize> {
    let moved: HashMap<usize, &Stored> = stored.iter().map(|s| (s.before, s)).collect();
    let skipped: HashSet<usize> = stored.iter().flat_map(|s| [s.producer, s.reader]).collect();
    let mut order = Vec::with_capacity(graph.ops.len());
    for index in 0..graph.ops.len() {
        match moved.get(&index) {
            Some(s) if s.before == s.reader => order.extend([s.producer, s.reader]),
            Some(s) => order.extend([s.producer, s.reader, s.before]),
            None if !skipped.contains(&index) => order.push(index),
            None => {}
        }
    }
    order
}

/// Whether every op in `order` comes after the ops whose results it reads.
fn runs_in_order(graph: &Graph, order: &[usize]) -> bool {
    let mut done = vec![false; graph.ops.len()];
    order.iter().all(|&index| {
        let ready = graph.ops[index]
            .inputs
            .iter()
            .all(|&value| graph.producer(value).is_none_or(|p| done[p]));
        done[index] = true;
        ready
    })
}
