//! `fuse_prologue`: an elementwise op or chain (after `fuse_elementwise`) whose every reader is
//! a convolution (with or without an epilogue) or a weight gradient that reads it as its input
//! x becomes each reader's prologue: the kernels compute x as they read it (a depthwise one as
//! it stages rows of x in its scratch, a pointwise one in its packing, others as they copy x
//! with its padding written out, or channels last for the weight gradient), so x is never
//! written. Batch norm's apply and ReLU before each of MobileNet's convolutions but the first,
//! and before the second convolution of each of ResNet's blocks, cost no pass over memory of
//! their own, and x is not kept for the backward pass, whose weight gradient computes it again
//! from batch norm's input (which batch norm's own gradient keeps anyway).
//!
//! The prologue reads tensors of x's shape and per-channel ones only (`fused::check_prologue`).

use super::{rewrite, Rewrite, Uses};
use crate::ir::ops::fused::{is_pointwise, Arg, Chain, Step};
use crate::ir::{Graph, Op, OpKind, ValueId};

pub fn run(graph: &Graph) -> Graph {
    let uses = Uses::of(graph);
    let absorbed: Vec<bool> = (0..graph.ops.len())
        .map(|index| {
            let (op, readers) = (&graph.ops[index], &uses.readers[graph.ops[index].output.0]);
            is_pointwise(&op.kind)
                && !uses.is_output[op.output.0]
                && !readers.is_empty()
                && readers.iter().all(|&reader| fits(graph, index, reader))
        })
        .collect();
    rewrite(graph, |new, index, renumber| {
        if absorbed[index] {
            return Rewrite::Drop;
        }
        let op = &graph.ops[index];
        let producer = op
            .inputs
            .iter()
            .filter_map(|&value| graph.producer(value))
            .find(|&producer| absorbed[producer]);
        let Some(producer) = producer else {
            return Rewrite::Keep;
        };
        let (inputs, chain) = prologue_chain(graph, producer, index);
        let inputs: Vec<ValueId> = inputs.iter().map(|v| renumber[v]).collect();
        Rewrite::Replace(new.op(OpKind::Fused(chain), &inputs, op.layer.as_deref()))
    })
}

/// Whether op `reader` can compute op `producer`'s result as its prologue: a convolution (or
/// a chain that begins with one) or a weight gradient that reads it as x alone, and that the
/// shape rule accepts with it (one that takes a prologue, its inputs whole or per channel).
fn fits(graph: &Graph, producer: usize, reader: usize) -> bool {
    let (x, op) = (graph.ops[producer].output, &graph.ops[reader]);
    let reads_x_as_operand = match &op.kind {
        OpKind::Conv2d(_) | OpKind::Conv2dWeightGrad(..) => op.inputs[0] == x,
        OpKind::Fused(chain) => {
            chain_reads_first(chain, op, x, |kind| matches!(kind, OpKind::Conv2d(_)))
        }
        _ => false,
    };
    reads_x_as_operand && op.inputs.iter().filter(|&&v| v == x).count() == 1 && {
        let (inputs, chain) = prologue_chain(graph, producer, reader);
        let shapes: Vec<&Vec<usize>> = inputs.iter().map(|&v| graph.shape(v)).collect();
        OpKind::Fused(chain).shape(&shapes).as_ref() == Ok(graph.shape(op.output))
    }
}

/// Whether `chain` (op `op`'s) begins with a contraction of a kind `takes` accepts, without a
/// prologue, that reads `x` as its first operand and nothing else of the chain reads `x`.
pub(super) fn chain_reads_first(
    chain: &Chain,
    op: &Op,
    x: ValueId,
    takes: impl Fn(&OpKind) -> bool,
) -> bool {
    let reads_x = |arg: &Arg| matches!(*arg, Arg::Input(i) if op.inputs[i] == x);
    chain.contraction().is_some_and(|around| {
        around.prologue.is_empty()
            && takes(&around.contraction.kind)
            && reads_x(&around.contraction.args[0])
            && chain.steps[1..].iter().all(|s| !s.args.iter().any(reads_x))
            && !around.contraction.args[1..].iter().any(reads_x)
    })
}

/// The chain of op `reader` with op `producer`'s steps before it, and its inputs: the
/// producer's, then the reader's others.
pub(super) fn prologue_chain(
    graph: &Graph,
    producer: usize,
    reader: usize,
) -> (Vec<ValueId>, Chain) {
    let (before, op) = (&graph.ops[producer], &graph.ops[reader]);
    let mut inputs: Vec<ValueId> = Vec::new();
    let mut arg_of = |value: ValueId| {
        let index = inputs.iter().position(|&v| v == value).unwrap_or_else(|| {
            inputs.push(value);
            inputs.len() - 1
        });
        Arg::Input(index)
    };
    let (mut steps, _) = as_chain(before, 0, &mut arg_of);
    let x = Arg::Step(steps.len() - 1);
    let (after, results) = as_chain(op, steps.len(), |value| {
        if value == before.output {
            x
        } else {
            arg_of(value)
        }
    });
    steps.extend(after);
    (inputs, Chain { steps, results })
}

/// An op's steps as a chain's (itself, unless it is one) that come after `shift` others, its
/// inputs through `input`, and its results.
fn as_chain(
    op: &Op,
    shift: usize,
    mut input: impl FnMut(ValueId) -> Arg,
) -> (Vec<Step>, Vec<usize>) {
    let mut arg = |a: &Arg| match *a {
        Arg::Input(i) => input(op.inputs[i]),
        Arg::Step(s) => Arg::Step(s + shift),
    };
    match &op.kind {
        OpKind::Fused(chain) => (
            chain
                .steps
                .iter()
                .map(|step| Step {
                    kind: step.kind.clone(),
                    args: step.args.iter().map(&mut arg).collect(),
                })
                .collect(),
            chain.results.iter().map(|r| r + shift).collect(),
        ),
        kind => (
            vec![Step {
                kind: kind.clone(),
                args: (0..op.inputs.len()).map(|i| arg(&Arg::Input(i))).collect(),
            }],
            Vec::new(),
        ),
    }
}
