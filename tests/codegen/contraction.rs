//! Generated contractions (convolutions and matrix products through the microkernel) against
//! the interpreter: the convolution and both its gradients, on random strides, asymmetric
//! paddings, dilations, groups (one input channel per group included) and non-square kernels
//! (without stride too, where the input gradient has a route of its own),
//! with channel and spatial extents that leave partial tiles along every axis of the products
//! and, in the larger cases, several full tiles and several K blocks; and matrix products in
//! every transpose combination, from single elements to several tiles and K blocks; and the
//! convolution and its input gradient with the epilogues the fusion passes give them; and
//! convolutions and their weight gradients with a prologue computing x (from two tensors of
//! its shape).

use super::{check_op, config, random_tensor};
use netc::interp::Tensor;
use netc::ir::ops::conv::out_extent;
use netc::ir::ops::fused::{Arg, Chain, Step};
use netc::ir::ops::{ConvAttrs, MapFn};
use netc::ir::OpKind;
use proptest::prelude::*;

/// A convolution `(attrs, x shape, w shape)` of up to `channels` input and output channels per
/// group and an image just large enough for the dilated kernel (less the padding) plus up to
/// `extra` along each axis.
fn conv_case(
    channels: usize,
    extra: usize,
) -> impl Strategy<Value = (ConvAttrs, Vec<usize>, Vec<usize>)> {
    (
        1..=3usize,
        1..=3usize,
        1..=channels,
        1..=channels,
        prop::array::uniform2(0..=extra),
        prop::array::uniform2(1..=5usize),
        prop::array::uniform2(1..=3usize),
        prop::array::uniform2(1..=3usize),
        prop::array::uniform4(0..=2usize),
    )
        .prop_map(
            |(n, groups, in_per_group, out_per_group, extra, kernel, stride, dilation, pad)| {
                let attrs = ConvAttrs {
                    stride,
                    pad,
                    dilation,
                    groups,
                };
                let extent = |axis: usize| {
                    let span = dilation[axis] * (kernel[axis] - 1) + 1;
                    span.saturating_sub(pad[2 * axis] + pad[2 * axis + 1])
                        .max(1)
                        + extra[axis]
                };
                let x = vec![n, groups * in_per_group, extent(0), extent(1)];
                let w = vec![groups * out_per_group, in_per_group, kernel[0], kernel[1]];
                (attrs, x, w)
            },
        )
}

/// y's shape for x and w.
pub(super) fn output_shape(a: &ConvAttrs, x: &[usize], w: &[usize]) -> Vec<usize> {
    let extent = |axis: usize| {
        let pad = (a.pad[2 * axis], a.pad[2 * axis + 1]);
        out_extent(
            x[2 + axis],
            w[2 + axis],
            a.stride[axis],
            a.dilation[axis],
            pad,
        )
        .expect("the kernel fits")
    };
    vec![x[0], w[0], extent(0), extent(1)]
}

/// The forward op and both gradients of one convolution, on random tensors.
fn check_all_three(attrs: ConvAttrs, x: Vec<usize>, w: Vec<usize>, seed: u64) {
    let y = output_shape(&attrs, &x, &w);
    let (hw, kernel) = ([x[2], x[3]], [w[2], w[3]]);
    let x = random_tensor(x, seed, -1.0, 1.0);
    let w = random_tensor(w, seed ^ 1, -1.0, 1.0);
    let dy = random_tensor(y, seed ^ 2, -1.0, 1.0);
    check_op(OpKind::Conv2d(attrs), &[x.clone(), w.clone()], 1e-5);
    check_op(OpKind::Conv2dInputGrad(attrs, hw), &[dy.clone(), w], 1e-5);
    check_op(OpKind::Conv2dWeightGrad(attrs, kernel), &[x, dy], 1e-5);
}

