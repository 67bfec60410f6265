//! Generated depthwise convolutions (one input channel per group, `codegen::depthwise`)
//! against the interpreter: the forward op and both gradients, on random channel counts and
//! multipliers, kernels, strides, dilations and asymmetric paddings, with images from a single
//! pixel to wide enough for the f32x4 interior of each row between its padded borders; and
//! the forward op and the input gradient with epilogues (`fuse_epilogue`'s and `fuse_sums`'s:
//! an activation, a product with another tensor, per-channel sums and squared deviations);
//! and the forward op (with its epilogue) and the weight gradient with the prologue
//! `fuse_prologue` gives them, batch norm's apply and ReLU computing x.

use super::contraction::{check_epilogues, check_prologues, output_shape};
use super::{check_op, config, random_tensor};
use netc::codegen::depthwise::is_depthwise;
use netc::ir::ops::ConvAttrs;
use netc::ir::OpKind;
use proptest::prelude::*;

prop_compose! {
    /// A depthwise convolution: `(attrs, x shape, w shape)`, groups = channels (at least two:
    /// one input channel goes to the contraction). Each spatial extent is what the dilated
    /// kernel needs (less the padding) plus up to 19.
    fn depthwise_case()(
        n in 1..=2usize,
        channels in 2..=8usize,
        multiplier in 1..=2usize,
        extra in prop::array::uniform2(0..=19usize),
        kernel in prop::array::uniform2(1..=5usize),
        stride in prop::array::uniform2(1..=3usize),
        dilation in prop::array::uniform2(1..=2usize),
        pad in prop::array::uniform4(0..=2usize),
    ) -> (ConvAttrs, Vec<usize>, Vec<usize>) {
        let attrs = ConvAttrs { stride, pad, dilation, groups: channels };
        let extent = |axis: usize| {
            let span = dilation[axis] * (kernel[axis] - 1) + 1;
            span.saturating_sub(pad[2 * axis] + pad[2 * axis + 1]).max(1) + extra[axis]
        };
        let x = vec![n, channels, extent(0), extent(1)];
        let w = vec![channels * multiplier, 1, kernel[0], kernel[1]];
        (attrs, x, w)
    }
}

/// The forward op and both gradients of one convolution, on random tensors.
fn check_all_three(attrs: ConvAttrs, x: Vec<usize>, w: Vec<usize>, seed: u64) {
    assert!(is_depthwise(&attrs, &x, &w));
    let y = output_shape(&attrs, &x, &w);
    let (hw, kernel) = ([x[2], x[3]], [w[2], w[3]]);
    let x = random_tensor(x, seed, -1.0, 1.0);
    let w = random_tensor(w, seed ^ 1, -1.0, 1.0);
    let dy = random_tensor(y, seed ^ 2, -1.0, 1.0);
    check_op(OpKind::Conv2d(attrs), &[x.clone(), w.clone()], 1e-5);
    check_op(OpKind::Conv2dInputGrad(attrs, hw), &[dy.clone(), w], 1e-5);
    check_op(OpKind::Conv2dWeightGrad(attrs, kernel), &[x, dy], 1e-5);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn depthwise_prologues_match_the_interpreter(
        (attrs, x, w) in depthwise_case(), seed in any::<u64>()
    ) {
        check_prologues(attrs, x, w, seed);
    }

    #[test]
    fn depthwise_convolutions_match_the_interpreter(
        (attrs, x, w) in depthwise_case(), seed in any::<u64>()
    ) {
        check_all_three(attrs, x, w, seed);
    }

    #[test]
    fn depthwise_epilogues_match_the_interpreter(
        (attrs, x, w) in depthwise_case(), seed in any::<u64>()
    ) {
        check_epilogues(attrs, x, w, seed);
    }
}

fn mobilenet(stride: usize, channels: usize) -> ConvAttrs {
    ConvAttrs {
        stride: [stride; 2],
        pad: [1; 4],
        dilation: [1, 1],
        groups: channels,
    }
}

#[test]
fn mobilenet_layers_are_depthwise() {
    let x = [2, 32, 56, 56];
    assert!(is_depthwise(&mobilenet(1, 32), &x, &[32, 1, 3, 3]));
    assert!(is_depthwise(&mobilenet(2, 32), &x, &[32, 1, 3, 3]));
    // A multiplier of 2 is still one input channel per group; a pointwise conv is not.
    assert!(is_depthwise(&mobilenet(1, 32), &x, &[64, 1, 3, 3]));
    assert!(!is_depthwise(&mobilenet(1, 1), &x, &[64, 32, 1, 1]));
    // One input channel (mnist_cnn's first layer): a contraction, not a depthwise kernel.
    assert!(!is_depthwise(
        &mobilenet(1, 1),
        &[2, 1, 28, 28],
        &[32, 1, 5, 5]
    ));
}

/// Enough planes for one task per plane (no row blocks), as in a real network.
#[test]
fn mobilenet_shaped_layers_match_the_interpreter() {
    for stride in [1, 2] {
        let (attrs, x, w) = (
            mobilenet(stride, 40),
            vec![2, 40, 15, 15],
            vec![40, 1, 3, 3],
        );
        check_all_three(attrs, x.clone(), w.clone(), 5);
        check_prologues(attrs, x, w, 6);
    }
}

#[test]
fn a_single_pixel_through_a_padded_kernel() {
    let attrs = ConvAttrs {
        stride: [2, 3],
        pad: [2, 1, 0, 2],
        dilation: [2, 1],
        groups: 3,
    };
    check_all_three(attrs, vec![1, 3, 1, 1], vec![6, 1, 2, 3], 9);
}
