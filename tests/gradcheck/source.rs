//! Checks of the `source` primitives: dropout masks have no gradient, and are deterministic,
//! fresh per seed, stream and step, and drop the right fraction. The generator is pinned to
//! values computed independently from its documented definition, since generated code must
//! reproduce it bit for bit.

use super::check_vjp;
use netc::interp::{EvalContext, Tensor};
use netc::ir::ops::source::splitmix64;
use netc::ir::ops::OpKind;

fn mask(rate: f64, stream: u64, n: usize, step: u64, seed: u64) -> Tensor {
    let kind = OpKind::DropoutMask {
        rate,
        stream,
        shape: vec![n],
    };
    kind.eval(&[&Tensor::scalar(step as f64)], &EvalContext { seed })
}

fn dropped(mask: &Tensor) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask.data[i] == 0.0).collect()
}

#[test]
fn splitmix64_is_the_published_generator() {
    // The first two outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
    assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
}

#[test]
fn dropout_masks_follow_their_definition() {
    // From a separate implementation (Python) of the definition in `source.rs`.
    #[rustfmt::skip]
    let half = [1, 2, 3, 4, 6, 7, 8, 9, 10, 13, 15, 16, 18, 19, 20, 21, 22, 25, 27, 29, 30];
    assert_eq!(dropped(&mask(0.5, 3, 32, 7, 42)), half);
    let fifth = [3, 4, 7, 8, 9, 16, 18, 20, 21, 25, 30];
    assert_eq!(dropped(&mask(0.2, 3, 32, 7, 42)), fifth);
}

#[test]
fn dropout_masks_are_zero_or_scaled_in_the_right_proportion() {
    const N: usize = 100_000;
    for rate in [0.1, 0.5, 0.9] {
        let m = mask(rate, 0, N, 1, 0);
        let keep = 1.0 / (1.0 - rate);
        assert!(m.data.iter().all(|&v| v == 0.0 || v == keep));
        let fraction = dropped(&m).len() as f64 / N as f64;
        // The binomial's standard deviation is at most 0.0016 here.
        assert!(
            (fraction - rate).abs() < 0.01,
            "rate {rate}: dropped {fraction}"
        );
    }
    assert!(mask(0.0, 0, 1000, 1, 0).data.iter().all(|&v| v == 1.0));
    assert!(mask(1.0, 0, 1000, 1, 0).data.iter().all(|&v| v == 0.0));
}

#[test]
fn dropout_masks_are_deterministic_and_fresh_per_seed_stream_and_step() {
    let base = mask(0.5, 1, 1000, 2, 3);
    assert_eq!(mask(0.5, 1, 1000, 2, 3), base);
    // Independent masks agree on half of the elements; `stream ^ step` alone would not change.
    for other in [
        mask(0.5, 2, 1000, 1, 3),
        mask(0.5, 1, 1000, 3, 3),
        mask(0.5, 1, 1000, 2, 4),
    ] {
        let agree = (0..1000).filter(|&i| other.data[i] == base.data[i]).count();
        assert!((400..600).contains(&agree), "{agree} of 1000 agree");
    }
}

#[test]
fn dropout_masks_have_no_gradient() {
    let kind = OpKind::DropoutMask {
        rate: 0.5,
        stream: 0,
        shape: vec![2, 3],
    };
    check_vjp(kind, vec![Tensor::scalar(1.0)], &[false], 0);
}
