//! Differential tests of generated code against the reference interpreter: every primitive on
//! random shapes and attributes, and every zoo model's training step. The generated code runs
//! in f32 and the interpreter in f64, so values agree within a tolerance relative to each
//! tensor's scale; every check runs with each microkernel this CPU has, and with one and three
//! threads, which must agree bit for bit.

mod contraction;
mod elementwise;
mod layout;
mod models;
mod pool;
mod softmax_loss;

use netc::codegen::{compile, CodegenOptions};
use netc::interp::{run, EvalContext, Tensor};
use netc::ir::{Definition, Graph, InputKind, OpKind, OutputRole};
use netc_runtime::microkernel::MicrokernelKind;
use std::collections::HashMap;

pub use crate::gradcheck::{config, random_tensor};

/// Every microkernel this CPU can run.
pub fn microkernels() -> Vec<MicrokernelKind> {
    MicrokernelKind::ALL
        .into_iter()
        .filter(|k| k.available())
        .collect()
}

/// A graph of one op on data inputs `x0, x1, ...` of these shapes, its output the prediction.
pub fn single_op(kind: OpKind, shapes: &[Vec<usize>]) -> Graph {
    let mut graph = Graph::new("single");
    let inputs: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| graph.input(InputKind::Data, format!("x{i}"), s.clone()))
        .collect();
    let y = graph.op(kind, &inputs, None);
    graph.output(OutputRole::Prediction, "y", y);
    graph
}

/// `single_op` on these tensors, checked with `check_graph`.
#[track_caller]
pub fn check_op(kind: OpKind, inputs: &[Tensor], tolerance: f64) {
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
    let graph = single_op(kind, &shapes);
    let values = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("x{i}"), t.clone()))
        .collect();
    check_graph(&graph, &values, tolerance);
}

/// Runs `graph` on `inputs` in the interpreter and as generated code with every microkernel
/// and with 1 and 3 threads; every value the graph computes must agree with the interpreter's
/// within `tolerance` times the largest magnitude of that value (plus a little absolute room),
/// and the runs with different thread counts must be identical.
#[track_caller]
pub fn check_graph(graph: &Graph, inputs: &HashMap<String, Tensor>, tolerance: f64) {
    let context = EvalContext::default();
    let expected = run(graph, inputs, &context).expect("the inputs fit the graph");
    for microkernel in microkernels() {
        let mut runs = Vec::new();
        for threads in [1, 3] {
            let options = CodegenOptions {
                threads,
                microkernel,
            };
            let mut program = compile(graph, &options).expect("compiles");
            for (name, tensor) in inputs {
                let slot = program.input_mut(name).expect("the graph has this input");
                for (to, from) in slot.iter_mut().zip(&tensor.data) {
                    *to = *from as f32;
                }
            }
            program.run();
            let values: Vec<Vec<f32>> = (0..graph.values.len())
                .map(|v| program.value(netc::ir::ValueId(v)).to_vec())
                .collect();
            runs.push(values);
        }
        // Bits, so that NaNs compare equal.
        let bits = |run: &Vec<Vec<f32>>| -> Vec<Vec<u32>> {
            run.iter()
                .map(|v| v.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        assert!(
            bits(&runs[0]) == bits(&runs[1]),
            "{}: 1 and 3 threads disagree ({})",
            graph.name,
            microkernel.name()
        );
        for (index, info) in graph.values.iter().enumerate() {
            let Definition::Op(op) = info.definition else {
                continue;
            };
            let reference = &expected.values[index].data;
            let got = &runs[0][index];
            let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (i, (g, r)) in got.iter().zip(reference).enumerate() {
                let g = *g as f64;
                let close = g == *r
                    || (g - r).abs() <= tolerance * (scale + 1e-3)
                    || (g.is_nan() && r.is_nan());
                assert!(
                    close,
                    "{}: `{}` (%{index}, op {op}, shape {:?}) element {i}: generated {g}, interpreter {r} \
                     (scale {scale}, microkernel {})",
                    graph.name,
                    graph.ops[op].kind.name(),
                    info.shape,
                    microkernel.name()
                );
            }
        }
    }
}
