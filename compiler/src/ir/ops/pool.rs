//! Max and average pooling over 2-D windows, and their backward ops.

use super::{arity, OpKind, PoolAttrs};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};
use std::ops::Range;

/// Output extent of one axis (PyTorch's rule, ceil mode included), or `None` when the window
/// does not fit.
pub fn out_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: (usize, usize),
    ceil: bool,
) -> Option<usize> {
    let room = (input + pad.0 + pad.1).checked_sub(kernel)?;
    if !ceil {
        return Some(room / stride + 1);
    }
    let mut out = room.div_ceil(stride) + 1;
    // The last window must start inside the input or the leading padding.
    if (out - 1) * stride >= input + pad.0 {
        out -= 1;
    }
    Some(out)
}

fn out_hw(a: &PoolAttrs, hw: [usize; 2]) -> Result<[usize; 2], String> {
    if a.kernel.contains(&0) || a.stride.contains(&0) {
        return Err("kernel and stride must be positive".into());
    }
    let h = out_extent(
        hw[0],
        a.kernel[0],
        a.stride[0],
        (a.pad[0], a.pad[1]),
        a.ceil,
    );
    let w = out_extent(
        hw[1],
        a.kernel[1],
        a.stride[1],
        (a.pad[2], a.pad[3]),
        a.ceil,
    );
    match (h, w) {
        (Some(h), Some(w)) => Ok([h, w]),
        _ => Err(format!("window {:?} does not fit input {hw:?}", a.kernel)),
    }
}

pub fn shape(a: &PoolAttrs, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    let &[n, c, h, w] = inputs[0].as_slice() else {
        return Err("expected x [N,C,H,W]".into());
    };
    let [oh, ow] = out_hw(a, [h, w])?;
    Ok(vec![n, c, oh, ow])
}

pub fn max_grad_shape(a: &PoolAttrs, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    let y = shape(a, &inputs[..1])?;
    if &y != inputs[1] {
        return Err(format!("dy {:?} is not the output shape {y:?}", inputs[1]));
    }
    Ok(inputs[0].clone())
}

pub fn avg_grad_shape(a: &PoolAttrs, hw: [usize; 2], inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    let &[n, c, oh, ow] = inputs[0].as_slice() else {
        return Err("expected dy [N,C,OH,OW]".into());
    };
    if out_hw(a, hw)? != [oh, ow] {
        return Err(format!("dy {:?} does not fit input {hw:?}", inputs[0]));
    }
    Ok(vec![n, c, hw[0], hw[1]])
}

/// Visits every pooling window over an input of shape `x` as `visit(y, cells, padded)`: the
/// flat index of the output element, the flat indices of the window's cells inside the input in
/// row-major window order, and how many of its cells lie within the padded input (PyTorch's
/// `count_include_pad` divisor: in ceil mode the last window may overhang the padding too).
/// With padding wider than half the kernel, which PyTorch forbids, a window may have no cells.
fn for_each_window(a: &PoolAttrs, x: &[usize], mut visit: impl FnMut(usize, &[usize], usize)) {
    let &[n, c, h, w] = x else {
        unreachable!("verified shapes are 4-D")
    };
    let [oh, ow] = out_hw(a, [h, w]).expect("verified shapes fit");
    let mut cells = Vec::new();
    for plane in 0..n * c {
        for i in 0..oh {
            let (rows, padded_rows) = span(i, a.kernel[0], a.stride[0], (a.pad[0], a.pad[1]), h);
            for j in 0..ow {
                let (cols, padded_cols) =
                    span(j, a.kernel[1], a.stride[1], (a.pad[2], a.pad[3]), w);
                cells.clear();
                for r in rows.clone() {
                    cells.extend(cols.clone().map(|s| (plane * h + r) * w + s));
                }
                visit((plane * oh + i) * ow + j, &cells, padded_rows * padded_cols);
            }
        }
    }
}

