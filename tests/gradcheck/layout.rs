//! Gradient checks of the `layout` primitives (see `gradcheck/mod.rs`), and their values on
//! hand-computed cases.

use super::elementwise::{broadcastable, shape};
use super::{assert_close, check_vjp, config, eval, random_tensor};
use netc::interp::Tensor;
use netc::ir::ops::OpKind;
use proptest::prelude::*;

/// A shape of rank 1 to 4 and an axis of it.
pub fn shape_and_axis(max_extent: usize) -> impl Strategy<Value = (Vec<usize>, usize)> {
    prop::collection::vec(1..=max_extent, 1..=4).prop_flat_map(|s| {
        let rank = s.len();
        (Just(s), 0..rank)
    })
}

/// 1, 2, 3, ... in row-major order: easy to sum by hand.
fn counting(shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product::<usize>();
    Tensor::new(shape, (1..=n).map(|v| v as f64).collect())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reshape_matches_central_differences(s in shape(4), how in 0..3, seed in any::<u64>()) {
        let target = match how {
            0 => s.iter().rev().copied().collect(),
            1 => vec![s.iter().product()],
            _ => [&[1], s.as_slice()].concat(),
        };
        check_vjp(OpKind::Reshape(target), vec![random_tensor(s, seed, -1.0, 1.0)], &[true], seed);
    }

    #[test]
    fn sum_to_matches_central_differences(
        (s, target) in shape(4).prop_flat_map(|s| (Just(s.clone()), broadcastable(s))),
        seed in any::<u64>(),
    ) {
        let x = random_tensor(s, seed, -1.0, 1.0);
        check_vjp(OpKind::SumTo(target), vec![x], &[true], seed);
    }

    #[test]
    fn squared_deviations_match_central_differences(
        (s, target) in shape(4).prop_flat_map(|s| (Just(s.clone()), broadcastable(s))),
        seed in any::<u64>(),
    ) {
        let x = random_tensor(s, seed, -1.0, 1.0);
        check_vjp(OpKind::SumSquaredDeviationsTo(target), vec![x], &[true], seed);
    }

    #[test]
    fn broadcast_matches_central_differences(
        (s, from) in shape(4).prop_flat_map(|s| (Just(s.clone()), broadcastable(s))),
        seed in any::<u64>(),
    ) {
        let x = random_tensor(from, seed, -1.0, 1.0);
        check_vjp(OpKind::Broadcast(s), vec![x], &[true], seed);
    }

    #[test]
    fn concat_matches_central_differences(
        (s, axis) in shape_and_axis(3),
        extents in prop::collection::vec(1usize..=3, 1..=3),
        seed in any::<u64>(),
    ) {
        let inputs = concat_inputs(&s, axis, &extents, seed);
        let differentiable = vec![true; inputs.len()];
        check_vjp(OpKind::Concat { axis }, inputs, &differentiable, seed);
    }

    #[test]
    fn slice_matches_central_differences(
        (s, axis, start, len) in shape_and_axis(4)
            .prop_flat_map(|(s, axis)| {
                let extent = s[axis];
                (Just(s), Just(axis), 0..extent)
            })
            .prop_flat_map(|(s, axis, start)| {
                let room = s[axis] - start;
                (Just(s), Just(axis), Just(start), 1..=room)
            }),
        seed in any::<u64>(),
    ) {
        let x = random_tensor(s, seed, -1.0, 1.0);
        check_vjp(OpKind::Slice { axis, start, len }, vec![x], &[true], seed);
    }
}

#[test]
fn sum_to_sums_the_broadcast_axes() {
    let m = counting(vec![2, 3]);
    assert_close(&eval(OpKind::SumTo(vec![3]), &[&m]), &[3], &[5.0, 7.0, 9.0]);
    assert_close(
        &eval(OpKind::SumTo(vec![2, 1]), &[&m]),
        &[2, 1],
        &[6.0, 15.0],
    );
    assert_close(&eval(OpKind::SumTo(vec![]), &[&m]), &[], &[21.0]);
    assert_close(
        &eval(OpKind::SumTo(vec![2, 3]), &[&m]),
        &[2, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    let cube = counting(vec![2, 2, 2]);
    let middle = eval(OpKind::SumTo(vec![2, 1, 2]), &[&cube]);
    assert_close(&middle, &[2, 1, 2], &[4.0, 6.0, 12.0, 14.0]);
    assert_close(
        &eval(OpKind::SumTo(vec![1, 2]), &[&cube]),
        &[1, 2],
        &[16.0, 20.0],
    );
}

#[test]
fn broadcast_repeats_along_axes_of_one() {
    let row = counting(vec![3]);
    let rows = eval(OpKind::Broadcast(vec![2, 3]), &[&row]);
    assert_close(&rows, &[2, 3], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    let column = counting(vec![2, 1]);
    let columns = eval(OpKind::Broadcast(vec![2, 3]), &[&column]);
    assert_close(&columns, &[2, 3], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    let filled = eval(OpKind::Broadcast(vec![2, 2]), &[&Tensor::scalar(7.0)]);
    assert_close(&filled, &[2, 2], &[7.0; 4]);
}

#[test]
fn concat_and_slice_are_inverse() {
    let a = counting(vec![2, 1]);
    let b = Tensor::new(vec![2, 2], vec![10.0, 20.0, 30.0, 40.0]);
    let joined = eval(OpKind::Concat { axis: 1 }, &[&a, &b]);
    assert_close(&joined, &[2, 3], &[1.0, 10.0, 20.0, 2.0, 30.0, 40.0]);
    let stacked = eval(OpKind::Concat { axis: 0 }, &[&b, &b]);
    assert_close(
        &stacked,
        &[4, 2],
        &[10.0, 20.0, 30.0, 40.0, 10.0, 20.0, 30.0, 40.0],
    );

    let slice = |start, len| {
        eval(
            OpKind::Slice {
                axis: 1,
                start,
                len,
            },
            &[&joined],
        )
    };
    assert_eq!(slice(0, 1), a);
    assert_eq!(slice(1, 2), b);
    assert_close(&slice(1, 1), &[2, 1], &[10.0, 30.0]);
}

/// Random tensors shaped like `s` but for their extents along `axis`: inputs of a concat.
pub fn concat_inputs(s: &[usize], axis: usize, extents: &[usize], seed: u64) -> Vec<Tensor> {
    extents
        .iter()
        .enumerate()
        .map(|(i, &extent)| {
            let mut s = s.to_vec();
            s[axis] = extent;
            random_tensor(s, seed ^ i as u64, -1.0, 1.0)
        })
        .collect()
}
