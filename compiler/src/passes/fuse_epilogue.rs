//! `fuse_epilogue`: a convolution, a convolution's input gradient or a matrix product whose
//! only reader is an elementwise op or chain (after `fuse_elementwise`) becomes that chain's
//! first step, so the chain is computed on
//! each tile of the product as the tile is written out, while it is in cache: bias, activation
//! and residual addition cost no pass over memory of their own, and the raw product is never
//! written. Training graphs get it forward where a contraction's output is not kept for the
//! backward pass (a convolution with bias and ReLU, a dense layer), and backward where the
//! gradient of a layer's input goes on through an activation's gradient or a residual sum;
//! inference graphs almost everywhere, batch norm folded first. Depthwise convolutions, whose
//! kernels write whole rows of planes, apply it to each task's rows just after writing them.
//!
//! The chain may read, besides the product, only tensors that are whole or constant along the
//! product's rows in memory (`fused::epilogue_reads`), and not the contraction's own operands.

use super::{rewrite, Rewrite, Uses};
use crate::ir::ops::fused::{epilogue_reads, is_contraction, is_pointwise, Arg, Chain, Step};
use crate::ir::{Graph, OpKind, ValueId};

pub fn run(graph: &Graph) -> Graph {
    let uses = Uses::of(graph);
    // For each op that takes in a contraction: the contraction's index.
    let mut absorbs: Vec<Option<usize>> = vec![None; graph.ops.len()];
    let mut absorbed = vec![false; graph.ops.len()];
    for (reader, op) in graph.ops.iter().enumerate() {
        if !is_pointwise(&op.kind) {
            continue;
        }
        let found = op.inputs.iter().find_map(|&value| {
            let producer = graph.producer(value)?;
            fits(graph, producer, reader, &uses).then_some(producer)
        });
        if let Some(producer) = found {
            absorbs[reader] = Some(producer);
            absorbed[producer] = true;
        }
    }
    rewrite(graph, |new, index, renumber| {
        if absorbed[index] {
            return Rewrite::Drop;
        }
        let Some(producer) = absorbs[index] else {
            return Rewrite::Keep;
        };
        let (inputs, chain) = epilogue_chain(graph, producer, index);
        let inputs: Vec<ValueId> = inputs.iter().map(|v| renumber[v]).collect();
        let layer = graph.ops[producer].layer.as_deref();
        Rewrite::Replace(new.op(OpKind::Fused(chain), &inputs, layer))
    })
}

/// Whether op `producer` is a contraction that op `reader` can take in as its epilogue.
fn fits(graph: &Graph, producer: usize, reader: usize, uses: &Uses) -> bool {
    let (contraction, op) = (&graph.ops[producer], &graph.ops[reader]);
    let output = graph.shape(contraction.output);
    if !is_contraction(&contraction.kind)
        || !uses.only(contraction.output, reader)
        || graph.shape(op.output) != output
    {
        return false;
    }
    let fits = op.inputs.iter().all(|value| {
        *value == contraction.output
            || (!contraction.inputs.contains(value)
                && epilogue_reads(&contraction.kind, graph.shape(*value), output))
    });
    // The shape rule has the last word, so that no graph the pass makes fails to verify.
    fits && {
        let (inputs, chain) = epilogue_chain(graph, producer, reader);
        let shapes: Vec<&Vec<usize>> = inputs.iter().map(|&v| graph.shape(v)).collect();
        OpKind::Fused(chain).shape(&shapes).as_ref() == Ok(output)
    }
}

/// The chain of op `reader` with contraction `producer` as its first step, and its inputs:
/// the contraction's operands, then the reader's other inputs.
fn epilogue_chain(graph: &Graph, producer: usize, reader: usize) -> (Vec<ValueId>, Chain) {
    let (contraction, op) = (&graph.ops[producer], &graph.ops[reader]);
    let mut inputs: Vec<ValueId> = Vec::new();
    let arg_of = |value: ValueId, inputs: &mut Vec<ValueId>| {
        if value == contraction.output {
            return Arg::Step(0);
        }
        let index = inputs.iter().position(|&v| v == value).unwrap_or_else(|| {
            inputs.push(value);
            inputs.len() - 1
        });
        Arg::Input(index)
    };
    let first = Step {
        kind: contraction.kind.clone(),
        args: contraction
            .inputs
            .iter()
            .map(|&v| arg_of(v, &mut inputs))
            .collect(),
    };
    let mut steps = vec![first];
    match &op.kind {
        OpKind::Fused(chain) => steps.extend(chain.steps.iter().map(|step| {
            Step {
                kind: step.kind.clone(),
                args: step
                    .args
                    .iter()
                    .map(|arg| match *arg {
                        Arg::Input(i) => arg_of(op.inputs[i], &mut inputs),
                        Arg::Step(s) => Arg::Step(s + 1),
                    })
                    .collect(),
            }
        })),
        kind => steps.push(Step {
            kind: kind.clone(),
            args: op.inputs.iter().map(|&v| arg_of(v, &mut inputs)).collect(),
        }),
    }
    (
        inputs,
        Chain {
            steps,
            results: Vec::new(),
        },
    )
}
