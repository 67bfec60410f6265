//! Every zoo model's training step as generated code against the interpreter, at the small
//! sizes of the whole-network gradient check: every op of three steps in context (forward
//! outputs, every gradient, the optimizer update, each on the generated values of its inputs),
//! with each microkernel, and the parameters and state after three steps against three steps
//! of the interpreter.

use super::{check_graph, check_ops, microkernels};
use crate::golden::for_each_model;
use crate::training::{feed, network, small};
use netc::codegen::{compile, CodegenOptions};
use netc::interp::{run, EvalContext, Tensor};
use netc::ir::{InputKind, OutputRole, ValueId};
use netc::optim::{Optimizer, OptimizerKind};
use netc::passes::PassOptions;
use netc::pipeline::{self, TrainingOptions};
use netc_runtime::microkernel::MicrokernelKind;
use std::path::Path;

/// Each op against the interpreter on the same inputs, relative to the output's largest
/// magnitude: f32 sums of up to thousands of terms against f64.
const OP_TOLERANCE: f64 = 1e-4;
/// Parameters and state after three steps, relative to their largest magnitude: here rounding
/// compounds through the network and three updates.
const STEP_TOLERANCE: f64 = 1e-3;

#[test]
fn every_model_trains_like_the_interpreter() {
    for_each_model(check_model);
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
    let values = feed(&training, 5, 1e-3);
    check_graph(&training.graph, &values, OP_TOLERANCE);

    // Three steps in the interpreter, carrying parameters and state from step to step.
    let mut reference = values.clone();
    for step in 1..=3 {
        reference.insert("step".into(), Tensor::scalar(step as f64));
        let result = run(&training.graph, &reference, &EvalContext::default()).expect("fits");
        for output in &training.graph.outputs {
            if output.role == OutputRole::Update {
                reference.insert(output.name.clone(), result.value(output.value).clone());
            }
        }
    }
    // And as generated code with each microkernel, every op checked in context at each step.
    for microkernel in microkernels() {
        let codegen = CodegenOptions {
            threads: 2,
            microkernel,
            seed: EvalContext::default().seed,
            passes: PassOptions::none(),
        };
        let mut program = compile(&training.graph, &codegen).expect("compiles");
        for (name, tensor) in &values {
            let slot = program.input_mut(name).expect("an input");
            for (to, from) in slot.iter_mut().zip(&tensor.data) {
                *to = *from as f32;
            }
        }
        for step in 1..=3 {
            program.input_mut("step").expect("a step input")[0] = step as f32;
            program.run();
            // `check_graph` checked step 1 with every microkernel; later steps, with the
            // default one, keep the test's time in bounds.
            if step == 1 || microkernel != MicrokernelKind::best() {
                program.apply_updates();
                continue;
            }
            let generated: Vec<Vec<f32>> = (0..training.graph.values.len())
                .map(|v| program.value(ValueId(v)).to_vec())
                .collect();
            let label = format!("step {step}, {}", microkernel.name());
            check_ops(&training.graph, &generated, OP_TOLERANCE, &label);
            program.apply_updates();
        }
        if ill_conditioned(stem) {
            continue;
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
                    "{stem}: `{}` element {i} after 3 steps: generated {g}, interpreter {e} ({})",
                    input.name,
                    microkernel.name()
                );
            }
        }
    }
}

/// Models whose f32 and f64 training steps part ways at the test's sizes, so that only the
/// in-context checks apply: at 64x64 MobileNets end on 2x2 maps, batch norm normalises 8 values
/// per channel, the first layer's gradient reaches tens, and f32 rounding in near-constant
/// channels changes it by tens of percent within one step (every op still matches the
/// interpreter on its own inputs).
fn ill_conditioned(stem: &str) -> bool {
    matches!(stem, "mobilenet_v1" | "mobilenet_v2")
}
