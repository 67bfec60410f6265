//! x as a convolution's kernels read it: a tensor, or computed by a prologue (`fuse_prologue`:
//! batch norm's apply and ReLU) from tensors of x's shape and per-channel ones as the kernels
//! need its elements, so that x is never written. The depthwise kernels stage rows of x's
//! planes in their scratch; a pointwise convolution's packing computes each element of its B
//! panels from the one tensor of x's shape.

use super::emit::{Emitter, Slot, F32};
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

    /// What a packing makes of the elements it loads from the one input of x's shape (a
    /// `gemm::Transform`), the source matrix's line `k` being x's channel `first + k`.
    pub fn by_channel(
        &self,
        first: Value,
    ) -> impl Fn(&mut Emitter, Value, Type, Value) -> Value + '_ {
        move |e, value, ty, line| {
            let channel = e.b.ins().iadd(first, line);
            let channel = self.channel_values(e, channel);
            self.compute(e, ty, &channel, |_, _| value)
        }
    }

    /// The one input of x's shape, where there is just one: a packing reads it where it would
    /// read x, and makes x's elements of it by [`Prologue::compute`].
    pub fn only_whole_input(&self) -> Option<Slot> {
        let mut whole = self.inputs.iter().filter(|(_, per_channel)| !per_channel);
        match (whole.next(), whole.next()) {
            (Some(&(slot, _)), None) => Some(slot),
            _ => None,
        }
    }
}
