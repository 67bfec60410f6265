//! Elementwise ops: binary ones with NumPy broadcasting, and functions of one tensor.

use super::{arity, MapFn, OpKind};
use crate::codegen::emit::{Emitter, Libcall};
use crate::codegen::math;
use crate::codegen::strided::{for_each_element, Strided};
use crate::codegen::{KernelSink, Operand};
use crate::interp::{strides, Tensor};
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// The broadcast of two shapes (NumPy's rule: align at the back; extents equal or 1).
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.len().max(b.len());
    let extent = |s: &Shape, i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (extent(a, i), extent(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

pub fn binary_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    broadcast(inputs[0], inputs[1])
}

pub fn map_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    Ok(inputs[0].clone())
}

/// For each element of a tensor of shape `to` (row-major), the index of the element of a tensor
/// of shape `from` that broadcasting `from` to `to` reads. `from` must broadcast to `to`. Reading
/// through it is broadcasting; summing back through it is `sum_to`.
pub fn broadcast_indices(from: &[usize], to: &[usize]) -> Vec<usize> {
    let offset = to.len() - from.len();
    let from_strides = strides(from);
    // How far one step along each axis of `to` moves in `from`: nothing along broadcast axes.
    let steps: Vec<usize> = (0..to.len())
        .map(|k| match k.checked_sub(offset) {
            Some(j) if from[j] != 1 => from_strides[j],
            _ => 0,
        })
        .collect();
    let to_strides = strides(to);
    (0..to.iter().product())
        .map(|flat: usize| {
            (0..to.len())
                .map(|k| flat / to_strides[k] % to[k] * steps[k])
                .sum()
        })
        .collect()
}

pub fn eval_binary(kind: &OpKind, inputs: &[&Tensor]) -> Tensor {
    let f: fn(f64, f64) -> f64 = match kind {
        OpKind::Add => |a, b| a + b,
        OpKind::Sub => |a, b| a - b,
        OpKind::Mul => |a, b| a * b,
        OpKind::Div => |a, b| a / b,
        _ => unreachable!(
            "internal error: `{}` is not a binary elementwise op",
            kind.name()
        ),
    };
    let (a, b) = (inputs[0], inputs[1]);
    let shape = broadcast(&a.shape, &b.shape).expect("verified shapes broadcast");
    let ia = broadcast_indices(&a.shape, &shape);
    let ib = broadcast_indices(&b.shape, &shape);
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| f(a.data[i], b.data[j]))
        .collect();
    Tensor::new(shape, data)
}

fn apply(f: MapFn, x: f64) -> f64 {
    match f {
        MapFn::Neg => -x,
        MapFn::Exp => x.exp(),
        MapFn::Log => x.ln(),
        MapFn::Sqrt => x.sqrt(),
        MapFn::Abs => x.abs(),
        // `signum` alone gives ±1 at ±0.
        MapFn::Sign if x == 0.0 => 0.0,
        MapFn::Sign => x.signum(),
        MapFn::Step => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        // Stable at both ends: for x far below 0, e^-x overflows to infinity and 1 / inf is the
        // right limit, 0 (the other form, e^x / (1 + e^x), is inf / inf far above 0).
        MapFn::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        MapFn::Tanh => x.tanh(),
        // Lets NaN through, as PyTorch does (`x.max(0.0)` would not).
        MapFn::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        MapFn::LeakyRelu(slope) => {
            if x > 0.0 {
                x
            } else {
                slope * x
            }
        }
        MapFn::Scale(c) => c * x,
        MapFn::AddConst(c) => x + c,
        MapFn::PowConst(p) => x.powf(p),
    }
}

pub fn eval_map(f: MapFn, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    Tensor::new(
        x.shape.clone(),
        x.data.iter().map(|&v| apply(f, v)).collect(),
    )
}

/// The gradient `grad` (shaped like the op's output) summed back to the shape of `input`, which
/// broadcasting may have enlarged.
fn reduce_to(graph: &mut Graph, grad: ValueId, input: ValueId, layer: Option<&str>) -> ValueId {
    let shape = graph.shape(input).clone();
    if *graph.shape(grad) == shape {
        grad
    } else {
        graph.op(OpKind::SumTo(shape), &[grad], layer)
    }
}

