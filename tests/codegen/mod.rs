//! Differential tests of generated code against the reference interpreter: every primitive on
//! random shapes and attributes, and every zoo model's training step. The generated code runs
//! in f32 and the interpreter in f64, so values agree within a tolerance relative to each
//! tensor's scale; every check runs with each microkernel this CPU has, and with one and three
//! threads, which must agree bit for bit.

mod contraction;
mod depthwise;
mod elementwise;
mod layout;
mod models;
mod pool;
mod softmax_loss;

use netc::codegen::{compile, CodegenOptions};
use netc::interp::{EvalContext, Tensor};
use netc::ir::ops::fused::{Arg, Chain};
use netc::ir::{Graph, InputKind, OpKind, OutputRole, ValueId};
use netc::passes::PassOptions;
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

/// Runs `graph` on `inputs` as generated code with every microkernel and with 1 and 3
/// threads, which must agree bit for bit; and checks every op in context: its generated output
/// against the interpreter's semantics applied to the generated values of its inputs, within
/// `tolerance` times the largest magnitude of the expected output (plus a little absolute room).
///
/// Checking each op on the values it actually received keeps f32 rounding from compounding
/// across a whole network (batch norm over a handful of values amplifies it by orders of
/// magnitude), so one tight tolerance serves a single op and a whole training step alike.
#[track_caller]
pub fn check_graph(graph: &Graph, inputs: &HashMap<String, Tensor>, tolerance: f64) {
    let context = EvalContext::default();
    for microkernel in microkernels() {
        let mut runs = Vec::new();
        for threads in [1, 3] {
            let options = CodegenOptions {
                threads,
                microkernel,
                seed: context.seed,
                passes: PassOptions::none(),
            };
            let mut program = compile(graph, &options).expect("compiles");
            for (name, tensor) in inputs {
                let slot = program.input_mut(name).expect("the graph has this input");
                for (to, from) in slot.iter_mut().zip(&tensor.data) {
                    *to = *from as f32;
                }
            }
            // Twice: a kernel must not depend on what its buffers held before (the first run
            // finds them zeroed, later ones find the previous step's values).
            program.run();
            program.run();
            let values: Vec<Vec<f32>> = (0..graph.values.len())
                .map(|v| program.value(ValueId(v)).to_vec())
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
        check_ops(graph, &runs[0], tolerance, microkernel.name());
    }
}

/// Checks every op of `graph` in context: its output in `generated` (every value of a run)
/// against the interpreter's semantics applied to the generated values of its inputs.
#[track_caller]
pub fn check_ops(graph: &Graph, generated: &[Vec<f32>], tolerance: f64, label: &str) {
    let context = EvalContext::default();
    let as_tensor = |v: ValueId| {
        Tensor::new(
            graph.shape(v).clone(),
            generated[v.0].iter().map(|&x| x as f64).collect(),
        )
    };
    for (index, op) in graph.ops.iter().enumerate() {
        let arguments: Vec<Tensor> = op.inputs.iter().map(|&v| as_tensor(v)).collect();
        let arguments: Vec<&Tensor> = arguments.iter().collect();
        let reference = op.kind.eval(&arguments, &context).data;
        let magnitudes = sum_magnitudes(&op.kind, &arguments, &context);
        let got = &generated[op.output.0];
        // Each result of a chain with several is checked at its own scale.
        let mut scales = Vec::with_capacity(reference.len());
        for len in result_lengths(&op.kind, reference.len(), &arguments) {
            let segment = &reference[scales.len()..scales.len() + len];
            let scale = segment.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            scales.extend(std::iter::repeat_n(scale, len));
        }
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            let (g, scale) = (*g as f64, scales[i]);
            let magnitude = magnitudes.as_ref().map_or(0.0, |m| m[i]);
            let close = g == *r
                || (g - r).abs() <= tolerance * (scale + 1e-3 + magnitude)
                || (g.is_nan() && r.is_nan());
            assert!(
                close,
                "{}: `{}` ({}, op {index}, shape {:?}) element {i}: generated {g}, \
                 interpreter {r} (scale {scale}, {label})",
                graph.name,
                op.kind.name(),
                op.output,
                graph.shape(op.output),
            );
        }
    }
}