/// The forward op and the input gradient each as the first step of a chain, as the fusion
/// passes make them for batch norm: the forward op's result with its per-channel sum and
/// squared deviations; the input gradient's plus a residual's gradient, masked by a ReLU's
/// gradient, times another tensor, with the sums of both (an epilogue that applied twice to an
/// element, as a write-out in place could, would add the residual's gradient twice).
pub(super) fn check_epilogues(attrs: ConvAttrs, x: Vec<usize>, w: Vec<usize>, seed: u64) {
    let y = output_shape(&attrs, &x, &w);
    let hw = [x[2], x[3]];
    let per_channel = |shape: &[usize]| vec![1, shape[1], 1, 1];
    let step = |kind: OpKind, args: &[Arg]| Step {
        kind,
        args: args.to_vec(),
    };
    let (t, input) = (Arg::Step, Arg::Input);
    let forward = Chain {
        steps: vec![
            step(OpKind::Conv2d(attrs), &[input(0), input(1)]),
            step(OpKind::SumTo(per_channel(&y)), &[t(0)]),
            step(OpKind::SumSquaredDeviationsTo(per_channel(&y)), &[t(0)]),
        ],
        results: vec![0, 1, 2],
    };
    let backward = Chain {
        steps: vec![
            step(OpKind::Conv2dInputGrad(attrs, hw), &[input(0), input(1)]),
            step(OpKind::Add, &[t(0), input(3)]),
            step(OpKind::Map(MapFn::Step), &[input(2)]),
            step(OpKind::Mul, &[t(1), t(2)]),
            step(OpKind::Mul, &[t(3), input(2)]),
            step(OpKind::SumTo(per_channel(&x)), &[t(3)]),
            step(OpKind::SumTo(per_channel(&x)), &[t(4)]),
        ],
        results: vec![3, 5, 6],
    };
    let residual = random_tensor(x.clone(), seed ^ 3, -1.0, 1.0);
    let xs = random_tensor(x, seed, -1.0, 1.0);
    let w = random_tensor(w, seed ^ 1, -1.0, 1.0);
    let dy = random_tensor(y, seed ^ 2, -1.0, 1.0);
    check_op(OpKind::Fused(forward), &[xs.clone(), w.clone()], 1e-5);
    check_op(OpKind::Fused(backward), &[dy, w, xs, residual], 1e-5);
}

/// The forward op with batch norm's statistics and the weight gradient, their x computed by a
/// prologue: `relu((z - mean) * scale + shift + r)` from z and r (a residual) and three
/// per-channel tensors. Where the kernels compute each element of x once, also the forward op
/// storing x as its last result (`store_prologue`), and the input gradient with its operand dy
/// so computed, stored and not. Returns how many of those three it checked.
pub(super) fn check_prologues(attrs: ConvAttrs, x: Vec<usize>, w: Vec<usize>, seed: u64) -> usize {
    let y = output_shape(&attrs, &x, &w);
    let kernel = [w[2], w[3]];
    let channel = vec![1, x[1], 1, 1];
    let (t, input) = (Arg::Step, Arg::Input);
    let step = |kind: OpKind, args: &[Arg]| Step {
        kind,
        args: args.to_vec(),
    };
    let prologue = [
        step(OpKind::Sub, &[input(0), input(1)]),
        step(OpKind::Mul, &[t(0), input(2)]),
        step(OpKind::Add, &[t(1), input(3)]),
        step(OpKind::Add, &[t(2), input(4)]),
        step(OpKind::Map(MapFn::Relu), &[t(3)]),
    ];
    let per_output = vec![1, y[1], 1, 1];
    let with = |rest: Vec<Step>, results: Vec<usize>| Chain {
        steps: prologue.iter().cloned().chain(rest).collect(),
        results,
    };
    let forward = |results| {
        with(
            vec![
                step(OpKind::Conv2d(attrs), &[t(4), input(5)]),
                step(OpKind::SumTo(per_output.clone()), &[t(5)]),
                step(OpKind::SumSquaredDeviationsTo(per_output.clone()), &[t(5)]),
            ],
            results,
        )
    };
    let input_grad = |results| {
        with(
            vec![
                step(
                    OpKind::Conv2dInputGrad(attrs, [x[2], x[3]]),
                    &[t(4), input(5)],
                ),
                step(OpKind::SumTo(channel.clone()), &[t(5)]),
            ],
            results,
        )
    };
    let weight_grad = with(
        vec![step(
            OpKind::Conv2dWeightGrad(attrs, kernel),
            &[t(4), input(5)],
        )],
        Vec::new(),
    );
    // The prologue's inputs for an operand of `shape`, `salt` apart from others.
    let prologue_inputs = |shape: &[usize], salt: u64| {
        let per_channel = vec![1, shape[1], 1, 1];
        let whole = |k: u64| random_tensor(shape.to_vec(), seed ^ salt ^ k, -1.0, 1.0);
        let channel = |k: u64| random_tensor(per_channel.clone(), seed ^ salt ^ k, -1.0, 1.0);
        vec![whole(0), channel(3), channel(4), channel(5), whole(6)]
    };
    let with_last = |mut inputs: Vec<Tensor>, last: &Tensor| {
        inputs.push(last.clone());
        inputs
    };
    let w = random_tensor(w, seed ^ 1, -1.0, 1.0);
    let dy = random_tensor(y.clone(), seed ^ 2, -1.0, 1.0);
    let of_x = prologue_inputs(&x, 0);
    check_op(
        OpKind::Fused(forward(vec![5, 6, 7])),
        &with_last(of_x.clone(), &w),
        1e-5,
    );
    check_op(
        OpKind::Fused(weight_grad),
        &with_last(of_x.clone(), &dy),
        1e-5,
    );
    let of_dy = prologue_inputs(&y, 7 << 8);
    let optional = [
        (forward(vec![5, 6, 7, 4]), with_last(of_x, &w)),
        (input_grad(vec![5, 6]), with_last(of_dy.clone(), &w)),
        (input_grad(vec![5, 6, 4]), with_last(of_dy, &w)),
    ];
    let mut checked = 0;
    for (chain, inputs) in optional {
        let shapes: Vec<&Vec<usize>> = inputs.iter().map(|t| &t.shape).collect();
        if OpKind::Fused(chain.clone()).shape(&shapes).is_ok() {
            check_op(OpKind::Fused(chain), &inputs, 1e-5);
            checked += 1;
        }
    }
    checked
}