pub fn vjp_binary(
    kind: &OpKind,
    op: &Op,
    graph: &mut Graph,
    grad: ValueId,
) -> Vec<Option<ValueId>> {
    let layer = op.layer.as_deref();
    let (a, b) = (op.inputs[0], op.inputs[1]);
    let (da, db) = match kind {
        OpKind::Add => (grad, grad),
        OpKind::Sub => (grad, graph.op(OpKind::Map(MapFn::Neg), &[grad], layer)),
        OpKind::Mul => (
            graph.op(OpKind::Mul, &[grad, b], layer),
            graph.op(OpKind::Mul, &[grad, a], layer),
        ),
        OpKind::Div => {
            // d(a/b)/db = -a/b² = -(1/b)(a/b): reuses dy/b and the output.
            let da = graph.op(OpKind::Div, &[grad, b], layer);
            let da_y = graph.op(OpKind::Mul, &[da, op.output], layer);
            (da, graph.op(OpKind::Map(MapFn::Neg), &[da_y], layer))
        }
        _ => unreachable!(
            "internal error: `{}` is not a binary elementwise op",
            kind.name()
        ),
    };
    vec![
        Some(reduce_to(graph, da, a, layer)),
        Some(reduce_to(graph, db, b, layer)),
    ]
}

pub fn vjp_map(f: MapFn, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let layer = op.layer.as_deref();
    let (x, y) = (op.inputs[0], op.output);
    let map = |graph: &mut Graph, f: MapFn, v: ValueId| graph.op(OpKind::Map(f), &[v], layer);
    let mul = |graph: &mut Graph, a: ValueId, b: ValueId| graph.op(OpKind::Mul, &[a, b], layer);
    let one_minus = |graph: &mut Graph, v: ValueId| {
        let minus = map(graph, MapFn::Neg, v);
        map(graph, MapFn::AddConst(1.0), minus)
    };
    let dx = match f {
        MapFn::Sign | MapFn::Step => return vec![None],
        MapFn::AddConst(_) => grad,
        MapFn::Neg | MapFn::Scale(_) => map(graph, f, grad),
        MapFn::Exp => mul(graph, grad, y),
        MapFn::Log => graph.op(OpKind::Div, &[grad, x], layer),
        MapFn::Sqrt => {
            let half = map(graph, MapFn::Scale(0.5), grad);
            graph.op(OpKind::Div, &[half, y], layer)
        }
        MapFn::Abs => {
            let sign = map(graph, MapFn::Sign, x);
            mul(graph, grad, sign)
        }
        MapFn::Sigmoid => {
            let grad_y = mul(graph, grad, y);
            let one_minus_y = one_minus(graph, y);
            mul(graph, grad_y, one_minus_y)
        }
        MapFn::Tanh => {
            let y2 = mul(graph, y, y);
            let one_minus_y2 = one_minus(graph, y2);
            mul(graph, grad, one_minus_y2)
        }
        // From the output (y > 0 exactly where x > 0), so that the input has no reader but
        // the relu and fusion can join the relu to what computes its input.
        MapFn::Relu => {
            let step = map(graph, MapFn::Step, y);
            mul(graph, grad, step)
        }
        MapFn::LeakyRelu(slope) => {
            // slope + (1 - slope) * step(x): 1 above zero, slope below.
            let step = map(graph, MapFn::Step, x);
            let scaled = map(graph, MapFn::Scale(1.0 - slope), step);
            let derivative = map(graph, MapFn::AddConst(slope), scaled);
            mul(graph, grad, derivative)
        }
        MapFn::PowConst(p) => {
            let power = map(graph, MapFn::PowConst(p - 1.0), x);
            let derivative = map(graph, MapFn::Scale(p), power);
            mul(graph, grad, derivative)
        }
    };
    vec![Some(dx)]
}

pub fn emit_binary(kind: &OpKind, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let operands: Vec<Strided> = inputs
        .iter()
        .map(|x| Strided::broadcast(x.slot, &x.shape, &output.shape))
        .collect();
    let out = Strided::dense(output.slot, &output.shape);
    for_each_element(sink, &output.shape, &operands, &out, |e, v, _| {
        emit_binary_value(e, kind, v[0], v[1])
    });
}

