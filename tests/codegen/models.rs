//! Every zoo model's training step as generated code against the interpreter, at the small
//! sizes of the whole-network gradient check: every value of the first step (forward outputs,
//! every gradient, the optimizer update), then the parameters and state after three steps.

use super::{check_graph, microkernels};
use crate::golden::files;
use crate::training::{feed, network, small};
use netc::codegen::{compile, CodegenOptions};
use netc::interp::{run, EvalContext, Tensor};
use netc::ir::{InputKind, OutputRole};
use netc::optim::{Optimizer, OptimizerKind};
use netc::pipeline::{self, TrainingOptions};
use std::path::Path;

/// Each op against the interpreter on the same inputs, relative to the output's largest
/// magnitude: f32 sums of up to thousands of terms against f64.
const OP_TOLERANCE: f64 = 1e-4;
/// Parameters and state after three steps, relative to their largest magnitude: here rounding
/// compounds through the network and three updates.
const STEP_TOLERANCE: f64 = 1e-3;

/// The models, shared out between two threads (the interpreter is single-threaded).
#[test]
fn every_model_trains_like_the_interpreter() {
    let paths = files("../models", "net");
    let (even, odd): (Vec<_>, Vec<_>) = paths.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    std::thread::scope(|scope| {
        for half in [even, odd] {
            scope.spawn(move || {
                for (_, path) in half {
                    check_model(path);
                }
            });
        }
    });
}

fn check_model(path: &Path) {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("UTF-8 name");
    let net = network(path.to_str().expect("UTF-8 path"), &small(stem));
    let options = TrainingOptions {
        batch: 2,
        // Linear in the gradient: Adam's first steps divide a gradient by its own
        // magnitude, which turns f32 rounding of a near-zero gradient into a full step.
        optimizer: Optimizer::new(OptimizerKind::Momentum { momentum: 0.9 }),
        frozen: Vec::new(),
    };
    let training = pipeline::training(&net, &options).expect("lowers");
    // A small learning rate: at these sizes batch norm normalises a handful of values per
    // channel, gradients reach tens (MobileNet's first layer), and the f32 and f64 runs drift
    // apart in proportion to the step taken, not because a kernel is wrong (each is checked on
    // the same inputs by `check_graph`).
    let values = feed(&training, 5, 1e-4);
    check_graph(&training.graph, &values, OP_TOLERANCE);

    // Three steps in each, carrying parameters and state from step to step.
    for microkernel in microkernels() {
        let codegen = CodegenOptions {
            threads: 2,
            microkernel,
            seed: EvalContext::default().seed,
        };
        let mut program = compile(&training.graph, &codegen).expect("compiles");
        for (name, tensor) in &values {
            let slot = program.input_mut(name).expect("an input");
            for (to, from) in slot.iter_mut().zip(&tensor.data) {
                *to = *from as f32;
            }
        }
        let mut reference = values.clone();
        for step in 1..=3 {
            reference.insert("step".into(), Tensor::scalar(step as f64));
            program.input_mut("step").expect("a step input")[0] = step as f32;
            let result = run(&training.graph, &reference, &EvalContext::default()).expect("fits");
            for output in &training.graph.outputs {
                if output.role == OutputRole::Update {
                    reference.insert(output.name.clone(), result.value(output.value).clone());
                }
            }
            program.run();
            program.apply_updates();
        }
        for (id, input) in training.graph.inputs() {
            if !matches!(input.kind, InputKind::Param | InputKind::State) {
                continue;
            }
            let expected = &reference[&input.name].data;
            let got = program.value(id);
            let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (i, (g, e)) in got.iter().zip(expected).enumerate() {
                assert!(
                    (*g as f64 - e).abs() <= STEP_TOLERANCE * (scale + 1e-3),
                    "{stem}: `{}` element {i} after 3 steps: generated {g}, interpreter {e} \
                         ({})",
                    input.name,
                    microkernel.name()
                );
            }
        }
    }
}
