//! Finite-difference checks of every primitive's backward rule, on random shapes and random
//! attributes. For an op `y = f(x1, ..., xk)` and a random cotangent `r`, the VJP must give the
//! gradient of `sum(r * f(x))` with respect to each differentiable input, which central
//! differences estimate in f64.

pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod pool;
pub mod softmax;
pub mod source;
pub mod window;

use netc::interp::{run, EvalContext, Tensor};
use netc::ir::{Graph, InputKind, OpKind, OutputRole};
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use std::collections::HashMap;

/// Few cases by default, so the checks run in seconds in debug builds; `PROPTEST_CASES` asks
/// for more. The cases are drawn from a fixed seed, so every run checks the same ones.
/// Failures print their inputs, so nothing needs persisting.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48);
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x6e65_7463),
        ..ProptestConfig::default()
    }
}

pub fn eval(kind: OpKind, inputs: &[&Tensor]) -> Tensor {
    kind.eval(inputs, &EvalContext::default())
}

/// Asserts `got` has this shape and these values, up to rounding.
#[track_caller]
pub fn assert_close(got: &Tensor, shape: &[usize], expected: &[f64]) {
    assert_eq!(got.shape, shape);
    assert_eq!(got.data.len(), expected.len());
    for (i, (g, e)) in got.data.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= 1e-12 * e.abs().max(1.0),
            "element {i}: got {g}, expected {e} (all: {:?})",
            got.data
        );
    }
}

/// Deterministic values in [lo, hi) from a seed (splitmix64), so failures reproduce.
pub fn random_tensor(shape: Vec<usize>, seed: u64, lo: f64, hi: f64) -> Tensor {
    let mut state = seed;
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            lo + (hi - lo) * (z >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    Tensor::new(shape, data)
}

fn weighted_sum(kind: &OpKind, inputs: &[Tensor], cotangent: &Tensor) -> f64 {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let y = kind.eval(&refs, &EvalContext::default());
    y.data.iter().zip(&cotangent.data).map(|(a, b)| a * b).sum()
}

/// Checks the VJP of `kind` at `inputs` against central differences, for the inputs marked
/// differentiable (others must get no gradient), at about 48 elements of each input spread over
/// it. Panics at the first mismatch.
pub fn check_vjp(kind: OpKind, inputs: Vec<Tensor>, differentiable: &[bool], seed: u64) {
    const STEP: f64 = 1e-6;
    const MAX_ELEMENTS: usize = 48;
    let mut graph = Graph::new("gradcheck");
    let ids: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| graph.input(InputKind::Data, format!("x{i}"), t.shape.clone()))
        .collect();
    let y = graph.op(kind.clone(), &ids, None);
    let cotangent = random_tensor(graph.shape(y).clone(), seed ^ 0xc0ffee, -1.0, 1.0);
    let r = graph.input(InputKind::Data, "r", cotangent.shape.clone());
    let op = graph.ops.last().expect("the op").clone();
    let grads = kind.vjp(&op, &mut graph, r);
    assert_eq!(
        grads.len(),
        inputs.len(),
        "{}: one gradient per input",
        kind.name()
    );
    for (i, g) in grads.iter().enumerate() {
        assert_eq!(
            g.is_some(),
            differentiable[i],
            "{}: input {i} {} a gradient",
            kind.name(),
            if differentiable[i] {
                "should have"
            } else {
                "should not have"
            }
        );
        if let Some(g) = g {
            graph.output(OutputRole::Gradient, format!("x{i}"), *g);
        }
    }
    let mut feed: HashMap<String, Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("x{i}"), t.clone()))
        .collect();
    feed.insert("r".into(), cotangent.clone());
    let result = run(&graph, &feed, &EvalContext::default()).expect("inputs fit");
    for (i, input) in inputs.iter().enumerate() {
        if !differentiable[i] {
            continue;
        }
        let analytic = result.output(&graph, OutputRole::Gradient, &format!("x{i}"));
        assert_eq!(
            analytic.shape,
            input.shape,
            "{}: gradient {i} shape",
            kind.name()
        );
        let stride = (input.len() / MAX_ELEMENTS).max(1);
        for j in (0..input.len()).step_by(stride) {
            let mut plus = inputs.clone();
            plus[i].data[j] += STEP;
            let mut minus = inputs.clone();
            minus[i].data[j] -= STEP;
            let numeric = (weighted_sum(&kind, &plus, &cotangent)
                - weighted_sum(&kind, &minus, &cotangent))
                / (2.0 * STEP);
            let got = analytic.data[j];
            assert!(
                (got - numeric).abs() <= 1e-5 + 1e-4 * numeric.abs(),
                "{:?} on {:?}: d/dx{i}[{j}] is {got}, central differences give {numeric}",
                kind,
                inputs.iter().map(|t| &t.shape).collect::<Vec<_>>()
            );
        }
    }
}
