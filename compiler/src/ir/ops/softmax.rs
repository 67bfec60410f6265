//! Softmax over axis 1 (the classes of `[N,K]`, the channels of `[N,C,H,W]`), computed stably
//! (shifted by the maximum), and its backward op.
//!
//! In generated code both work line by line (`Lines`): a contiguous line of `[N,K]` is
//! vectorised along itself, with horizontal reductions; the lines of `[N,C,H,W]`, `H*W` apart,
//! are vectorised across four neighbouring lines. The losses that contain a softmax reuse them.

use super::layout::{reduce_range, Reduce, Units};
use super::{arity, OpKind};
use crate::codegen::emit::{Emitter, Slot, F32};
use crate::codegen::math;
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

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

/// Positions on the trailing axes (`H*W`) one task's lines may span, when lines are
/// vectorised across.
const POSITIONS: usize = 256;
/// f32x4 steps per unrolled iteration along a contiguous line.
const UNROLL: usize = 4;

/// Lines along axis 1 that a kernel handles at once: one contiguous line (of `[N,K]`), or one
/// line per lane of `ty` (of `[N,C,H,W]`: neighbouring positions, so the lanes of a vector are
/// neighbouring elements).
pub(super) struct Lines {
    /// The index of the first line's first element.
    pub start: Value,
    /// Which line the first is, counting the positions on the other axes in row-major order:
    /// the row `n` of `[N,K]`.
    pub number: Value,
    extent: usize,
    /// Elements from one element of a line to the next: 1 for contiguous lines.
    stride: i64,
    /// The type of per-line values (maxima, sums): F32 for a contiguous line, else one lane
    /// per line.
    pub ty: Type,
}

impl Lines {
    /// A per-line `value` in the lanes of `ty`, for an element-wise body of that type.
    pub(super) fn fit(&self, e: &mut Emitter, value: Value, ty: Type) -> Value {
        if ty == self.ty {
            value
        } else {
            e.splat(ty, value)
        }
    }

    /// Reduces `term(index, ty)` over each line: one value per line, of type `self.ty`.
    pub(super) fn reduce(
        &self,
        e: &mut Emitter,
        op: Reduce,
        mut term: impl FnMut(&mut Emitter, Value, Type) -> Value,
    ) -> Value {
        if self.stride == 1 {
            let end = e.b.ins().iadd_imm_s(self.start, self.extent as i64);
            return reduce_range(e, self.start, end, op, term);
        }
        let identity = op.start(e, self.ty);
        let accumulator = e.variable(self.ty, identity);
        self.map(e, |e, index, ty| {
            let t = term(e, index, ty);
            let old = e.get(accumulator);
            let new = op.combine(e, old, t);
            e.set(accumulator, new);
        });
        e.get(accumulator)
    }

    /// Runs `body(index, ty)` over every element of the lines, in order along them.
    pub(super) fn map(&self, e: &mut Emitter, mut body: impl FnMut(&mut Emitter, Value, Type)) {
        if self.stride == 1 {
            let end = e.b.ins().iadd_imm_s(self.start, self.extent as i64);
            e.vector_loop(self.start, end, UNROLL, body);
            return;
        }
        e.for_range(0, self.extent as i64, |e, k| {
            let step = e.b.ins().imul_imm_s(k, self.stride);
            let index = e.b.ins().iadd(self.start, step);
            body(e, index, self.ty);
        });
    }

    /// Multiplies the elements of each line of `y` by the line's `factor`.
    pub(super) fn scale(&self, e: &mut Emitter, y: Value, factor: Value) {
        self.map(e, |e, i, ty| {
            let factor = self.fit(e, factor, ty);
            let v = e.load(ty, Emitter::mutable(), y, i, 0);
            let scaled = e.b.ins().fmul(v, factor);
            e.store(Emitter::mutable(), scaled, y, i, 0);
        });
    }

    /// The maximum of `x` over each line.
    pub(super) fn max(&self, e: &mut Emitter, x: Value) -> Value {
        self.reduce(e, Reduce::Max, |e, i, ty| {
            e.load(ty, Emitter::frozen(), x, i, 0)
        })
    }

