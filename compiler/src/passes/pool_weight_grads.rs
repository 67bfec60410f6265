//! `pool_weight_grads`: a convolution's weight gradient through max pooling,
//! `conv2d_weight_grad(x, maxpool_grad(p, dy))`, becomes `pooled_conv2d_weight_grad(x, p, dy)`,
//! which adds each window's patch at its maximum alone, where nothing else reads the unpooled
//! gradient (the network's first convolution, which has no input gradient, after `factor_sums`
//! has taken its bias gradient from the pooled one).
//!
//! The pooled op trades the contraction's dense multiply-adds for a search of each window and a
//! few vector multiply-adds at its maximum, so it is chosen only where that pays: the pool's windows step over
//! at least `MIN_STRIDE_AREA` outputs each, and a channel's weights fit in registers
//! (`pooled_weight_grad::fits_registers`).

use super::{rewrite, Rewrite, Uses};
use crate::autodiff::prune;
use crate::ir::ops::pooled_weight_grad::fits_registers;
use crate::ir::ops::{ConvAttrs, OpKind, PoolAttrs};
use crate::ir::Graph;

/// Pools whose windows step over fewer outputs than this keep the dense weight gradient.
const MIN_STRIDE_AREA: usize = 4;

pub fn run(graph: &Graph) -> Graph {
    let uses = Uses::of(graph);
    let pooled = rewrite(graph, |new, index, renumber| {
        let op = &graph.ops[index];
        let OpKind::Conv2dWeightGrad(conv, kernel) = op.kind else {
            return Rewrite::Keep;
        };
        let (x, unpooled) = (op.inputs[0], op.inputs[1]);
        let Some(producer) = graph.producer(unpooled) else {
            return Rewrite::Keep;
        };
        let OpKind::MaxPoolGrad(pool) = graph.ops[producer].kind else {
            return Rewrite::Keep;
        };
        let group_channels = graph.shape(x)[1] / conv.groups;
        if !uses.only(unpooled, index) || !pays(&conv, kernel, &pool, group_channels) {
            return Rewrite::Keep;
        }
        let [p, dy] = [0, 1].map(|i| renumber[&graph.ops[producer].inputs[i]]);
        let kind = OpKind::PooledConv2dWeightGrad { conv, kernel, pool };
        Rewrite::Replace(new.op(kind, &[renumber[&x], p, dy], op.layer.as_deref()))
    });
    prune(&pooled)
}

/// Whether the pooled op applies (an unpadded convolution) and is the faster.
fn pays(conv: &ConvAttrs, kernel: [usize; 2], pool: &PoolAttrs, group_channels: usize) -> bool {
    conv.pad == [0; 4]
        && pool.stride[0] * pool.stride[1] >= MIN_STRIDE_AREA
        && fits_registers(group_channels, kernel, conv.dilation)
}
