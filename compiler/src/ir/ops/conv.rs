//! 2-D convolution (cross-correlation, NCHW x OIHW) and its two backward ops: the gradient with
//! respect to the input and with respect to the weight.

use super::{arity, ConvAttrs, OpKind};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};

/// Output extent of one spatial axis, or `None` when the dilated kernel does not fit.
pub fn out_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: (usize, usize),
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (input + pad.0 + pad.1)
        .checked_sub(span)
        .map(|room| room / stride + 1)
}

fn out_hw(a: &ConvAttrs, hw: [usize; 2], kernel: [usize; 2]) -> Result<[usize; 2], String> {
    let h = out_extent(
        hw[0],
        kernel[0],
        a.stride[0],
        a.dilation[0],
        (a.pad[0], a.pad[1]),
    );
    let w = out_extent(
        hw[1],
        kernel[1],
        a.stride[1],
        a.dilation[1],
        (a.pad[2], a.pad[3]),
    );
    match (h, w) {
        (Some(h), Some(w)) => Ok([h, w]),
        _ => Err(format!("kernel {kernel:?} does not fit input {hw:?}")),
    }
}

fn check_attrs(a: &ConvAttrs) -> Result<(), String> {
    if a.groups == 0 || a.stride.contains(&0) || a.dilation.contains(&0) {
        return Err("groups, strides and dilations must be positive".into());
    }
    Ok(())
}

pub fn shape(a: &ConvAttrs, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    check_attrs(a)?;
    let (&[n, c, h, w], &[o, cg, kh, kw]) = (inputs[0].as_slice(), inputs[1].as_slice()) else {
        return Err("expected x [N,C,H,W] and w [O,C/g,kh,kw]".into());
    };
    if c != cg * a.groups || o % a.groups != 0 || kh == 0 || kw == 0 {
        return Err(format!(
            "weight {:?} does not fit {c} input channels in {} groups",
            inputs[1], a.groups
        ));
    }
    let [oh, ow] = out_hw(a, [h, w], [kh, kw])?;
    Ok(vec![n, o, oh, ow])
}

pub fn input_grad_shape(a: &ConvAttrs, hw: [usize; 2], inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    check_attrs(a)?;
    let (&[n, o, oh, ow], &[wo, cg, kh, kw]) = (inputs[0].as_slice(), inputs[1].as_slice()) else {
        return Err("expected dy [N,O,OH,OW] and w [O,C/g,kh,kw]".into());
    };
    if o != wo || kh == 0 || kw == 0 || o % a.groups != 0 || out_hw(a, hw, [kh, kw])? != [oh, ow] {
        return Err(format!(
            "dy {:?} and w {:?} do not fit input {hw:?}",
            inputs[0], inputs[1]
        ));
    }
    Ok(vec![n, cg * a.groups, hw[0], hw[1]])
}

pub fn weight_grad_shape(
    a: &ConvAttrs,
    kernel: [usize; 2],
    inputs: &[&Shape],
) -> Result<Shape, String> {
    arity(inputs, 2)?;
    check_attrs(a)?;
    let (&[n, c, h, w], &[dn, o, oh, ow]) = (inputs[0].as_slice(), inputs[1].as_slice()) else {
        return Err("expected x [N,C,H,W] and dy [N,O,OH,OW]".into());
    };
    if n != dn
        || c % a.groups != 0
        || o % a.groups != 0
        || kernel.contains(&0)
        || out_hw(a, [h, w], kernel)? != [oh, ow]
    {
        return Err(format!(
            "x {:?} and dy {:?} do not fit kernel {kernel:?}",
            inputs[0], inputs[1]
        ));
    }
    Ok(vec![o, c / a.groups, kernel[0], kernel[1]])
}

