//! Ops that move elements without arithmetic, and their adjoints: reshape, broadcast and its
//! adjoint `sum_to`, concatenation and slicing.

use super::elementwise::{broadcast, broadcast_indices};
use super::{arity, OpKind};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};

pub fn reshape_shape(shape: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if shape.iter().product::<usize>() != inputs[0].iter().product::<usize>() {
        return Err(format!("cannot reshape {:?} to {shape:?}", inputs[0]));
    }
    Ok(shape.clone())
}

pub fn sum_to_shape(shape: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if shape.len() > inputs[0].len() || broadcast(shape, inputs[0])? != *inputs[0] {
        return Err(format!("{:?} does not sum to {shape:?}", inputs[0]));
    }
    Ok(shape.clone())
}

pub fn broadcast_shape(shape: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if inputs[0].len() > shape.len() || broadcast(inputs[0], shape)? != *shape {
        return Err(format!("{:?} does not broadcast to {shape:?}", inputs[0]));
    }
    Ok(shape.clone())
}

pub fn concat_shape(axis: usize, inputs: &[&Shape]) -> Result<Shape, String> {
    let first = inputs.first().ok_or("concat needs inputs")?;
    if axis >= first.len() {
        return Err(format!("axis {axis} out of range for {first:?}"));
    }
    let mut out = (*first).clone();
    out[axis] = 0;
    for s in inputs {
        let same_elsewhere =
            s.len() == first.len() && (0..s.len()).all(|i| i == axis || s[i] == first[i]);
        if !same_elsewhere {
            return Err(format!(
                "cannot concatenate {first:?} and {s:?} along axis {axis}"
            ));
        }
        out[axis] += s[axis];
    }
    Ok(out)
}

pub fn slice_shape(
    axis: usize,
    start: usize,
    len: usize,
    inputs: &[&Shape],
) -> Result<Shape, String> {
    arity(inputs, 1)?;
    let s = inputs[0];
    if axis >= s.len() || start + len > s[axis] || len == 0 {
        return Err(format!(
            "slice {start}..{} of axis {axis} out of range for {s:?}",
            start + len
        ));
    }
    let mut out = s.clone();
    out[axis] = len;
    Ok(out)
}

pub fn eval_reshape(shape: &Shape, inputs: &[&Tensor]) -> Tensor {
    Tensor::new(shape.clone(), inputs[0].data.clone())
}

pub fn eval_sum_to(shape: &Shape, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let mut out = Tensor::full(shape.clone(), 0.0);
    for (&target, &v) in broadcast_indices(shape, &x.shape).iter().zip(&x.data) {
        out.data[target] += v;
    }
    out
}

pub fn eval_broadcast(shape: &Shape, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let data = broadcast_indices(&x.shape, shape)
        .iter()
        .map(|&i| x.data[i])
        .collect();
    Tensor::new(shape.clone(), data)
}

/// `(outer, inner)`: the products of the extents before `axis` and after it. A tensor is `outer`
/// contiguous blocks of `shape[axis]` runs of `inner` elements.
fn around(shape: &[usize], axis: usize) -> (usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis + 1..].iter().product(),
    )
}

pub fn eval_concat(axis: usize, inputs: &[&Tensor]) -> Tensor {
    let shapes: Vec<&Shape> = inputs.iter().map(|t| &t.shape).collect();
    let shape = concat_shape(axis, &shapes).expect("verified shapes concatenate");
    let (outer, inner) = around(&shape, axis);
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for t in inputs {
            let block = t.shape[axis] * inner;
            data.extend_from_slice(&t.data[o * block..(o + 1) * block]);
        }
    }
    Tensor::new(shape, data)
}

pub fn eval_slice(axis: usize, start: usize, len: usize, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let (outer, inner) = around(&x.shape, axis);
    let mut data = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let from = (o * x.shape[axis] + start) * inner;
        data.extend_from_slice(&x.data[from..from + len * inner]);
    }
    let mut shape = x.shape.clone();
    shape[axis] = len;
    Tensor::new(shape, data)
}

/// The one-input op `kind` applied to `grad`, in the layer of `op`.
fn unary(kind: OpKind, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    vec![Some(graph.op(kind, &[grad], op.layer.as_deref()))]
}

pub fn vjp_reshape(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let shape = graph.shape(op.inputs[0]).clone();
    unary(OpKind::Reshape(shape), op, graph, grad)
}

pub fn vjp_sum_to(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let shape = graph.shape(op.inputs[0]).clone();
    unary(OpKind::Broadcast(shape), op, graph, grad)
}

pub fn vjp_broadcast(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let shape = graph.shape(op.inputs[0]).clone();
    unary(OpKind::SumTo(shape), op, graph, grad)
}

pub fn vjp_concat(axis: usize, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let mut start = 0;
    op.inputs
        .iter()
        .map(|&input| {
            let len = graph.shape(input)[axis];
            let slice = OpKind::Slice { axis, start, len };
            start += len;
            Some(graph.op(slice, &[grad], op.layer.as_deref()))
        })
        .collect()
}

pub fn vjp_slice(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let OpKind::Slice { axis, start, len } = op.kind else {
        unreachable!(
            "internal error: slice's rule called on `{}`",
            op.kind.name()
        )
    };
    let shape = graph.shape(op.inputs[0]).clone();
    // Zeros where the slice did not read, on either side of `grad`.
    let mut zeros = |extent: usize| {
        let mut shape = shape.clone();
        shape[axis] = extent;
        graph.op(OpKind::Fill { value: 0.0, shape }, &[], op.layer.as_deref())
    };
    let mut parts = Vec::new();
    if start > 0 {
        parts.push(zeros(start));
    }
    parts.push(grad);
    let after = shape[axis] - start - len;
    if after > 0 {
        parts.push(zeros(after));
    }
    if parts.len() == 1 {
        return vec![Some(grad)];
    }
    vec![Some(graph.op(
        OpKind::Concat { axis },
        &parts,
        op.layer.as_deref(),
    ))]
}

// CODEGEN-STUB: replaced by the real code-generation rules.
pub fn emit_sum_to(
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (sink, inputs, output);
    panic!("internal error: no code generation for `emit_sum_to` yet");
}
pub fn emit_broadcast(
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (sink, inputs, output);
    panic!("internal error: no code generation for `emit_broadcast` yet");
}
pub fn emit_concat(
    axis: usize,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (axis, sink, inputs, output);
    panic!("internal error: no code generation for `emit_concat` yet");
}
pub fn emit_slice(
    axis: usize,
    start: usize,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (axis, start, sink, inputs, output);
    panic!("internal error: no code generation for `emit_slice` yet");
}