/// The lengths of a fused chain's results, one after the other in its output; the whole
/// output for any other op.
fn result_lengths(kind: &OpKind, total: usize, arguments: &[&Tensor]) -> Vec<usize> {
    let OpKind::Fused(chain) = kind else {
        return vec![total];
    };
    // A stored prologue's value has the shape of the largest tensor its steps read.
    let stored_x = chain.stored_prologue().map(|x| {
        let args = chain.steps[..=x].iter().flat_map(|step| &step.args);
        let read = args.filter_map(|arg| match *arg {
            Arg::Input(i) => Some(arguments[i].data.len()),
            Arg::Step(_) => None,
        });
        (x, read.max().expect("a prologue reads an input"))
    });
    let sum_len = |r: usize| match &chain.steps[r].kind {
        OpKind::SumTo(target) | OpKind::SumSquaredDeviationsTo(target) => {
            Some(target.iter().product::<usize>())
        }
        _ => None,
    };
    let summed: usize = chain.results.iter().filter_map(|&r| sum_len(r)).sum();
    let (x, x_len) = stored_x.map_or((None, 0), |(x, len)| (Some(x), len));
    let stored = chain
        .results
        .iter()
        .filter(|&&r| sum_len(r).is_none() && Some(r) != x)
        .count();
    let each = (total - summed - x_len) / stored.max(1);
    match chain.results.is_empty() {
        true => vec![total],
        false => chain
            .results
            .iter()
            .map(|&r| match Some(r) == x {
                true => x_len,
                false => sum_len(r).unwrap_or(each),
            })
            .collect(),
    }
}

/// The rounding a sum of squared deviations `(x - m)²` carries: each square's own, and twice
/// the deviation times the rounding of `x` and of the mean, `x` carrying `carried` (a
/// contraction's magnitude) besides its own.
fn deviation_magnitudes(
    target: &[usize],
    x: &Tensor,
    carried: impl Fn(usize) -> f64,
    context: &EvalContext,
) -> Vec<f64> {
    let sum = OpKind::SumTo(target.to_vec()).eval(&[x], context);
    let count = (x.data.len() / sum.data.len().max(1)) as f64;
    let means = OpKind::Broadcast(x.shape.clone()).eval(&[&sum], context);
    let terms = x
        .data
        .iter()
        .zip(&means.data)
        .enumerate()
        .map(|(k, (v, total))| {
            let mean = total / count;
            let apart = (v - mean).abs();
            apart * apart + 2.0 * apart * (v.abs() + mean.abs() + carried(k))
        });
    let terms = Tensor::new(x.shape.clone(), terms.collect());
    OpKind::SumTo(target.to_vec()).eval(&[&terms], context).data
}