/// The input coordinates that window `out` covers along one axis, and how many of its positions
/// lie within the padded axis.
fn span(
    out: usize,
    kernel: usize,
    stride: usize,
    pad: (usize, usize),
    extent: usize,
) -> (Range<usize>, usize) {
    // In padded coordinates, where the input starts at `pad.0`.
    let start = out * stride;
    let end = (start + kernel).min(pad.0 + extent + pad.1);
    let inside = start.max(pad.0) - pad.0..end.min(pad.0 + extent).saturating_sub(pad.0);
    (inside, end - start)
}

/// The cell holding the window's maximum, the first in window order among equals; padding never
/// wins, so an empty window has none.
fn first_max(x: &[f64], cells: &[usize]) -> Option<usize> {
    cells
        .iter()
        .copied()
        .reduce(|best, k| if x[k] > x[best] { k } else { best })
}

/// The weight of each cell in a window's average. A window with no cells averages to the empty
/// sum, 0, whatever its divisor.
fn avg_weight(a: &PoolAttrs, cells: &[usize], padded: usize) -> f64 {
    let divisor = if a.include_pad { padded } else { cells.len() };
    1.0 / divisor as f64
}

pub fn eval_max(a: &PoolAttrs, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let y_shape = shape(a, &[&x.shape]).expect("verified shapes fit");
    let mut y = vec![0.0; y_shape.iter().product()];
    for_each_window(a, &x.shape, |yi, cells, _| {
        y[yi] = first_max(&x.data, cells).map_or(0.0, |k| x.data[k]);
    });
    Tensor::new(y_shape, y)
}

pub fn eval_max_grad(a: &PoolAttrs, inputs: &[&Tensor]) -> Tensor {
    let (x, dy) = (inputs[0], inputs[1]);
    let mut dx = vec![0.0; x.len()];
    for_each_window(a, &x.shape, |yi, cells, _| {
        if let Some(k) = first_max(&x.data, cells) {
            dx[k] += dy.data[yi];
        }
    });
    Tensor::new(x.shape.clone(), dx)
}

pub fn eval_avg(a: &PoolAttrs, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let y_shape = shape(a, &[&x.shape]).expect("verified shapes fit");
    let mut y = vec![0.0; y_shape.iter().product()];
    for_each_window(a, &x.shape, |yi, cells, padded| {
        let weight = avg_weight(a, cells, padded);
        y[yi] = cells.iter().map(|&k| x.data[k] * weight).sum();
    });
    Tensor::new(y_shape, y)
}

pub fn eval_avg_grad(a: &PoolAttrs, hw: [usize; 2], inputs: &[&Tensor]) -> Tensor {
    let dy = inputs[0];
    let x_shape = avg_grad_shape(a, hw, &[&dy.shape]).expect("verified shapes fit");
    let mut dx = vec![0.0; x_shape.iter().product()];
    for_each_window(a, &x_shape, |yi, cells, padded| {
        let weight = avg_weight(a, cells, padded);
        for &k in cells {
            dx[k] += dy.data[yi] * weight;
        }
    });
    Tensor::new(x_shape, dx)
}

pub fn vjp_max(a: &PoolAttrs, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let dx = graph.op(
        OpKind::MaxPoolGrad(*a),
        &[op.inputs[0], grad],
        op.layer.as_deref(),
    );
    vec![Some(dx)]
}

pub fn vjp_avg(a: &PoolAttrs, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let x = graph.shape(op.inputs[0]);
    let hw = [x[2], x[3]];
    let dx = graph.op(OpKind::AvgPoolGrad(*a, hw), &[grad], op.layer.as_deref());
    vec![Some(dx)]
}

// CODEGEN-STUB: replaced by the real code-generation rules.
pub fn emit_max(
    a: &PoolAttrs,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (a, sink, inputs, output);
    panic!("internal error: no code generation for `emit_max` yet");
}
pub fn emit_max_grad(
    a: &PoolAttrs,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (a, sink, inputs, output);
    panic!("internal error: no code generation for `emit_max_grad` yet");
}
pub fn emit_avg(
    a: &PoolAttrs,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (a, sink, inputs, output);
    panic!("internal error: no code generation for `emit_avg` yet");
}
pub fn emit_avg_grad(
    a: &PoolAttrs,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (a, sink, inputs, output);
    panic!("internal error: no code generation for `emit_avg_grad` yet");
}
