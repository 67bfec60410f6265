//! Softmax over axis 1 (the classes of `[N,K]`, the channels of `[N,C,H,W]`), computed stably
//! (shifted by the maximum), and its backward op.

use super::{arity, OpKind};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};

pub fn shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if inputs[0].len() < 2 {
        return Err("softmax needs an axis 1".into());
    }
    Ok(inputs[0].clone())
}

pub fn grad_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    if inputs[0] != inputs[1] {
        return Err(format!("y {:?} and dy {:?} differ", inputs[0], inputs[1]));
    }
    shape(&inputs[..1])
}

/// The indices of each line along axis 1 of a tensor of this shape, one line per position on
/// the other axes (per `n` of `[N,K]`, per `n, h, w` of `[N,C,H,W]`).
fn lines(shape: &[usize]) -> impl Iterator<Item = Vec<usize>> {
    let (batch, extent) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    (0..batch).flat_map(move |n| {
        (0..inner).map(move |i| (0..extent).map(|c| (n * extent + c) * inner + i).collect())
    })
}

pub fn eval(inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let mut y = Tensor::full(x.shape.clone(), 0.0);
    for line in lines(&x.shape) {
        // Shifting by the maximum keeps exp from overflowing and leaves the result unchanged.
        let max = line
            .iter()
            .map(|&i| x.data[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for &i in &line {
            y.data[i] = (x.data[i] - max).exp();
            sum += y.data[i];
        }
        for &i in &line {
            y.data[i] /= sum;
        }
    }
    y
}

pub fn eval_grad(inputs: &[&Tensor]) -> Tensor {
    let (y, dy) = (inputs[0], inputs[1]);
    let mut dx = Tensor::full(y.shape.clone(), 0.0);
    for line in lines(&y.shape) {
        let dot: f64 = line.iter().map(|&i| dy.data[i] * y.data[i]).sum();
        for &i in &line {
            dx.data[i] = y.data[i] * (dy.data[i] - dot);
        }
    }
    dx
}

pub fn vjp(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    vec![Some(graph.op(
        OpKind::SoftmaxGrad,
        &[op.output, grad],
        op.layer.as_deref(),
    ))]
}

// CODEGEN-STUB: replaced by the real code-generation rules.
pub fn emit(
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (sink, inputs, output);
    panic!("internal error: no code generation for `emit` yet");
}
pub fn emit_grad(
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (sink, inputs, output);
    panic!("internal error: no code generation for `emit_grad` yet");
}
