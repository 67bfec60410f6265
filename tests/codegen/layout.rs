//! Generated layout code against the interpreter: `sum_to` on random shapes and targets, and on
//! the two bias-gradient shapes it has kernels for, large enough for their unrolled vector
//! loops, tails and several tasks; broadcast, concatenation and slicing on random shapes and
//! axes. (`fill`, a source, is checked with dropout masks in `softmax_loss.rs`.)

use super::{check_op, config, random_tensor};
use crate::gradcheck::elementwise::broadcastable;
use crate::gradcheck::layout::{concat_inputs, shape_and_axis};
use netc::ir::OpKind;
use proptest::prelude::*;

/// A shape of rank at most 4 with extents up to 20, and one that broadcasts to it.
fn shape_and_broadcastable() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..=20, 0..=4).prop_flat_map(|s| (Just(s.clone()), broadcastable(s)))
}

/// A shape, an axis of it, and a slice `start, len` along that axis.
fn slice_of() -> impl Strategy<Value = (Vec<usize>, usize, usize, usize)> {
    shape_and_axis(24)
        .prop_flat_map(|(s, axis)| {
            let extent = s[axis];
            (Just(s), Just(axis), 0..extent)
        })
        .prop_flat_map(|(s, axis, start)| {
            let room = s[axis] - start;
            (Just(s), Just(axis), Just(start), 1..=room)
        })
}

/// Checks `sum_to` on a tensor of `shape` with values in [-0.5, 1): biased away from zero, so
/// that sums of many terms do not cancel to a result smaller than their f32 rounding error.
fn sum_to(shape: Vec<usize>, seed: u64, target: Vec<usize>) {
    let x = random_tensor(shape, seed, -0.5, 1.0);
    check_op(OpKind::SumTo(target), &[x], 1e-5);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sum_to_matches_the_interpreter((s, target) in shape_and_broadcastable(), seed in any::<u64>()) {
        sum_to(s, seed, target);
    }

    #[test]
    fn squared_deviations_match_the_interpreter(
        (s, target) in shape_and_broadcastable(),
        seed in any::<u64>(),
    ) {
        // Values far from zero: the deviations are small beside them.
        let x = random_tensor(s, seed, 9.0, 11.0);
        check_op(OpKind::SumSquaredDeviationsTo(target), &[x], 1e-5);
    }

    #[test]
    fn convolution_bias_gradients_match(
        n in 1usize..=4, c in 1usize..=12, h in 1usize..=13, w in 1usize..=13, seed in any::<u64>()
    ) {
        sum_to(vec![n, c, h, w], seed, vec![1, c, 1, 1]);
    }

    #[test]
    fn dense_bias_gradients_match(n in 1usize..=9, f in 1usize..=300, seed in any::<u64>()) {
        sum_to(vec![n, f], seed, vec![f]);
    }

    #[test]
    fn broadcast_matches_the_interpreter((s, from) in shape_and_broadcastable(), seed in any::<u64>()) {
        check_op(OpKind::Broadcast(s), &[random_tensor(from, seed, -1.0, 1.0)], 1e-7);
    }

    #[test]
    fn concat_matches_the_interpreter(
        (s, axis) in shape_and_axis(12),
        extents in prop::collection::vec(1usize..=12, 1..=4),
        seed in any::<u64>(),
    ) {
        let inputs = concat_inputs(&s, axis, &extents, seed);
        check_op(OpKind::Concat { axis }, &inputs, 1e-7);
    }

    #[test]
    fn slice_matches_the_interpreter((s, axis, start, len) in slice_of(), seed in any::<u64>()) {
        let x = random_tensor(s, seed, -1.0, 1.0);
        check_op(OpKind::Slice { axis, start, len }, &[x], 1e-7);
    }
}

#[test]
fn large_bias_gradients_spread_over_tasks() {
    sum_to(vec![8, 16, 30, 30], 1, vec![1, 16, 1, 1]);
    sum_to(vec![256, 1000], 2, vec![1000]);
    sum_to(vec![300, 301], 3, vec![300, 1]);
    sum_to(vec![100_003], 4, vec![]);
}

#[test]
fn large_copies_spread_over_tasks() {
    let x = random_tensor(vec![4, 24, 40, 40], 5, -1.0, 1.0);
    check_op(OpKind::Concat { axis: 1 }, &[x.clone(), x.clone()], 1e-7);
    let slice = OpKind::Slice {
        axis: 1,
        start: 5,
        len: 13,
    };
    check_op(slice, &[x], 1e-7);
}
