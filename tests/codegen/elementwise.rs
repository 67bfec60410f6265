//! Generated elementwise code against the interpreter: every binary op with broadcasting and
//! every map function, on shapes long enough for the unrolled, vector and scalar parts of the
//! loops, and one long enough to be split into chunks across threads.

use super::{check_op, config, random_tensor};
use crate::gradcheck::elementwise::{away_from_zero, binary_op, map_fn};
use netc::interp::Tensor;
use netc::ir::ops::MapFn;
use netc::ir::OpKind;
use proptest::prelude::*;

/// A shape of rank at most 4 with extents up to 21, and one that broadcasts to it.
fn shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..=21, 0..=4).prop_flat_map(|shape| {
        let rank = shape.len();
        let to = shape.clone();
        (
            Just(shape),
            (0..=rank, prop::collection::vec(any::<bool>(), rank)).prop_map(
                move |(dropped, ones)| {
                    (dropped..rank)
                        .map(|i| if ones[i] { 1 } else { to[i] })
                        .collect()
                },
            ),
        )
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn binary_ops_broadcast_like_the_interpreter(
        kind in binary_op(), (a, b) in shapes(), swap in any::<bool>(), seed in any::<u64>()
    ) {
        let (a, b) = if swap { (b, a) } else { (a, b) };
        let x = away_from_zero(a, seed);
        let y = away_from_zero(b, seed ^ 1);
        check_op(kind, &[x, y], 1e-6);
    }

    #[test]
    fn map_functions_match_the_interpreter(f in map_fn(), (shape, _) in shapes(), seed in any::<u64>()) {
        check_op(OpKind::Map(f), &[away_from_zero(shape, seed)], 1e-5);
    }
}

#[test]
fn long_vectors_split_across_threads() {
    let x = random_tensor(vec![100_003], 7, -1.0, 1.0);
    let y = random_tensor(vec![100_003], 8, -1.0, 1.0);
    check_op(OpKind::Mul, &[x, y], 1e-6);
}

/// The maps whose generated code masks lanes by a comparison with zero (ReLU, the step of its
/// gradient, the sign), where the comparison could go either way: NaN (ReLU and the sign keep
/// it, the step is 0), both zeros, the smallest magnitudes; and `exp` past both ends of its range, where it
/// is masked too. 37 values, so that both the vector loop and the scalar tail see each of them.
#[test]
fn relu_step_and_sign_keep_nan_and_zeros_as_the_interpreter() {
    let values = |specials: &[f64]| {
        let data = specials.iter().copied().cycle().take(37).collect();
        [Tensor::new(vec![37], data)]
    };
    let zeros = [-0.0, 0.0, 1e-40, -1e-40, 1.0, -1.0, 3e38];
    let with_nan = [&[f64::NAN][..], &zeros].concat();
    for f in [MapFn::Relu, MapFn::Step, MapFn::Sign] {
        check_op(OpKind::Map(f), &values(&with_nan), 0.0);
    }
    let limits = [f64::NAN, -1e30, -100.0, -87.0, 0.0, 1.0, 80.0];
    check_op(OpKind::Map(MapFn::Exp), &values(&limits), 1e-6);
}
