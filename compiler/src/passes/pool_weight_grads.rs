//! `pool_weight_grads`: a convolution's weight gradient through max pooling,
//! `conv2d_weight_grad(x, maxpool_grad(p, dy))`, becomes `pooled_conv2d_weight_grad(x, indices,
//! dy)`, which adds each window's patch at its maximum alone, where nothing else reads the
//! unpooled gradient (the network's first convolution, which has no input gradient, after
//! `factor_sums` has taken its bias gradient from the pooled one). The forward pool,
//! `maxpool(p)`, becomes `maxpool_with_indices(p)`, which also stores where each maximum lies:
//! the backward pass searches no window again, and `p` need not live until then.
//!
//! The pooled op trades the contraction's dense multiply-adds for a few vector multiply-adds at
//! each window's maximum, so it is chosen only where that pays: the pool's windows step over
//! at least `MIN_STRIDE_AREA` outputs each, and a channel's weights fit in registers
//! (`pooled_weight_grad::fits_registers`).

use super::{rewrite, Rewrite, Uses};
use crate::autodiff::prune;
use crate::ir::ops::pooled_weight_grad::fits_registers;
use crate::ir::ops::{ConvAttrs, OpKind, PoolAttrs};
use crate::ir::{Graph, ValueId};
use std::collections::{HashMap, HashSet};

/// Pools whose windows step over fewer outputs than this keep the dense weight gradient.
const MIN_STRIDE_AREA: usize = 4;

/// A weight gradient to take at the maxima: the pooled op's kind, its x and dy, and the forward
/// pool whose indices it reads.
struct AtMaxima {
    kind: OpKind,
    x: ValueId,
    dy: ValueId,
    forward: usize,
}

pub fn run(graph: &Graph) -> Graph {
    let uses = Uses::of(graph);
    // By the weight gradient's op index.
    let mut at_maxima: HashMap<usize, AtMaxima> = HashMap::new();
    for (index, op) in graph.ops.iter().enumerate() {
        let OpKind::Conv2dWeightGrad(conv, kernel) = op.kind else {
            continue;
        };
        let (x, unpooled) = (op.inputs[0], op.inputs[1]);
        let Some(producer) = graph.producer(unpooled) else {
            continue;
        };
        let OpKind::MaxPoolGrad(pool) = graph.ops[producer].kind else {
            continue;
        };
        let group_channels = graph.shape(x)[1] / conv.groups;
        if !uses.only(unpooled, index) || !pays(&conv, kernel, &pool, group_channels) {
            continue;
        }
        let [p, dy] = [0, 1].map(|i| graph.ops[producer].inputs[i]);
        let forward = uses.readers[p.0].iter().copied().find(|&reader| {
            graph.ops[reader].kind == OpKind::MaxPool(pool) && graph.ops[reader].inputs == [p]
        });
        if let Some(forward) = forward {
            let kind = OpKind::PooledConv2dWeightGrad { conv, kernel };
            at_maxima.insert(
                index,
                AtMaxima {
                    kind,
                    x,
                    dy,
                    forward,
                },
            );
        }
    }
    let forwards: HashSet<usize> = at_maxima.values().map(|grad| grad.forward).collect();
    // The new graph's `maxpool_with_indices` of each forward pool rewritten.
    let mut indexed: HashMap<usize, ValueId> = HashMap::new();
    let pooled = rewrite(graph, |new, index, renumber| {
        let op = &graph.ops[index];
        let layer = op.layer.as_deref();
        if let (true, OpKind::MaxPool(pool)) = (forwards.contains(&index), &op.kind) {
            let kind = OpKind::MaxPoolWithIndices(*pool);
            let both = new.op(kind, &[renumber[&op.inputs[0]]], layer);
            indexed.insert(index, both);
            return Rewrite::Replace(half(new, both, 0, layer));
        }
        let Some(grad) = at_maxima.get(&index) else {
            return Rewrite::Keep;
        };
        let indices = half(new, indexed[&grad.forward], 1, layer);
        let inputs = [renumber[&grad.x], indices, renumber[&grad.dy]];
        Rewrite::Replace(new.op(grad.kind.clone(), &inputs, layer))
    });
    prune(&pooled)
}

/// Half `which` of a `maxpool_with_indices` result: the maxima (0) or their indices (1), a view.
fn half(graph: &mut Graph, both: ValueId, which: usize, layer: Option<&str>) -> ValueId {
    let slice = OpKind::Slice {
        axis: 0,
        start: which,
        len: 1,
    };
    let half = graph.op(slice, &[both], layer);
    let shape = graph.shape(half)[1..].to_vec();
    graph.op(OpKind::Reshape(shape), &[half], layer)
}

/// Whether the pooled op applies (an unpadded convolution) and is the faster.
fn pays(conv: &ConvAttrs, kernel: [usize; 2], pool: &PoolAttrs, group_channels: usize) -> bool {
    conv.pad == [0; 4]
        && pool.stride[0] * pool.stride[1] >= MIN_STRIDE_AREA
        && fits_registers(group_channels, kernel, conv.dilation)
}
