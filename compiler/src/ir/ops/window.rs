//! The sum over a window of neighbouring channels, local response normalization's core.
//! For an odd window centred on each channel the op is its own adjoint.
//!
//! Generated code runs one task per output plane, summing whole input planes in f32x4 steps:
//! the window of a channel away from the edges is `size` planes at constant distances, unrolled;
//! the few channels at the edges count their planes at run time.

use super::{arity, OpKind};
use crate::codegen::emit::Emitter;
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};

pub fn shape(size: usize, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if size.is_multiple_of(2) {
        return Err(format!("window size {size} is not odd"));
    }
    if inputs[0].len() != 4 {
        return Err("expected x [N,C,H,W]".into());
    }
    Ok(inputs[0].clone())
}

pub fn eval(size: usize, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let &[n, c, h, w] = x.shape.as_slice() else {
        unreachable!("verified shapes are 4-D")
    };
    let (half, plane) = (size / 2, h * w);
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let window = ch.saturating_sub(half)..(ch + half + 1).min(c);
            for k in 0..plane {
                y[(b * c + ch) * plane + k] = window
                    .clone()
                    .map(|cw| x.data[(b * c + cw) * plane + k])
                    .sum();
            }
        }
    }
    Tensor::new(x.shape.clone(), y)
}

pub fn vjp(size: usize, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let dx = graph.op(
        OpKind::ChannelWindowSum { size },
        &[grad],
        op.layer.as_deref(),
    );
    vec![Some(dx)]
}

pub fn emit(size: usize, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let &[n, channels, h, w] = output.shape.as_slice() else {
        unreachable!("verified shapes are 4-D")
    };
    let (half, plane) = (size / 2, h * w);
    if plane == 0 {
        return;
    }
    let (x_slot, y_slot) = (inputs[0].slot, output.slot);
    // Channels `half .. channels - half` have whole windows, unrolled unless very wide.
    let interior = if size <= UNROLLED_TERMS {
        channels.saturating_sub(2 * half)
    } else {
        0
    };
    sink.kernel(n * channels, 0, |e| {
        let (x, y) = (e.buffer(x_slot), e.buffer(y_slot));
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let out = e.b.ins().imul_imm_s(task, plane as i64);
            let channel = e.b.ins().urem_imm_s(task, channels as i64);
            let planes = Planes { x, y, out, plane };
            let edge = |e: &mut Emitter| {
                // The window's first channel and its number of channels, clipped to the edges.
                let low = e.b.ins().iadd_imm_s(channel, -(half as i64));
                let zero = e.int(0);
                let low = e.b.ins().smax(low, zero);
                let high = e.b.ins().iadd_imm_s(channel, half as i64 + 1);
                let last = e.int(channels as i64);
                let high = e.b.ins().smin(high, last);
                let count = e.b.ins().isub(high, low);
                let start = e.b.ins().isub(task, channel);
                let start = e.b.ins().iadd(start, low);
                let first = e.b.ins().imul_imm_s(start, plane as i64);
                planes.sum(e, first, Terms::Counted(count));
            };
            if interior == 0 {
                // Every channel is at an edge, or the window is too wide to unroll.
                edge(e);
                return;
            }
            // `channel - half < interior` as unsigned numbers: the channel is away from the edges.
            let shifted = e.b.ins().iadd_imm_s(channel, -(half as i64));
            let inside =
                e.b.ins()
                    .icmp_imm_s(IntCC::UnsignedLessThan, shifted, interior as i64);
            e.if_else(
                inside,
                |e| {
                    let start = e.b.ins().iadd_imm_s(task, -(half as i64));
                    let first = e.b.ins().imul_imm_s(start, plane as i64);
                    planes.sum(e, first, Terms::Fixed(size));
                },
                edge,
            );
        });
    });
}

/// The widest window whose planes are unrolled.
const UNROLLED_TERMS: usize = 32;

/// How many consecutive input planes a window sums.
#[derive(Clone, Copy)]
enum Terms {
    Fixed(usize),
    /// A count known at run time (at least 1).
    Counted(Value),
}

/// One output plane of a kernel: `y` from `out` is a sum of planes of `x`, `plane` elements each.
#[derive(Clone, Copy)]
struct Planes {
    x: Value,
    y: Value,
    out: Value,
    plane: usize,
}

impl Planes {
    /// Sets the output plane to the sum, in order, of the input planes from element `first`.
    fn sum(self, e: &mut Emitter, first: Value, terms: Terms) {
        let unroll = match terms {
            Terms::Fixed(_) => 4,
            Terms::Counted(_) => 1,
        };
        let stride = self.plane as i64;
        e.vector_range(0, stride, unroll, |e, k, ty| {
            let index = e.b.ins().iadd(first, k);
            let mut sum = e.load(ty, Emitter::frozen(), self.x, index, 0);
            match terms {
                Terms::Fixed(count) => {
                    for t in 1..count as i64 {
                        let v = e.load(ty, Emitter::frozen(), self.x, index, t * stride);
                        sum = e.b.ins().fadd(sum, v);
                    }
                }
                Terms::Counted(count) => {
                    let acc = e.variable(ty, sum);
                    let one = e.int(1);
                    e.for_loop(one, count, 1, |e, t| {
                        let down = e.b.ins().imul_imm_s(t, stride);
                        let index = e.b.ins().iadd(index, down);
                        let v = e.load(ty, Emitter::frozen(), self.x, index, 0);
                        let old = e.get(acc);
                        let new = e.b.ins().fadd(old, v);
                        e.set(acc, new);
                    });
                    sum = e.get(acc);
                }
            }
            let index = e.b.ins().iadd(self.out, k);
            e.store(Emitter::mutable(), sum, self.y, index, 0);
        });
    }
}