/// A 1x1 convolution without stride or padding, of up to 40 channels per group on planes of up
/// to 20x20.
fn pointwise_case() -> impl Strategy<Value = (ConvAttrs, Vec<usize>, Vec<usize>)> {
    let side = prop::array::uniform2(1..=20usize);
    (conv_case(40, 0), side).prop_map(|((attrs, x, w), side)| {
        let attrs = ConvAttrs {
            stride: [1, 1],
            pad: [0; 4],
            ..attrs
        };
        (
            attrs,
            vec![x[0], x[1], side[0], side[1]],
            vec![w[0], w[1], 1, 1],
        )
    })
}

/// A matrix product `(transpose_a, transpose_b, a shape, b shape)` of `m x k` by `k x n`.
fn matmul_case(
    m: impl Strategy<Value = usize>,
    k: impl Strategy<Value = usize>,
    n: impl Strategy<Value = usize>,
) -> impl Strategy<Value = (bool, bool, Vec<usize>, Vec<usize>)> {
    (m, k, n, any::<bool>(), any::<bool>()).prop_map(|(m, k, n, ta, tb)| {
        let a = if ta { vec![k, m] } else { vec![m, k] };
        let b = if tb { vec![n, k] } else { vec![k, n] };
        (ta, tb, a, b)
    })
}

fn check_matmul(transpose_a: bool, transpose_b: bool, a: Vec<usize>, b: Vec<usize>, seed: u64) {
    let kind = OpKind::MatMul {
        transpose_a,
        transpose_b,
    };
    let a = random_tensor(a, seed, -1.0, 1.0);
    let b = random_tensor(b, seed ^ 1, -1.0, 1.0);
    check_op(kind, &[a, b], 1e-5);
}

/// Fewer cases for the larger shapes, which take longer in the interpreter.
fn large_config() -> ProptestConfig {
    let base = config();
    ProptestConfig {
        cases: base.cases.div_ceil(6),
        ..base
    }
}

proptest! {
    #![proptest_config(config())]

    /// Up to 8 channels per group (K blocks, M panels partial) and images up to about 12 wide
    /// beyond the kernel (several N panels of positions, the last partial).
    #[test]
    fn convolutions_match_the_interpreter((attrs, x, w) in conv_case(8, 12), seed in any::<u64>()) {
        check_all_three(attrs, x, w, seed);
    }

    /// The same convolutions with the epilogues batch norm gives them.
    #[test]
    fn convolution_epilogues_match_the_interpreter(
        (attrs, x, w) in conv_case(8, 12),
        seed in any::<u64>()
    ) {
        check_epilogues(attrs, x, w, seed);
    }

    /// One input channel per group, as in depthwise layers, which the GEMM path must also get
    /// right (whichever path the compiler takes).
    #[test]
    fn one_channel_per_group_matches_the_interpreter(
        (attrs, x, w) in conv_case(1, 8),
        groups in 1..=6usize,
        multiplier in 1..=3usize,
        seed in any::<u64>()
    ) {
        let attrs = ConvAttrs { groups, ..attrs };
        let x = vec![x[0], groups, x[2], x[3]];
        let w = vec![groups * multiplier, 1, w[2], w[3]];
        check_all_three(attrs, x, w, seed);
    }

    /// 1x1 kernels without stride or padding, whose im2col matrix is x itself.
    #[test]
    fn pointwise_convolutions_match_the_interpreter(
        (attrs, x, w) in pointwise_case(), seed in any::<u64>()
    ) {
        check_all_three(attrs, x, w, seed);
    }

    /// The same, with x computed by the prologue `fuse_prologue` gives them (batch norm's apply
    /// and ReLU), in the forward op's packing and the weight gradient's.
    #[test]
    fn pointwise_prologues_match_the_interpreter(
        (attrs, x, w) in pointwise_case(), seed in any::<u64>()
    ) {
        check_prologues(attrs, x, w, seed);
    }

    /// Convolutions of every kind with x computed by a prologue (batch norm's apply and ReLU
    /// with a residual), in whichever copy or packing of x their kernels make.
    #[test]
    fn convolution_prologues_match_the_interpreter(
        (attrs, x, w) in conv_case(8, 12),
        seed in any::<u64>()
    ) {
        check_prologues(attrs, x, w, seed);
    }

    /// Without stride, where the input gradient may be the convolution of dy by the flipped
    /// weights (with no more output than input channels, and padding the kernel reaches) or
    /// else the product scattered back: both, with asymmetric paddings and dilations.
    #[test]
    fn unstrided_convolutions_match_the_interpreter(
        (attrs, x, w) in conv_case(12, 8),
        seed in any::<u64>()
    ) {
        check_all_three(ConvAttrs { stride: [1, 1], ..attrs }, x, w, seed);
    }

    #[test]
    fn matmuls_match_the_interpreter(
        (ta, tb, a, b) in matmul_case(1..=100usize, 1..=100usize, 1..=100usize),
        seed in any::<u64>()
    ) {
        check_matmul(ta, tb, a, b, seed);
    }
}

