//! Generated softmax, losses and sources against the interpreter: softmax and its gradient on
//! `[N,K]` and `[N,C,H,W]` (lines contiguous or interleaved), the losses and their gradients on
//! random sizes, with large logits and predictions of exactly 0 or 1; and the sources, dropout
//! masks (which must be the interpreter's bit for bit) and `fill`.

use super::{check_op, config, random_tensor, single_op};
use netc::codegen::{compile, CodegenOptions};
use netc::interp::{EvalContext, Tensor};
use netc::ir::{OpKind, OutputRole};
use proptest::prelude::*;

/// Logits `[N,K]` and labels `[N]` holding class indices.
fn logits_and_labels() -> impl Strategy<Value = (Vec<usize>, Vec<f64>)> {
    (1usize..=40, 1usize..=40).prop_flat_map(|(n, k)| {
        let labels = prop::collection::vec((0..k).prop_map(|l| l as f64), n);
        (Just(vec![n, k]), labels)
    })
}

/// A shape of rank at most 4 with extents up to 20.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=20, 0..=4)
}

fn vector(data: Vec<f64>) -> Tensor {
    Tensor::new(vec![data.len()], data)
}

/// Predictions in (0, 1) with some exactly 0 or 1, where the logs are clamped.
fn predictions(shape: Vec<usize>, seed: u64) -> Tensor {
    let mut p = random_tensor(shape, seed, 0.01, 0.99);
    for (i, v) in p.data.iter_mut().enumerate() {
        match i % 7 {
            3 => *v = 0.0,
            5 => *v = 1.0,
            _ => {}
        }
    }
    p
}

fn dropout(rate: f64, stream: u64, shape: Vec<usize>, step: u64) {
    let kind = OpKind::DropoutMask {
        rate,
        stream,
        shape,
    };
    check_op(kind, &[Tensor::scalar(step as f64)], 1e-7);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn softmax_matches_the_interpreter(
        s in prop::collection::vec(1usize..=20, 2..=4),
        spread in prop_oneof![Just(3.0), Just(50.0)],
        seed in any::<u64>(),
    ) {
        check_op(OpKind::Softmax, &[random_tensor(s, seed, -spread, spread)], 1e-5);
    }

    #[test]
    fn softmax_grad_matches_the_interpreter(
        s in prop::collection::vec(1usize..=20, 2..=4),
        seed in any::<u64>(),
    ) {
        let y = random_tensor(s.clone(), seed, 0.0, 1.0);
        let dy = random_tensor(s, seed ^ 1, -1.0, 1.0);
        check_op(OpKind::SoftmaxGrad, &[y, dy], 1e-5);
    }

    #[test]
    fn softmax_cross_entropy_matches_the_interpreter(
        (s, labels) in logits_and_labels(),
        spread in prop_oneof![Just(3.0), Just(50.0)],
        seed in any::<u64>(),
    ) {
        let logits = random_tensor(s, seed, -spread, spread);
        check_op(OpKind::SoftmaxCrossEntropy, &[logits, vector(labels)], 1e-5);
    }

    #[test]
    fn softmax_cross_entropy_grad_matches_the_interpreter(
        (s, labels) in logits_and_labels(),
        dloss in -2.0..2.0f64,
        seed in any::<u64>(),
    ) {
        let logits = random_tensor(s, seed, -5.0, 5.0);
        let inputs = [logits, vector(labels), Tensor::scalar(dloss)];
        check_op(OpKind::SoftmaxCrossEntropyGrad, &inputs, 1e-5);
    }

    #[test]
    fn binary_cross_entropy_matches_the_interpreter(s in shape(), seed in any::<u64>()) {
        let t = random_tensor(s.clone(), seed ^ 1, 0.0, 1.0);
        check_op(OpKind::BinaryCrossEntropy, &[predictions(s, seed), t], 1e-5);
    }

    #[test]
    fn binary_cross_entropy_grad_matches_the_interpreter(
        s in shape(), dloss in -2.0..2.0f64, seed in any::<u64>()
    ) {
        let t = random_tensor(s.clone(), seed ^ 1, 0.0, 1.0);
        let inputs = [predictions(s, seed), t, Tensor::scalar(dloss)];
        check_op(OpKind::BinaryCrossEntropyGrad, &inputs, 1e-5);
    }

    #[test]
    fn dropout_masks_are_the_interpreters(
        rate in prop_oneof![Just(0.0), Just(1.0), 0.0..1.0f64],
        stream in any::<u64>(),
        s in prop::collection::vec(1usize..=40, 0..=3),
        step in 0u64..100_000,
    ) {
        dropout(rate, stream, s, step);
    }

    #[test]
    fn fill_matches_the_interpreter(value in -10.0..10.0f64, s in shape()) {
        let kind = OpKind::Fill { value, shape: s };
        check_op(kind, &[], 1e-7);
    }
}

