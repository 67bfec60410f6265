//! The training graph, in the reference interpreter: whole-network gradient checks of every zoo
//! model at small sizes, each optimizer against its textbook formula over several steps, frozen
//! layers leaving no backward work behind, the inference graph, and `mnist_cnn` learning.

use crate::golden::{files, root};
use netc::front::value::Value;
use netc::front::Network;
use netc::init::initial_values;
use netc::interp::{run, EvalContext, Tensor};
use netc::ir::{InputKind, OutputRole};
use netc::optim::{Optimizer, OptimizerKind};
use netc::pipeline::{self, Compiled, TrainingOptions};
use netc_grammar::SourceFile;
use netc_runtime::recipe::InitKind;
use std::collections::HashMap;

/// A zoo model with network parameters set, e.g. a smaller input.
pub fn network(path: &str, settings: &[(&str, i64)]) -> Network {
    let text = std::fs::read_to_string(root().join(path)).expect("model readable");
    let settings: Vec<(String, Value)> = settings
        .iter()
        .map(|(n, v)| (n.to_string(), Value::Int(*v)))
        .collect();
    netc::front::run(&SourceFile::new(path, text), &settings).expect("model checks")
}

/// Deterministic uniform values in [lo, hi).
fn uniform(shape: Vec<usize>, seed: u64, lo: f64, hi: f64) -> Tensor {
    crate::gradcheck::random_tensor(shape, seed, lo, hi)
}

/// Everything a graph reads: initial parameters and state, a random batch, lr and step.
pub fn feed(compiled: &Compiled, seed: u64, lr: f64) -> HashMap<String, Tensor> {
    let mut values = initial_values(compiled, InitKind::PyTorch, seed);
    for (id, input) in compiled.graph.inputs() {
        let shape = compiled.graph.shape(id).clone();
        let value = match (input.kind, input.name.as_str()) {
            (InputKind::Data, _) => uniform(shape, seed + 1, -1.0, 1.0),
            (InputKind::Target, "labels") => {
                let classes = compiled
                    .graph
                    .find_output(OutputRole::Prediction, "prediction")
                    .map(|p| compiled.graph.shape(p)[1])
                    .expect("a prediction");
                let raw = uniform(shape, seed + 2, 0.0, classes as f64);
                Tensor::new(raw.shape, raw.data.iter().map(|v| v.floor()).collect())
            }
            (InputKind::Target, _) => uniform(shape, seed + 2, 0.1, 0.9),
            (InputKind::Scalar, "lr") => Tensor::scalar(lr),
            (InputKind::Scalar, _) => Tensor::scalar(1.0),
            (InputKind::Param | InputKind::State, _) => continue,
        };
        values.insert(input.name.clone(), value);
    }
    values
}

fn loss_of(compiled: &Compiled, values: &HashMap<String, Tensor>) -> f64 {
    let result = run(&compiled.graph, values, &EvalContext { seed: 7 }).expect("inputs fit");
    result
        .output(&compiled.graph, OutputRole::Loss, "loss")
        .data[0]
}

/// Small sizes that keep the interpreter quick; models not listed run at their defaults.
pub fn small(stem: &str) -> Vec<(&'static str, i64)> {
    match stem {
        "googlenet" => vec![("size", 48), ("classes", 10)],
        "googlenet_small" => vec![("size", 8)],
        // Batch norm over a 1x1 map of a small batch normalises a handful of values: so badly
        // conditioned that finite differences say nothing. These sizes leave 2x2 maps at the end.
        "resnet18" | "mobilenet_v1" | "mobilenet_v2" => vec![("size", 64), ("classes", 10)],
        "alexnet" => vec![("size", 64), ("classes", 10)],
        "resnet_small" => vec![("size", 16), ("n", 1)],
        "vgg_small" => vec![("size", 32)],
        _ => vec![],
    }
}

/// Training options of `batch` examples with optimizer `kind`, no layer frozen.
pub fn options(batch: usize, kind: OptimizerKind) -> TrainingOptions {
    TrainingOptions {
        batch,
        optimizer: Optimizer::new(kind),
        frozen: Vec::new(),
    }
}