    /// The sum of `exp(x - max)` over each line, storing the terms in `store` when given.
    pub(super) fn exponentials(
        &self,
        e: &mut Emitter,
        x: Value,
        max: Value,
        store: Option<Value>,
    ) -> Value {
        self.reduce(e, Reduce::Sum, |e, i, ty| {
            let v = e.load(ty, Emitter::frozen(), x, i, 0);
            let max = self.fit(e, max, ty);
            let shifted = e.b.ins().fsub(v, max);
            let exp = math::exp(e, shifted, ty);
            if let Some(y) = store {
                e.store(Emitter::mutable(), exp, y, i, 0);
            }
            exp
        })
    }
}

/// Builds a kernel that runs `body(bases, lines)` over every line along axis 1 of a tensor of
/// `shape`, `bases` being the addresses of `slots`' buffers. Tasks are rows of `[N,K]`, or
/// blocks of `POSITIONS` positions of one image of `[N,C,H,W]`.
pub(super) fn for_each_line(
    sink: &mut KernelSink,
    shape: &[usize],
    slots: &[Slot],
    body: impl Fn(&mut Emitter, &[Value], &Lines),
) {
    let (batch, extent) = (shape[0], shape[1]);
    let positions: usize = shape[2..].iter().product();
    let blocks = positions.div_ceil(POSITIONS);
    let units = Units::new(batch * blocks, extent * positions.min(POSITIONS));
    sink.kernel(units.tasks(), 0, |e| {
        let bases: Vec<Value> = slots.iter().map(|&slot| e.buffer(slot)).collect();
        units.for_each(e, |e, unit| {
            if positions == 1 {
                let start = e.b.ins().imul_imm_s(unit, extent as i64);
                let lines = Lines {
                    start,
                    number: unit,
                    extent,
                    stride: 1,
                    ty: F32,
                };
                return body(e, &bases, &lines);
            }
            let n = e.b.ins().udiv_imm_s(unit, blocks as i64);
            let block = e.b.ins().urem_imm_s(unit, blocks as i64);
            let lo = e.b.ins().imul_imm_s(block, POSITIONS as i64);
            let hi = e.b.ins().iadd_imm_s(lo, POSITIONS as i64);
            let limit = e.int(positions as i64);
            let hi = e.b.ins().smin(hi, limit);
            let image = e.b.ins().imul_imm_s(n, (extent * positions) as i64);
            let first = e.b.ins().imul_imm_s(n, positions as i64);
            e.vector_loop(lo, hi, 1, |e, i, ty| {
                let lines = Lines {
                    start: e.b.ins().iadd(image, i),
                    number: e.b.ins().iadd(first, i),
                    extent,
                    stride: positions as i64,
                    ty,
                };
                body(e, &bases, &lines);
            });
        });
    });
}

/// `y = exp(x - max) / sum`, line by line: the maximum, then the exponentials (stored) and
/// their sum, then the scaling by `1 / sum` (one division per line, not per element).
pub fn emit(sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let slots = [inputs[0].slot, output.slot];
    for_each_line(sink, &output.shape, &slots, |e, bases, lines| {
        let (x, y) = (bases[0], bases[1]);
        let max = lines.max(e, x);
        let sum = lines.exponentials(e, x, max, Some(y));
        let one = e.constant(lines.ty, 1.0);
        let inverse = e.b.ins().fdiv(one, sum);
        lines.scale(e, y, inverse);
    });
}

/// `dx = y * (dy - dot)`, `dot` the sum of `dy * y` over each line.
pub fn emit_grad(sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let slots = [inputs[0].slot, inputs[1].slot, output.slot];
    for_each_line(sink, &output.shape, &slots, |e, bases, lines| {
        let (y, dy, dx) = (bases[0], bases[1], bases[2]);
        let load = |e: &mut Emitter, base, i, ty| e.load(ty, Emitter::frozen(), base, i, 0);
        let dot = lines.reduce(e, Reduce::Sum, |e, i, ty| {
            let (a, b) = (load(e, y, i, ty), load(e, dy, i, ty));
            e.b.ins().fmul(a, b)
        });
        lines.map(e, |e, i, ty| {
            let (a, b) = (load(e, y, i, ty), load(e, dy, i, ty));
            let dot = lines.fit(e, dot, ty);
            let centred = e.b.ins().fsub(b, dot);
            let d = e.b.ins().fmul(a, centred);
            e.store(Emitter::mutable(), d, dx, i, 0);
        });
    });
}
