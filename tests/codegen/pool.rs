//! Generated pooling and channel-window code against the interpreter: max and average pooling
//! and their gradients on random windows, strides, paddings and rounding modes, on images wide
//! enough for runs of sliding windows to reach the unrolled f32x4 loops and their scalar tails,
//! with values on a coarse grid so that windows often hold equal maxima, and NaNs; the pools of
//! the zoo's networks, windows too large to unroll, and the channel window sum at every window
//! size; max pooling that stores where its maxima are, and a convolution's weight gradient taken
//! at such indices, on random convolutions and indices.

use super::{check_op, config, random_tensor};
use crate::gradcheck::pool::pool_case;
use netc::interp::Tensor;
use netc::ir::ops::{ConvAttrs, PoolAttrs};
use netc::ir::OpKind;
use proptest::prelude::*;

/// `pool_case`'s windows on an image up to 6 rows taller and 24 columns wider.
fn wide_pool_case() -> impl Strategy<Value = (PoolAttrs, Vec<usize>)> {
    (pool_case(), 0..=6usize, 0..=24usize).prop_map(|((attrs, mut x), rows, columns)| {
        x[2] += rows;
        x[3] += columns;
        (attrs, x)
    })
}

/// What values a test tensor holds.
#[derive(Clone, Copy, Debug)]
enum Grid {
    /// Random values in [-1, 1), rounded to f32 so that both sides see the same numbers.
    Fine,
    /// Those on a grid of quarters, where windows often hold equal maxima.
    Quarters,
    /// Quarters, an eighth of them NaN: a NaN is the maximum of a window it leads, and loses to
    /// any number elsewhere.
    QuartersAndNaN,
}

fn any_grid() -> impl Strategy<Value = Grid> {
    prop_oneof![
        Just(Grid::Fine),
        Just(Grid::Quarters),
        Just(Grid::QuartersAndNaN)
    ]
}

fn values(shape: Vec<usize>, seed: u64, grid: Grid) -> Tensor {
    let mut t = random_tensor(shape, seed, -1.0, 1.0);
    for v in &mut t.data {
        let quarter = (*v * 4.0).floor() / 4.0;
        *v = match grid {
            Grid::Fine => f64::from(*v as f32),
            Grid::Quarters => quarter,
            Grid::QuartersAndNaN if (*v * 16.0).floor().rem_euclid(8.0) == 0.0 => f64::NAN,
            Grid::QuartersAndNaN => quarter,
        };
    }
    t
}

/// The pooled shape of `x` under `attrs`.
fn pooled(attrs: PoolAttrs, x: &[usize]) -> Vec<usize> {
    OpKind::MaxPool(attrs)
        .shape(&[&x.to_vec()])
        .expect("the window fits")
}

/// Every pooling op on `x` with these attributes: the forward ops on `x`, the backward ops on
/// a random output gradient.
fn check_pools(attrs: PoolAttrs, x: &Tensor, seed: u64) {
    let dy = values(pooled(attrs, &x.shape), seed ^ 1, Grid::Fine);
    check_op(OpKind::MaxPool(attrs), std::slice::from_ref(x), 1e-6);
    check_op(
        OpKind::MaxPoolWithIndices(attrs),
        std::slice::from_ref(x),
        1e-6,
    );
    check_op(OpKind::AvgPool(attrs), std::slice::from_ref(x), 1e-5);
    check_op(OpKind::MaxPoolGrad(attrs), &[x.clone(), dy.clone()], 1e-5);
    let hw = [x.shape[2], x.shape[3]];
    check_op(OpKind::AvgPoolGrad(attrs, hw), &[dy], 1e-5);
}