#[test]
fn large_inputs_spread_over_tasks() {
    let images = random_tensor(vec![3, 7, 30, 31], 1, -5.0, 5.0);
    check_op(OpKind::Softmax, std::slice::from_ref(&images), 1e-5);
    let dy = random_tensor(vec![3, 7, 30, 31], 2, -1.0, 1.0);
    check_op(OpKind::SoftmaxGrad, &[images, dy], 1e-5);
    let logits = random_tensor(vec![300, 100], 3, -5.0, 5.0);
    let labels = vector((0..300).map(|n| (n * 37 % 100) as f64).collect());
    check_op(
        OpKind::SoftmaxCrossEntropy,
        &[logits.clone(), labels.clone()],
        1e-5,
    );
    let grad_inputs = [logits, labels, Tensor::scalar(0.5)];
    check_op(OpKind::SoftmaxCrossEntropyGrad, &grad_inputs, 1e-5);
    let p = predictions(vec![3, 5000], 4);
    let t = random_tensor(vec![3, 5000], 5, 0.0, 1.0);
    check_op(OpKind::BinaryCrossEntropy, &[p.clone(), t.clone()], 1e-5);
    check_op(
        OpKind::BinaryCrossEntropyGrad,
        &[p, t, Tensor::scalar(1.0)],
        1e-5,
    );
    dropout(0.3, 9, vec![100_003], 12);
}

#[test]
fn softmax_and_its_loss_are_stable_for_large_logits() {
    let logits = Tensor::new(
        vec![3, 5],
        vec![
            1000.0, 1000.0, 1000.0, -3.0, 0.0, 1000.0, 0.0, 0.0, 5.0, -1000.0, -1000.0, -1000.0,
            -1000.0, -990.0, -1000.0,
        ],
    );
    check_op(OpKind::Softmax, std::slice::from_ref(&logits), 1e-6);
    let labels = vector(vec![3.0, 0.0, 4.0]);
    check_op(OpKind::SoftmaxCrossEntropy, &[logits, labels], 1e-6);
}

/// Labels that are not class indices (the interpreter refuses them) make the loss NaN rather
/// than reading out of bounds.
#[test]
fn labels_out_of_range_give_nan() {
    for label in [3.0f32, -1.0, 1.5, f32::NAN, 1e30] {
        let graph = single_op(OpKind::SoftmaxCrossEntropy, &[vec![2, 3], vec![2]]);
        let mut program = compile(&graph, &CodegenOptions::default()).expect("compiles");
        program.input_mut("x0").expect("logits").fill(0.5);
        program
            .input_mut("x1")
            .expect("labels")
            .copy_from_slice(&[1.0, label]);
        program.run();
        let loss = program.output(OutputRole::Prediction, "y").expect("loss")[0];
        assert!(loss.is_nan(), "label {label}: loss {loss}");
    }
}

/// The program's seed keys the masks as the interpreter's does.
#[test]
fn dropout_masks_follow_the_programs_seed() {
    let kind = OpKind::DropoutMask {
        rate: 0.4,
        stream: 5,
        shape: vec![3, 333],
    };
    let graph = single_op(kind.clone(), &[vec![]]);
    for seed in [1, 42, u64::MAX] {
        let options = CodegenOptions {
            seed,
            ..CodegenOptions::default()
        };
        let mut program = compile(&graph, &options).expect("compiles");
        program.input_mut("x0").expect("the step")[0] = 17.0;
        program.run();
        let expected = kind.eval(&[&Tensor::scalar(17.0)], &EvalContext { seed });
        let got = program
            .output(OutputRole::Prediction, "y")
            .expect("the mask");
        for (i, (g, e)) in got.iter().zip(&expected.data).enumerate() {
            assert_eq!(*g, *e as f32, "seed {seed}, element {i}");
        }
    }
}