/// A binary elementwise op on two values of the same type (f32 or f32x4).
pub fn emit_binary_value(e: &mut Emitter, kind: &OpKind, a: Value, b: Value) -> Value {
    let ins = e.b.ins();
    match kind {
        OpKind::Add => ins.fadd(a, b),
        OpKind::Sub => ins.fsub(a, b),
        OpKind::Mul => ins.fmul(a, b),
        OpKind::Div => ins.fdiv(a, b),
        _ => unreachable!(
            "internal error: `{}` is not a binary elementwise op",
            kind.name()
        ),
    }
}

pub fn emit_map(f: MapFn, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let x = Strided::dense(inputs[0].slot, &inputs[0].shape);
    let out = Strided::dense(output.slot, &output.shape);
    for_each_element(sink, &output.shape, &[x], &out, |e, v, ty| {
        emit_apply(e, f, v[0], ty)
    });
}

/// `apply` in generated code, on every lane of `x` (of type `ty`).
pub fn emit_apply(e: &mut Emitter, f: MapFn, x: Value, ty: Type) -> Value {
    match f {
        MapFn::Neg => e.b.ins().fneg(x),
        MapFn::Exp => math::exp(e, x, ty),
        MapFn::Log => e.libcall(Libcall::Log, x),
        MapFn::Sqrt => e.b.ins().sqrt(x),
        MapFn::Abs => e.b.ins().fabs(x),
        MapFn::Sign => {
            let (zero, one, minus) = (
                e.constant(ty, 0.0),
                e.constant(ty, 1.0),
                e.constant(ty, -1.0),
            );
            // `x + 0` is +0 at either zero and NaN at NaN, as the interpreter's sign is.
            let otherwise = e.b.ins().fadd(x, zero);
            let negative = e.select_cmp(FloatCC::LessThan, x, zero, minus, otherwise);
            e.select_cmp(FloatCC::GreaterThan, x, zero, one, negative)
        }
        MapFn::Step => {
            let (zero, one) = (e.constant(ty, 0.0), e.constant(ty, 1.0));
            e.keep_where(FloatCC::GreaterThan, [x, zero], one)
        }
        MapFn::Sigmoid => {
            let minus = e.b.ins().fneg(x);
            let exp = math::exp(e, minus, ty);
            let one = e.constant(ty, 1.0);
            let denominator = e.b.ins().fadd(one, exp);
            e.b.ins().fdiv(one, denominator)
        }
        MapFn::Tanh => e.libcall(Libcall::Tanh, x),
        MapFn::Relu => {
            // "Not below 0" rather than "above 0", which would make NaN 0.
            let zero = e.constant(ty, 0.0);
            e.keep_where(FloatCC::UnorderedOrGreaterThanOrEqual, [x, zero], x)
        }
        MapFn::LeakyRelu(slope) => {
            let zero = e.constant(ty, 0.0);
            let c = e.constant(ty, slope as f32);
            let scaled = e.b.ins().fmul(x, c);
            e.select_cmp(FloatCC::GreaterThan, x, zero, x, scaled)
        }
        MapFn::Scale(c) => {
            let c = e.constant(ty, c as f32);
            e.b.ins().fmul(x, c)
        }
        MapFn::AddConst(c) => {
            let c = e.constant(ty, c as f32);
            e.b.ins().fadd(x, c)
        }
        MapFn::PowConst(p) => emit_pow(e, x, p, ty),
    }
}

/// `x ^ p`: by multiplication for small whole powers (exact, and right for negative `x`),
/// by square roots for halves, else `exp(p log x)` (NaN for negative `x`, as `powf`).
fn emit_pow(e: &mut Emitter, x: Value, p: f64, ty: Type) -> Value {
    let one = e.constant(ty, 1.0);
    if p.fract() == 0.0 && p.abs() <= 4.0 {
        let mut result = one;
        for _ in 0..p.abs() as usize {
            result = e.b.ins().fmul(result, x);
        }
        return if p < 0.0 {
            e.b.ins().fdiv(one, result)
        } else {
            result
        };
    }
    if p == 0.5 || p == -0.5 {
        let root = e.b.ins().sqrt(x);
        return if p < 0.0 {
            e.b.ins().fdiv(one, root)
        } else {
            root
        };
    }
    let log = e.libcall(Libcall::Log, x);
    let c = e.constant(ty, p as f32);
    let scaled = e.b.ins().fmul(log, c);
    math::exp(e, scaled, ty)
}