fn square(kernel: usize, stride: usize, pad: usize, ceil: bool) -> PoolAttrs {
    PoolAttrs {
        kernel: [kernel; 2],
        stride: [stride; 2],
        pad: [pad; 4],
        ceil,
        include_pad: true,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn maxpool_matches_the_interpreter(
        (attrs, x) in wide_pool_case(),
        seed in any::<u64>(),
        grid in any_grid(),
    ) {
        check_op(OpKind::MaxPool(attrs), &[values(x, seed, grid)], 1e-6);
    }

    /// On the grid of quarters the index must be the first of equal maxima's.
    #[test]
    fn maxpool_with_indices_matches_the_interpreter(
        (attrs, x) in wide_pool_case(),
        seed in any::<u64>(),
        grid in any_grid(),
    ) {
        check_op(OpKind::MaxPoolWithIndices(attrs), &[values(x, seed, grid)], 1e-6);
    }

    #[test]
    fn avgpool_matches_the_interpreter((attrs, x) in wide_pool_case(), seed in any::<u64>()) {
        check_op(OpKind::AvgPool(attrs), &[values(x, seed, Grid::Fine)], 1e-5);
    }

    /// On the grid of quarters the gradient must go to the same one of equal maxima.
    #[test]
    fn maxpool_grad_matches_the_interpreter(
        (attrs, x) in wide_pool_case(), seed in any::<u64>(), grid in any_grid()
    ) {
        let dy = values(pooled(attrs, &x), seed ^ 1, Grid::Fine);
        check_op(OpKind::MaxPoolGrad(attrs), &[values(x, seed, grid), dy], 1e-5);
    }

    #[test]
    fn avgpool_grad_matches_the_interpreter((attrs, x) in wide_pool_case(), seed in any::<u64>()) {
        let dy = values(pooled(attrs, &x), seed, Grid::Fine);
        check_op(OpKind::AvgPoolGrad(attrs, [x[2], x[3]]), &[dy], 1e-5);
    }

    /// Any unpadded convolution (strides, dilations, groups, kernels wider than a vector), its
    /// pooled gradient placed at random indices into the convolution's output planes: some the
    /// same, some -1 (a window with no cell).
    #[test]
    fn pooled_conv2d_weight_grad_matches_the_interpreter(
        (n, groups, group_in, group_out) in (1..=3usize, 1..=2usize, 1..=3usize, 1..=3usize),
        kernel in [1..=6usize, 1..=6usize],
        stride in [1..=2usize, 1..=2usize],
        dilation in [1..=2usize, 1..=2usize],
        extra in [0..=8usize, 0..=12usize],
        pooled in [1..=4usize, 1..=4usize],
        seed in any::<u64>(),
    ) {
        let conv = ConvAttrs { stride, pad: [0; 4], dilation, groups };
        let span = |k: usize| (kernel[k] - 1) * dilation[k] + 1 + extra[k];
        let x = vec![n, groups * group_in, span(0), span(1)];
        let w = vec![groups * group_out, group_in, kernel[0], kernel[1]];
        let p = OpKind::Conv2d(conv).shape(&[&x, &w]).expect("an unpadded kernel fits");
        let dy = vec![n, p[1], pooled[0], pooled[1]];
        let plane = (p[2] * p[3]) as f64;
        let mut indices = random_tensor(dy.clone(), seed ^ 1, -1.0, plane);
        for index in &mut indices.data {
            *index = index.floor();
        }
        let kind = OpKind::PooledConv2dWeightGrad { conv, kernel };
        let inputs = [
            values(x, seed, Grid::Fine),
            indices,
            values(dy, seed ^ 2, Grid::Fine),
        ];
        check_op(kind, &inputs, 1e-5);
    }

    #[test]
    fn channel_window_sum_matches_the_interpreter(
        n in 1..=2usize,
        c in 1..=12usize,
        h in 1..=6usize,
        w in 1..=11usize,
        half in 0..=4usize,
        seed in any::<u64>(),
    ) {
        let x = values(vec![n, c, h, w], seed, Grid::Fine);
        check_op(OpKind::ChannelWindowSum { size: 2 * half + 1 }, &[x], 1e-5);
    }
}

/// The zoo's pools: GoogLeNet's 3x3/1 "same" and 3x3/2 ceil-mode pools, ResNet's 3x3/2 with
/// padding, VGG's 2x2/2 and global average pooling, on ReLU-like inputs (many zeros, so many
/// equal maxima) and on plain ones.
#[test]
fn zoo_pools_match_the_interpreter() {
    let cases = [
        (square(3, 1, 1, false), [2, 3, 14, 14]),
        (square(3, 1, 1, false), [1, 2, 7, 7]),
        (square(3, 2, 0, true), [2, 2, 15, 15]),
        (square(3, 2, 0, true), [1, 2, 14, 14]),
        (square(3, 2, 1, false), [2, 2, 16, 16]),
        (square(2, 2, 0, false), [2, 3, 8, 8]),
        (square(7, 1, 0, false), [2, 3, 7, 7]),
        (square(8, 1, 0, false), [1, 2, 8, 8]),
    ];
    for (seed, (attrs, shape)) in cases.into_iter().enumerate() {
        let seed = seed as u64;
        let x = values(shape.to_vec(), seed, Grid::Fine);
        check_pools(attrs, &x, seed);
        let mut relu = x;
        for v in &mut relu.data {
            *v = v.max(0.0);
        }
        check_pools(attrs, &relu, seed);
    }
}

/// Windows beyond what is unrolled: a global pool of 20x20, a 9x9 window sliding by one, and
/// windows of more columns than unroll, with and without padding.
#[test]
fn large_windows_match_the_interpreter() {
    let cases = [
        (square(20, 1, 0, false), vec![1, 2, 20, 20]),
        (square(9, 1, 4, false), vec![1, 2, 12, 30]),
        (
            PoolAttrs {
                kernel: [2, 70],
                stride: [1, 3],
                pad: [1, 0, 2, 1],
                ceil: true,
                include_pad: false,
            },
            vec![1, 2, 3, 80],
        ),
    ];
    for (seed, (attrs, shape)) in cases.into_iter().enumerate() {
        check_pools(
            attrs,
            &values(shape, seed as u64, Grid::Quarters),
            seed as u64,
        );
    }
}

/// Local response normalization's window of 5 over more channels than it spans, on planes
/// with vector bodies and scalar tails, and a window too wide to unroll.
#[test]
fn lrn_window_matches_the_interpreter() {
    let x = values(vec![2, 16, 13, 13], 3, Grid::Fine);
    check_op(OpKind::ChannelWindowSum { size: 5 }, &[x], 1e-5);
    let x = values(vec![1, 40, 3, 5], 4, Grid::Fine);
    check_op(OpKind::ChannelWindowSum { size: 35 }, &[x], 1e-5);
}
