//! Gradient checks of the `loss` primitives (see `gradcheck/mod.rs`), and their values against
//! PyTorch's (`F.cross_entropy`, `F.binary_cross_entropy` in float64).

use super::elementwise::shape;
use super::{assert_close, check_vjp, config, eval, random_tensor};
use netc::interp::Tensor;
use netc::ir::ops::OpKind;
use proptest::prelude::*;

/// Logits `[N,K]` and labels `[N]` holding class indices.
fn logits_and_labels() -> impl Strategy<Value = (Vec<usize>, Vec<f64>)> {
    (1usize..=4, 1usize..=5).prop_flat_map(|(n, k)| {
        let labels = prop::collection::vec((0..k).prop_map(|l| l as f64), n);
        (Just(vec![n, k]), labels)
    })
}

fn vector(data: &[f64]) -> Tensor {
    Tensor::new(vec![data.len()], data.to_vec())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn softmax_cross_entropy_matches_central_differences(
        (s, labels) in logits_and_labels(),
        seed in any::<u64>(),
    ) {
        let inputs = vec![random_tensor(s, seed, -3.0, 3.0), vector(&labels)];
        check_vjp(OpKind::SoftmaxCrossEntropy, inputs, &[true, false], seed);
    }

    #[test]
    fn binary_cross_entropy_matches_central_differences(s in shape(4), seed in any::<u64>()) {
        let p = random_tensor(s.clone(), seed, 0.05, 0.95);
        let t = random_tensor(s, seed ^ 1, 0.0, 1.0);
        check_vjp(OpKind::BinaryCrossEntropy, vec![p, t], &[true, false], seed);
    }
}

#[test]
fn softmax_cross_entropy_matches_pytorch() {
    let logits = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 1.0, -1.0, 0.5]);
    let labels = vector(&[2.0, 1.0]);
    let loss = eval(OpKind::SoftmaxCrossEntropy, &[&logits, &labels]);
    assert_close(&loss, &[], &[1.4812814420431857]);
    let grad = eval(
        OpKind::SoftmaxCrossEntropyGrad,
        &[&logits, &labels, &Tensor::scalar(1.0)],
    );
    #[rustfmt::skip]
    let expected = [
        0.04501528658519022, 0.12236423552739882, -0.1673795221125891,
        0.2870484964838473, -0.4611522104257147, 0.1741037139418674,
    ];
    assert_close(&grad, &[2, 3], &expected);
}

#[test]
fn softmax_cross_entropy_is_stable_for_large_logits() {
    let logits = Tensor::new(vec![1, 2], vec![1000.0, 0.0]);
    let wrong = eval(OpKind::SoftmaxCrossEntropy, &[&logits, &vector(&[1.0])]);
    assert_close(&wrong, &[], &[1000.0]);
    let right = eval(OpKind::SoftmaxCrossEntropy, &[&logits, &vector(&[0.0])]);
    assert_close(&right, &[], &[0.0]);
}

#[test]
fn binary_cross_entropy_clamps_its_logs_as_pytorch_does() {
    let p = vector(&[0.2, 0.9, 0.0, 1.0, 0.5]);
    let t = vector(&[0.0, 1.0, 1.0, 1.0, 0.25]);
    let loss = eval(OpKind::BinaryCrossEntropy, &[&p, &t]);
    assert_close(&loss, &[], &[20.204330249506395]);

    // Confidently wrong costs 100 per element; confidently right costs nothing.
    let p = vector(&[0.0, 1.0, 0.0]);
    let t = vector(&[1.0, 0.0, 0.0]);
    let loss = eval(OpKind::BinaryCrossEntropy, &[&p, &t]);
    assert_close(&loss, &[], &[200.0 / 3.0]);
    // PyTorch gives ∓333333334665.27: its 1e-12 is a float constant, 1 - 4e-9 away from ours.
    let grad = eval(
        OpKind::BinaryCrossEntropyGrad,
        &[&p, &t, &Tensor::scalar(1.0)],
    );
    assert_close(&grad, &[3], &[-1e12 / 3.0, 1e12 / 3.0, 0.0]);
}

#[test]
fn binary_cross_entropy_gradient_matches_pytorch() {
    let p = vector(&[0.2, 0.9, 0.5]);
    let t = vector(&[0.0, 1.0, 0.25]);
    let grad = eval(
        OpKind::BinaryCrossEntropyGrad,
        &[&p, &t, &Tensor::scalar(2.0)],
    );
    assert_close(
        &grad,
        &[3],
        &[2.0 * 1.25 / 3.0, -2.0 * 10.0 / 27.0, 2.0 * 1.0 / 3.0],
    );
}
