//! Losses computed as single ops, fused with what makes them stable: softmax with cross-entropy
//! (log-sum-exp), binary cross-entropy with PyTorch's clamping of the logs. Mean squared and
//! mean absolute error need no op of their own: they are built from elementwise ops.

use super::{arity, softmax, OpKind};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};

pub fn softmax_cross_entropy_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    match (inputs[0].as_slice(), inputs[1].as_slice()) {
        (&[n, k], &[m]) if n == m && k >= 1 => Ok(vec![]),
        _ => Err(format!(
            "expected logits [N,K] and labels [N], found {:?} and {:?}",
            inputs[0], inputs[1]
        )),
    }
}

pub fn softmax_cross_entropy_grad_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 3)?;
    softmax_cross_entropy_shape(&inputs[..2])?;
    if !inputs[2].is_empty() {
        return Err("dloss must be a scalar".into());
    }
    Ok(inputs[0].clone())
}

pub fn binary_cross_entropy_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    if inputs[0] != inputs[1] {
        return Err(format!(
            "prediction {:?} and target {:?} differ",
            inputs[0], inputs[1]
        ));
    }
    Ok(vec![])
}

pub fn binary_cross_entropy_grad_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 3)?;
    binary_cross_entropy_shape(&inputs[..2])?;
    if !inputs[2].is_empty() {
        return Err("dloss must be a scalar".into());
    }
    Ok(inputs[0].clone())
}

/// The class `labels[n]` holds, which must be an index below `classes`.
fn label(labels: &Tensor, n: usize, classes: usize) -> usize {
    let l = labels.data[n];
    assert!(
        l >= 0.0 && l < classes as f64 && l.fract() == 0.0,
        "label {l} is not a class index below {classes}"
    );
    l as usize
}

/// ln(sum of e^x), shifted by the maximum so exp cannot overflow.
fn log_sum_exp(row: &[f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// `x`, or `floor` where `x` is below it. Unlike `f64::max`, lets NaN through, as PyTorch's
/// clamping does.
fn at_least(x: f64, floor: f64) -> f64 {
    if x < floor {
        floor
    } else {
        x
    }
}

pub fn eval_softmax_cross_entropy(inputs: &[&Tensor]) -> Tensor {
    let (logits, labels) = (inputs[0], inputs[1]);
    let (n, k) = (logits.shape[0], logits.shape[1]);
    // -log softmax(x)[l] = logsumexp(x) - x[l], which stays finite where softmax underflows.
    let total: f64 = (0..n)
        .map(|b| {
            let row = &logits.data[b * k..(b + 1) * k];
            log_sum_exp(row) - row[label(labels, b, k)]
        })
        .sum();
    Tensor::scalar(total / n as f64)
}

pub fn eval_softmax_cross_entropy_grad(inputs: &[&Tensor]) -> Tensor {
    let (logits, labels, dloss) = (inputs[0], inputs[1], inputs[2]);
    let (n, k) = (logits.shape[0], logits.shape[1]);
    let mut dx = softmax::eval(&[logits]);
    for b in 0..n {
        dx.data[b * k + label(labels, b, k)] -= 1.0;
    }
    let scale = dloss.data[0] / n as f64;
    for v in &mut dx.data {
        *v *= scale;
    }
    dx
}

pub fn eval_binary_cross_entropy(inputs: &[&Tensor]) -> Tensor {
    let (p, t) = (inputs[0], inputs[1]);
    // PyTorch clamps the logs at -100, so a confident wrong answer costs 100, not infinity.
    let total: f64 = p
        .data
        .iter()
        .zip(&t.data)
        .map(|(&p, &t)| {
            -(t * at_least(p.ln(), -100.0) + (1.0 - t) * at_least((1.0 - p).ln(), -100.0))
        })
        .sum();
    Tensor::scalar(total / p.len() as f64)
}

pub fn eval_binary_cross_entropy_grad(inputs: &[&Tensor]) -> Tensor {
    let (p, t, dloss) = (inputs[0], inputs[1], inputs[2]);
    let scale = dloss.data[0] / p.len() as f64;
    // PyTorch's: the unclamped derivative, with its denominator kept off zero so p = 0 or 1
    // gives a large finite gradient.
    let data = p
        .data
        .iter()
        .zip(&t.data)
        .map(|(&p, &t)| scale * (p - t) / at_least(p * (1.0 - p), 1e-12))
        .collect();
    Tensor::new(p.shape.clone(), data)
}

/// The gradient of a loss `(prediction, target) -> []` with respect to its prediction, by the
/// backward op `grad_kind`; targets get none.
fn vjp_loss(grad_kind: OpKind, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let inputs = [op.inputs[0], op.inputs[1], grad];
    vec![
        Some(graph.op(grad_kind, &inputs, op.layer.as_deref())),
        None,
    ]
}

pub fn vjp_softmax_cross_entropy(
    op: &Op,
    graph: &mut Graph,
    grad: ValueId,
) -> Vec<Option<ValueId>> {
    vjp_loss(OpKind::SoftmaxCrossEntropyGrad, op, graph, grad)
}

pub fn vjp_binary_cross_entropy(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    vjp_loss(OpKind::BinaryCrossEntropyGrad, op, graph, grad)
}

// CODEGEN-STUB: replaced by the real code-generation rules.
pub fn emit_softmax_cross_entropy(
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (sink, inputs, output);
    panic!("internal error: no code generation for `emit_softmax_cross_entropy` yet");
}
pub fn emit_softmax_cross_entropy_grad(
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (sink, inputs, output);
    panic!("internal error: no code generation for `emit_softmax_cross_entropy_grad` yet");
}
pub fn emit_binary_cross_entropy(
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (sink, inputs, output);
    panic!("internal error: no code generation for `emit_binary_cross_entropy` yet");
}
pub fn emit_binary_cross_entropy_grad(
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (sink, inputs, output);
    panic!("internal error: no code generation for `emit_binary_cross_entropy_grad` yet");
}