/// For ops whose elements are sums of products of their inputs, the sum of the terms'
/// magnitudes (the op applied to the inputs' absolute values): a sum that cancels to nearly
/// nothing (a channel mean of a normalised map) still carries rounding of this size. A fused
/// chain that ends in a sum carries its terms' (the steps before it, each rounded); one with a
/// contraction, the contraction's (of its prologue's value), which its epilogue passes on; one
/// with several results, each result's, its sums' terms carrying the contraction's. Squared
/// deviations carry [`deviation_magnitudes`]. Softmax cross-entropy carries the logits'.
fn sum_magnitudes(kind: &OpKind, arguments: &[&Tensor], context: &EvalContext) -> Option<Vec<f64>> {
    let absolute = |tensors: &[&Tensor]| -> Vec<Tensor> {
        tensors
            .iter()
            .map(|t| Tensor::new(t.shape.clone(), t.data.iter().map(|v| v.abs()).collect()))
            .collect()
    };
    if let OpKind::Fused(chain) = kind {
        // The value of a step's argument, by the chain's steps up to it.
        let value = |arg: Arg| match arg {
            Arg::Input(i) => arguments[i].clone(),
            Arg::Step(s) => OpKind::Fused(Chain {
                steps: chain.steps[..=s].to_vec(),
                results: Vec::new(),
            })
            .eval(arguments, context),
        };
        if chain.reduction().is_some() {
            let last = chain.steps.last().expect("a step");
            let terms = value(last.args[0]);
            return sum_magnitudes(&last.kind, &[&terms], context);
        }
        // The contraction's magnitudes, which its epilogue passes on.
        let contraction = chain.contraction().map(|around| {
            let operands: Vec<Tensor> = around.contraction.args.iter().map(|&a| value(a)).collect();
            let operands: Vec<&Tensor> = operands.iter().collect();
            let kind = &around.contraction.kind;
            sum_magnitudes(kind, &operands, context).expect("a contraction's")
        });
        if !chain.results.is_empty() {
            // A sum's terms' magnitudes, and those the contraction (if any) passes on to them;
            // for an elementwise result, the contraction's alone.
            let mut magnitudes = Vec::new();
            for &r in &chain.results {
                let step = &chain.steps[r];
                if !matches!(
                    step.kind,
                    OpKind::SumTo(_) | OpKind::SumSquaredDeviationsTo(_)
                ) {
                    // A stored prologue's value comes before the contraction: none carried.
                    let none = vec![0.0; value(Arg::Step(r)).data.len()];
                    let carried = contraction
                        .clone()
                        .filter(|_| chain.stored_prologue() != Some(r));
                    magnitudes.extend(carried.unwrap_or(none));
                    continue;
                }
                let terms = value(step.args[0]);
                let carried = |k: usize| contraction.as_ref().map_or(0.0, |m| m[k]);
                if let OpKind::SumSquaredDeviationsTo(target) = &step.kind {
                    magnitudes.extend(deviation_magnitudes(target, &terms, carried, context));
                    continue;
                }
                let mut terms = terms;
                for (k, t) in terms.data.iter_mut().enumerate() {
                    *t = t.abs() + carried(k);
                }
                magnitudes.extend(sum_magnitudes(&step.kind, &[&terms], context)?);
            }
            return Some(magnitudes);
        }
        if contraction.is_some() {
            return contraction;
        }
    }
    if let OpKind::SumSquaredDeviationsTo(target) = kind {
        return Some(deviation_magnitudes(target, arguments[0], |_| 0.0, context));
    }
    if let OpKind::SoftmaxCrossEntropy = kind {
        // The mean of `logsumexp(z) - z[label]`: a small loss is the difference of two terms
        // as large as the logits, and carries their rounding.
        let (logits, labels) = (arguments[0], arguments[1]);
        let classes = *logits.shape.last().expect("[N, K] logits");
        let rows = logits.data.chunks(classes).zip(&labels.data);
        let magnitude: f64 = rows
            .map(|(row, &label)| {
                let largest = row.iter().fold(0.0f64, |m, z| m.max(z.abs()));
                largest + row[label as usize].abs()
            })
            .sum();
        return Some(vec![magnitude / labels.data.len() as f64]);
    }
    if let OpKind::PooledConv2dWeightGrad { .. } = kind {
        // Linear in x and dy; the indices only place dy, so they stay as they are.
        let absolute = absolute(&[arguments[0], arguments[2]]);
        let arguments = [&absolute[0], arguments[1], &absolute[1]];
        return Some(kind.eval(&arguments, context).data);
    }
    let linear = matches!(
        kind,
        OpKind::SumTo(_)
            | OpKind::Conv2d(_)
            | OpKind::Conv2dInputGrad(..)
            | OpKind::Conv2dWeightGrad(..)
            | OpKind::MatMul { .. }
            | OpKind::AvgPool(_)
            | OpKind::AvgPoolGrad(..)
            | OpKind::ChannelWindowSum { .. }
    );
    linear.then(|| {
        let absolute = absolute(arguments);
        let absolute: Vec<&Tensor> = absolute.iter().collect();
        kind.eval(&absolute, context).data
    })
}