/// Visits every product term of the convolution of `x` by `w` into `y` (shapes `[N,C,H,W]`,
/// `[O,C/g,kh,kw]`, `[N,O,OH,OW]`) as `visit(x, w, y)`, flat indices of the three elements it
/// involves; taps that land in the padding are skipped. The forward op and both backward ops are
/// this one loop with the roles exchanged, which makes each backward op the exact adjoint.
fn for_each_tap(
    a: &ConvAttrs,
    x: &[usize],
    w: &[usize],
    y: &[usize],
    mut visit: impl FnMut(usize, usize, usize),
) {
    let (&[n, c, h, wd], &[o, cg, kh, kw], &[_, _, oh, ow]) = (x, w, y) else {
        unreachable!("verified shapes are 4-D")
    };
    let per_group = o / a.groups;
    for b in 0..n {
        for oc in 0..o {
            let group = oc / per_group;
            for i in 0..oh {
                for j in 0..ow {
                    let yi = ((b * o + oc) * oh + i) * ow + j;
                    for ci in 0..cg {
                        let xc = group * cg + ci;
                        for p in 0..kh {
                            let Some(r) = tap(i, p, a.stride[0], a.dilation[0], a.pad[0], h) else {
                                continue;
                            };
                            for q in 0..kw {
                                let Some(s) = tap(j, q, a.stride[1], a.dilation[1], a.pad[2], wd)
                                else {
                                    continue;
                                };
                                visit(
                                    ((b * c + xc) * h + r) * wd + s,
                                    ((oc * cg + ci) * kh + p) * kw + q,
                                    yi,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The input coordinate that kernel position `k` of output position `out` reads along one axis,
/// or `None` in the padding.
fn tap(
    out: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad_before: usize,
    extent: usize,
) -> Option<usize> {
    (out * stride + k * dilation)
        .checked_sub(pad_before)
        .filter(|&v| v < extent)
}

pub fn eval(a: &ConvAttrs, inputs: &[&Tensor]) -> Tensor {
    let (x, w) = (inputs[0], inputs[1]);
    let y_shape = shape(a, &[&x.shape, &w.shape]).expect("verified shapes fit");
    let mut y = vec![0.0; y_shape.iter().product()];
    for_each_tap(a, &x.shape, &w.shape, &y_shape, |xi, wi, yi| {
        y[yi] += x.data[xi] * w.data[wi]
    });
    Tensor::new(y_shape, y)
}

pub fn eval_input_grad(a: &ConvAttrs, hw: [usize; 2], inputs: &[&Tensor]) -> Tensor {
    let (dy, w) = (inputs[0], inputs[1]);
    let x_shape = input_grad_shape(a, hw, &[&dy.shape, &w.shape]).expect("verified shapes fit");
    let mut dx = vec![0.0; x_shape.iter().product()];
    for_each_tap(a, &x_shape, &w.shape, &dy.shape, |xi, wi, yi| {
        dx[xi] += dy.data[yi] * w.data[wi]
    });
    Tensor::new(x_shape, dx)
}

pub fn eval_weight_grad(a: &ConvAttrs, kernel: [usize; 2], inputs: &[&Tensor]) -> Tensor {
    let (x, dy) = (inputs[0], inputs[1]);
    let w_shape =
        weight_grad_shape(a, kernel, &[&x.shape, &dy.shape]).expect("verified shapes fit");
    let mut dw = vec![0.0; w_shape.iter().product()];
    for_each_tap(a, &x.shape, &w_shape, &dy.shape, |xi, wi, yi| {
        dw[wi] += x.data[xi] * dy.data[yi]
    });
    Tensor::new(w_shape, dw)
}

pub fn vjp(a: &ConvAttrs, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let (x, w) = (op.inputs[0], op.inputs[1]);
    let hw = [graph.shape(x)[2], graph.shape(x)[3]];
    let kernel = [graph.shape(w)[2], graph.shape(w)[3]];
    let layer = op.layer.as_deref();
    let dx = graph.op(OpKind::Conv2dInputGrad(*a, hw), &[grad, w], layer);
    let dw = graph.op(OpKind::Conv2dWeightGrad(*a, kernel), &[x, grad], layer);
    vec![Some(dx), Some(dw)]
}

// CODEGEN-STUB: replaced by the real code-generation rules.
pub fn emit(
    a: &ConvAttrs,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (a, sink, inputs, output);
    panic!("internal error: no code generation for `emit` yet");
}
pub fn emit_input_grad(
    a: &ConvAttrs,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (a, sink, inputs, output);
    panic!("internal error: no code generation for `emit_input_grad` yet");
}
pub fn emit_weight_grad(
    a: &ConvAttrs,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (a, sink, inputs, output);
    panic!("internal error: no code generation for `emit_weight_grad` yet");
}
