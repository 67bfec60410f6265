//! x as a convolution's kernels read it: a tensor, or computed by a prologue (`fuse_prologue`:
//! batch norm's apply and ReLU, a residual sum) from tensors of x's shape and per-channel ones
//! as the kernels need its elements, so that x is never written. The depthwise kernels stage
//! rows of x's planes in their scratch; a pointwise convolution's packing computes each element
//! of its B panels where it would load it; the others compute x where they copy it with its
//! padding written out (or gather its im2col rows), and their weight gradients where they copy
//! it channels last.

use super::emit::{Emitter, Slot, F32};
use super::gemm::ElementLoad;
use crate::ir::ops::fused::{emit_steps, Step};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Where a convolution's kernel reads its input x.
pub enum Source<'p> {
    Tensor(Slot),
    Computed(&'p Prologue),
}

/// Elementwise steps that compute x, over inputs of x's shape or per channel (`true`).
pub struct Prologue {
    pub steps: Vec<Step>,
    pub inputs: Vec<(Slot, bool)>,
    /// Where x is stored as it is computed, if other ops read it too: a buffer and x's offset
    /// in it, in floats. Only a kernel that computes each element of x once
    /// (`conv::copies_computed_x_once`) computes a prologue that stores.
    pub stored: Option<(Slot, usize)>,
}

impl Prologue {
    /// The per-channel inputs' values at channel `channel` (`None` for the others), read once
    /// for all the elements of the channel a kernel computes.
    pub fn channel_values(&self, e: &mut Emitter, channel: Value) -> Vec<Option<Value>> {
        self.inputs
            .iter()
            .map(|&(slot, per_channel)| {
                per_channel.then(|| {
                    let base = e.buffer(slot);
                    e.load(F32, Emitter::frozen(), base, channel, 0)
                })
            })
            .collect()
    }

    /// x's elements (`ty`, F32 or F32X4) in one channel, of which `channel` holds the
    /// per-channel inputs' values ([`Prologue::channel_values`]); `whole(e, slot)` loads those
    /// of an input of x's shape.
    pub fn compute(
        &self,
        e: &mut Emitter,
        ty: Type,
        channel: &[Option<Value>],
        mut whole: impl FnMut(&mut Emitter, Slot) -> Value,
    ) -> Value {
        let values: Vec<Value> = self
            .inputs
            .iter()
            .zip(channel)
            .map(|(&(slot, _), value)| match *value {
                Some(value) => e.splat(ty, value),
                None => whole(e, slot),
            })
            .collect();
        emit_steps(e, &self.steps, &values, ty)
    }

    /// What a packing computes where it would load a line of its source matrix from the
    /// prologue's [`Prologue::primary`] (a `gemm::RowLoad`): line `k` is x's channel `first + k`.
    pub fn by_channel<'p>(
        &'p self,
        first: Value,
    ) -> impl Fn(&mut Emitter, Value) -> Box<ElementLoad<'p>> + 'p {
        move |e, line| {
            let channel = e.b.ins().iadd(first, line);
            self.in_channel(e, channel)
        }
    }

    /// What a kernel computes where it would load elements of x's channel `channel` from the
    /// prologue's [`Prologue::primary`] at `[base, index]` and `offset` (a
    /// `gemm::ElementLoad`): x's elements there, the other inputs of x's shape loaded at the
    /// same place in theirs. The per-channel inputs are read here, once for the channel.
    pub fn in_channel(&self, e: &mut Emitter, channel: Value) -> Box<ElementLoad<'_>> {
        let primary = self.primary();
        let channel = self.channel_values(e, channel);
        // Another tensor of x's shape: the same element, `base` moved by the distance between
        // the two tensors.
        let moved = move |e: &mut Emitter, base: Value, to: Value| {
            let from = e.buffer(primary);
            let shift = e.b.ins().isub(to, from);
            e.b.ins().iadd(base, shift)
        };
        Box::new(move |e, ty, [base, index], offset| {
            let x = self.compute(e, ty, &channel, |e, slot| {
                let base = match slot == primary {
                    true => base,
                    false => {
                        let to = e.buffer(slot);
                        moved(e, base, to)
                    }
                };
                e.load(ty, Emitter::frozen(), base, index, offset)
            });
            if let Some((slot, floats)) = self.stored {
                let buffer = e.buffer(slot);
                let start = e.b.ins().iadd_imm_s(buffer, 4 * floats as i64);
                let to = moved(e, base, start);
                e.store(Emitter::mutable(), x, to, index, offset);
            }
            x
        })
    }

    /// The first input of x's shape (a prologue has one, its result being of x's shape): a
    /// packing reads its elements where it would read x's, and makes x's of them and of the
    /// other inputs by [`Prologue::by_channel`].
    pub fn primary(&self) -> Slot {
        let mut whole = self.inputs.iter().filter(|(_, per_channel)| !per_channel);
        whole
            .next()
            .expect("a prologue reads a tensor of x's shape")
            .0
    }
}