/// The gradient of the whole network against central differences of the loss along a random
/// direction in parameter space: `<grad, d>` against `(L(θ + h d) - L(θ - h d)) / 2h`.
#[test]
fn every_model_has_correct_gradients() {
    let mut failures = Vec::new();
    for path in files("../models", "net") {
        let path = path.to_str().expect("UTF-8 path").to_string();
        let stem = path
            .rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".net")
            .to_string();
        let net = network(&path, &small(&stem));
        let batch = 4;
        let training =
            pipeline::training(&net, &options(batch, OptimizerKind::Sgd)).expect("lowers");
        let forward = pipeline::forward(&net, batch).expect("lowers");
        let values = feed(&training, 11, 0.1);
        let result = run(&training.graph, &values, &EvalContext { seed: 7 }).expect("inputs fit");
        let mut directional = 0.0;
        let mut plus = values.clone();
        let mut minus = values.clone();
        // ReLU and max-pool make the loss piecewise smooth, and a step along every parameter at
        // once crosses kinks unless it is tiny; at 1e-9, rounding (about 1e-16 * loss / step)
        // stays far below the tolerance.
        let step_size = 1e-9;
        for (i, param) in training.params.iter().enumerate() {
            let grad = result.output(&training.graph, OutputRole::Gradient, &param.name);
            let direction = uniform(grad.shape.clone(), 100 + i as u64, -1.0, 1.0);
            directional += grad
                .data
                .iter()
                .zip(&direction.data)
                .map(|(g, d)| g * d)
                .sum::<f64>();
            for (target, sign) in [(&mut plus, 1.0), (&mut minus, -1.0)] {
                let p = target.get_mut(&param.name).expect("param fed");
                for (v, d) in p.data.iter_mut().zip(&direction.data) {
                    *v += sign * step_size * d;
                }
            }
        }
        let numeric = (loss_of(&forward, &plus) - loss_of(&forward, &minus)) / (2.0 * step_size);
        let loss = result
            .output(&training.graph, OutputRole::Loss, "loss")
            .data[0];
        if !loss.is_finite() || (directional - numeric).abs() > 1e-6 + 1e-4 * numeric.abs() {
            failures.push(format!(
                "{stem}: loss {loss}, <grad, d> = {directional}, central differences give {numeric}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs `steps` training steps, checking each parameter's update against `textbook`, which
/// gets the parameter, its gradient (with the L2 and L1 penalties on weights already added, as
/// PyTorch's coupled decay does), the step (1-based) and its own per-parameter state.
fn check_optimizer(
    kind: OptimizerKind,
    (weight_decay, l1): (f64, f64),
    textbook: impl Fn(&mut Vec<f64>, &[f64], f64, &mut Vec<Vec<f64>>),
) {
    let mut optimizer = Optimizer::new(kind);
    optimizer.weight_decay = weight_decay;
    optimizer.l1 = l1;
    let training = mlp_training(optimizer);
    let lr = 0.01;
    let mut values = feed(&training, 3, lr);
    let mut expected: HashMap<String, (Vec<f64>, Vec<Vec<f64>>)> = training
        .params
        .iter()
        .map(|p| (p.name.clone(), (values[&p.name].data.clone(), Vec::new())))
        .collect();
    for step in 1..=4 {
        values.insert("step".into(), Tensor::scalar(step as f64));
        let result = run(&training.graph, &values, &EvalContext::default()).expect("inputs fit");
        for param in &training.params {
            let grad = &result
                .output(&training.graph, OutputRole::Gradient, &param.name)
                .data;
            let (w, state) = expected.get_mut(&param.name).expect("tracked");
            let (decay, l1) = if param.role == netc::lower::ParamRole::Weight {
                (weight_decay, l1)
            } else {
                (0.0, 0.0)
            };
            let grad: Vec<f64> = grad
                .iter()
                .zip(w.iter())
                .map(|(g, w)| g + decay * w + l1 * sign(*w))
                .collect();
            textbook(w, &grad, step as f64, state);
            let got = &result
                .output(&training.graph, OutputRole::Update, &param.name)
                .data;
            for (a, b) in got.iter().zip(w.iter()) {
                assert!(
                    (a - b).abs() <= 1e-12 + 1e-9 * b.abs(),
                    "{kind:?} step {step} {}: {a} vs {b}",
                    param.name
                );
            }
        }
        for output in &training.graph.outputs {
            if output.role == OutputRole::Update {
                values.insert(output.name.clone(), result.value(output.value).clone());
            }
        }
    }
}

/// The sign as the L1 subgradient uses it: zero at zero.
fn sign(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x.signum()
    }
}

/// The training graph of `mlp` at batch 4 with this optimizer.
fn mlp_training(optimizer: Optimizer) -> Compiled {
    let net = network("../models/mlp.net", &[]);
    let options = TrainingOptions {
        batch: 4,
        optimizer,
        frozen: Vec::new(),
    };
    pipeline::training(&net, &options).expect("lowers")
}

/// A zero state vector per slot, created on first use.
fn slot(state: &mut Vec<Vec<f64>>, index: usize, len: usize) -> &mut Vec<f64> {
    while state.len() <= index {
        state.push(vec![0.0; len]);
    }
    &mut state[index]
}

#[test]
fn sgd_and_momentum_follow_pytorch() {
    let lr = 0.01;
    check_optimizer(OptimizerKind::Sgd, (0.0, 0.0), |w, g, _, _| {
        w.iter_mut().zip(g).for_each(|(w, g)| *w -= lr * g);
    });
    check_optimizer(OptimizerKind::Sgd, (5e-4, 0.0), |w, g, _, _| {
        w.iter_mut().zip(g).for_each(|(w, g)| *w -= lr * g);
    });
    check_optimizer(OptimizerKind::Sgd, (5e-4, 1e-3), |w, g, _, _| {
        w.iter_mut().zip(g).for_each(|(w, g)| *w -= lr * g);
    });
    for nesterov in [false, true] {
        let kind = if nesterov {
            OptimizerKind::Nesterov { momentum: 0.9 }
        } else {
            OptimizerKind::Momentum { momentum: 0.9 }
        };
        check_optimizer(kind, (1e-3, 0.0), |w, g, _, state| {
            let b = slot(state, 0, w.len());
            for i in 0..w.len() {
                b[i] = 0.9 * b[i] + g[i];
                let d = if nesterov { g[i] + 0.9 * b[i] } else { b[i] };
                w[i] -= lr * d;
            }
        });
    }
}

#[test]
fn adaptive_optimizers_follow_their_formulas() {
    let lr = 0.01;
    check_optimizer(
        OptimizerKind::AdaGrad { eps: 1e-10 },
        (0.0, 0.0),
        |w, g, _, state| {
            let s = slot(state, 0, w.len());
            for i in 0..w.len() {
                s[i] += g[i] * g[i];
                w[i] -= lr * g[i] / (s[i].sqrt() + 1e-10);
            }
        },
    );
    check_optimizer(
        OptimizerKind::RmsProp {
            alpha: 0.99,
            eps: 1e-8,
        },
        (0.0, 0.0),
        |w, g, _, state| {
            let v = slot(state, 0, w.len());
            for i in 0..w.len() {
                v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
                w[i] -= lr * g[i] / (v[i].sqrt() + 1e-8);
            }
        },
    );
    let adam = |w: &mut Vec<f64>, g: &[f64], t: f64, state: &mut Vec<Vec<f64>>| {
        let len = w.len();
        slot(state, 1, len);
        let (m, v) = state.split_at_mut(1);
        let (m, v) = (&mut m[0], &mut v[0]);
        for i in 0..len {
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
            let m_hat = m[i] / (1.0 - 0.9f64.powf(t));
            let v_hat = v[i] / (1.0 - 0.999f64.powf(t));
            w[i] -= lr * m_hat / (v_hat.sqrt() + 1e-8);
        }
    };
    check_optimizer(
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        (1e-3, 0.0),
        adam,
    );
}

#[test]
fn adamw_decays_weights_apart_from_the_gradient() {
    let (lr, wd) = (0.01, 0.1);
    // The checker adds `wd * w` to weight gradients for coupled decay; AdamW must not see it,
    // so this runs with the checker's decay at zero and the optimizer's set directly.
    let mut optimizer = Optimizer::new(OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    });
    optimizer.weight_decay = wd;
    let training = mlp_training(optimizer);
    let values = feed(&training, 5, lr);
    let result = run(&training.graph, &values, &EvalContext::default()).expect("inputs fit");
    for param in &training.params {
        let w = &values[&param.name].data;
        let g = &result
            .output(&training.graph, OutputRole::Gradient, &param.name)
            .data;
        let got = &result
            .output(&training.graph, OutputRole::Update, &param.name)
            .data;
        let decay = if param.role == netc::lower::ParamRole::Weight {
            wd
        } else {
            0.0
        };
        for i in 0..w.len() {
            // Step 1: m_hat = g, v_hat = g².
            let expected = w[i] * (1.0 - lr * decay) - lr * g[i] / (g[i].abs() + 1e-8);
            assert!(
                (got[i] - expected).abs() <= 1e-12 + 1e-9 * expected.abs(),
                "{}: {} vs {expected}",
                param.name,
                got[i]
            );
        }
    }
}

#[test]
fn frozen_layers_get_no_gradient_and_no_backward_work() {
    let net = network("../models/mnist_cnn.net", &[]);
    let all = pipeline::training(&net, &options(2, OptimizerKind::Sgd)).expect("lowers");
    assert_eq!(all.graph.count_ops("conv2d_weight_grad"), 2);
    // conv1's input is the data: nothing needs its gradient.
    assert_eq!(all.graph.count_ops("conv2d_input_grad"), 1);
    let mut frozen_options = options(2, OptimizerKind::Sgd);
    frozen_options.frozen = vec!["conv1".into()];
    let frozen = pipeline::training(&net, &frozen_options).expect("lowers");
    assert_eq!(frozen.graph.count_ops("conv2d_weight_grad"), 1);
    // With conv1 frozen nothing before conv2 needs a gradient either.
    assert_eq!(frozen.graph.count_ops("conv2d_input_grad"), 0);
    assert!(frozen
        .graph
        .find_output(OutputRole::Gradient, "conv1.weight")
        .is_none());
    assert!(frozen
        .graph
        .find_output(OutputRole::Update, "conv1.bias")
        .is_none());
    assert!(frozen
        .graph
        .find_output(OutputRole::Gradient, "conv2.weight")
        .is_some());
    assert!(frozen.graph.ops.len() < all.graph.ops.len());

    frozen_options.frozen = vec!["cnov1".into()];
    let error = pipeline::training(&net, &frozen_options).expect_err("no such layer");
    assert!(error.contains("did you mean `conv1`?"), "{error}");
}

#[test]
fn inference_uses_running_statistics_and_no_dropout() {
    let net = network("../models/vgg_small.net", &[("size", 32)]);
    let inference = pipeline::inference(&net, 2).expect("lowers");
    assert_eq!(inference.graph.count_ops("dropout_mask"), 0);
    assert_eq!(
        inference.graph.count_ops("sum_to"),
        0,
        "batch statistics in inference"
    );
    assert!(inference
        .graph
        .outputs
        .iter()
        .all(|o| o.role != OutputRole::Update));
    let training = pipeline::forward(&net, 2).expect("lowers");
    assert_eq!(training.graph.count_ops("dropout_mask"), 1);
    // Inference on one example equals inference on it within a batch: no batch statistics.
    let values = feed(&inference, 9, 0.0);
    let result = run(&inference.graph, &values, &EvalContext::default()).expect("inputs fit");
    let scores = result.output(&inference.graph, OutputRole::Prediction, "prediction");
    let single = pipeline::inference(&net, 1).expect("lowers");
    let mut one = values.clone();
    let x = &values["x"];
    let per_example = x.len() / 2;
    let mut shape = x.shape.clone();
    shape[0] = 1;
    one.insert(
        "x".into(),
        Tensor::new(shape, x.data[..per_example].to_vec()),
    );
    one.insert(
        "labels".into(),
        Tensor::new(vec![1], vec![values["labels"].data[0]]),
    );
    let alone = run(&single.graph, &one, &EvalContext::default()).expect("inputs fit");
    let alone = alone.output(&single.graph, OutputRole::Prediction, "prediction");
    for (a, b) in alone.data.iter().zip(&scores.data[..alone.len()]) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

#[test]
fn mnist_cnn_learns_in_the_interpreter() {
    let net = network("../models/mnist_cnn.net", &[]);
    let training = pipeline::training(&net, &options(8, OptimizerKind::Momentum { momentum: 0.9 }))
        .expect("lowers");
    let mut values = feed(&training, 21, 0.02);
    let mut losses = Vec::new();
    for step in 1..=12 {
        values.insert("step".into(), Tensor::scalar(step as f64));
        let result = run(&training.graph, &values, &EvalContext::default()).expect("inputs fit");
        losses.push(
            result
                .output(&training.graph, OutputRole::Loss, "loss")
                .data[0],
        );
        for output in &training.graph.outputs {
            if output.role == OutputRole::Update {
                values.insert(output.name.clone(), result.value(output.value).clone());
            }
        }
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    let falls_every_step = losses.windows(2).all(|pair| pair[1] < pair[0]);
    assert!(
        falls_every_step && last < 0.75 * first,
        "the loss did not fall steadily on a fixed batch: {losses:?}"
    );
}
