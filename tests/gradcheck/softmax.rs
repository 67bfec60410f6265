//! Gradient checks of the `softmax` primitives (see `gradcheck/mod.rs`), and their values on
//! hand-computed cases.

use super::{assert_close, check_vjp, config, eval, random_tensor};
use netc::interp::Tensor;
use netc::ir::ops::OpKind;
use proptest::prelude::*;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn softmax_matches_central_differences(
        s in prop::collection::vec(1usize..=3, 2..=4),
        seed in any::<u64>(),
    ) {
        check_vjp(OpKind::Softmax, vec![random_tensor(s, seed, -3.0, 3.0)], &[true], seed);
    }

    #[test]
    fn softmax_lines_sum_to_one(
        s in prop::collection::vec(1usize..=4, 2..=4),
        seed in any::<u64>(),
    ) {
        let y = eval(OpKind::Softmax, &[&random_tensor(s.clone(), seed, -50.0, 50.0)]);
        let inner: usize = s[2..].iter().product();
        for n in 0..s[0] {
            for i in 0..inner {
                let sum: f64 = (0..s[1]).map(|c| y.data[(n * s[1] + c) * inner + i]).sum();
                prop_assert!((sum - 1.0).abs() < 1e-12, "sum {sum} at n {n}, position {i}");
            }
        }
    }
}

#[test]
fn softmax_is_stable_for_large_logits() {
    let third = 1.0 / 3.0;
    let logits = Tensor::new(
        vec![3, 3],
        vec![
            1000.0, 1000.0, 1000.0, 1000.0, 0.0, 0.0, -1000.0, -1000.0, -1000.0,
        ],
    );
    let y = eval(OpKind::Softmax, &[&logits]);
    assert_close(
        &y,
        &[3, 3],
        &[third, third, third, 1.0, 0.0, 0.0, third, third, third],
    );
}

#[test]
fn softmax_of_images_is_over_channels() {
    // [N=1, C=2, H=1, W=2]: channel 0 holds (0, 1), channel 1 holds (0, 3).
    let x = Tensor::new(vec![1, 2, 1, 2], vec![0.0, 1.0, 0.0, 3.0]);
    let low = 1.0 / (1.0 + 2f64.exp());
    let y = eval(OpKind::Softmax, &[&x]);
    assert_close(&y, &[1, 2, 1, 2], &[0.5, low, 0.5, 1.0 - low]);
}