proptest! {
    #![proptest_config(large_config())]

    /// Enough channels for im2col depths beyond one K block (`Kc > 256`) and several full M
    /// panels, and images of more than 256 positions (several K blocks of the weight gradient).
    #[test]
    fn large_convolutions_match_the_interpreter(
        (attrs, x, w) in conv_case(24, 20), seed in any::<u64>()
    ) {
        check_all_three(attrs, x, w, seed);
    }

    /// Depths of several K blocks, and several tiles each way.
    #[test]
    fn large_matmuls_match_the_interpreter(
        (ta, tb, a, b) in matmul_case(1..=200usize, 200..=700usize, 1..=300usize),
        seed in any::<u64>()
    ) {
        check_matmul(ta, tb, a, b, seed);
    }
}

/// A 1x1 convolution (im2col is the image itself) and a strided 3x3 one on shapes from a
/// residual network, with several full tiles each way.
#[test]
fn residual_network_shapes() {
    let plain = ConvAttrs {
        stride: [1, 1],
        pad: [0; 4],
        dilation: [1, 1],
        groups: 1,
    };
    let strided = ConvAttrs {
        stride: [2, 2],
        pad: [1; 4],
        ..plain
    };
    check_all_three(plain, vec![2, 16, 14, 14], vec![40, 16, 1, 1], 3);
    check_all_three(strided, vec![1, 32, 15, 15], vec![20, 32, 3, 3], 4);
    check_prologues(strided, vec![1, 32, 15, 15], vec![20, 32, 3, 3], 4);
}

/// Images of at most `NR` positions whose taps all land inside them, packed whole into a panel
/// (two to a panel in the first case, mnist_cnn's conv2), one output row after another; with x
/// computed by a prologue too.
#[test]
fn small_image_shapes() {
    let plain = ConvAttrs {
        stride: [1, 1],
        pad: [0; 4],
        dilation: [1, 1],
        groups: 1,
    };
    let rows_strided = ConvAttrs {
        stride: [2, 1],
        ..plain
    };
    check_all_three(plain, vec![3, 32, 8, 8], vec![64, 32, 5, 5], 5);
    check_all_three(plain, vec![2, 3, 6, 9], vec![5, 3, 3, 3], 6);
    check_all_three(rows_strided, vec![3, 4, 9, 7], vec![7, 4, 3, 2], 7);
    check_prologues(plain, vec![3, 32, 8, 8], vec![64, 32, 5, 5], 5);
    check_prologues(rows_strided, vec![3, 4, 9, 7], vec![7, 4, 3, 2], 7);
}

/// A convolution that computes its x by a prologue and stores it (`store_prologue`), x copied
/// with its padding by a kernel of its own (few images: the product's tiles split each one),
/// staged whole by one task per image (enough images), and dealt into the phases of a stride
/// of 2 (the forward op only: that input gradient packs dy), rows of 9 and 14 columns; and the
/// input gradient computing dy so, where it is the flipped weights' convolution of dy.
#[test]
fn stored_prologues_match_the_interpreter() {
    let same = ConvAttrs {
        stride: [1, 1],
        pad: [1; 4],
        dilation: [1, 1],
        groups: 1,
    };
    let strided = ConvAttrs {
        stride: [2, 2],
        ..same
    };
    assert_eq!(
        check_prologues(same, vec![2, 8, 6, 6], vec![8, 8, 3, 3], 11),
        3
    );
    assert_eq!(
        check_prologues(same, vec![16, 8, 12, 12], vec![8, 8, 3, 3], 12),
        3
    );
    assert_eq!(
        check_prologues(strided, vec![2, 8, 9, 9], vec![8, 8, 3, 3], 13),
        1
    );
    // Rows of 14 are dealt eight, four and two columns at a time.
    assert_eq!(
        check_prologues(strided, vec![2, 8, 14, 14], vec![8, 8, 3, 3], 14),
        1
    );
}
