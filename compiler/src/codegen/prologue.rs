//! x as a convolution's kernels read it: a tensor, or computed by a prologue (`fuse_prologue`:
//! batch norm's apply and ReLU) from tensors of x's shape and per-channel ones as the kernels
//! need its elements, so that x is never written. The depthwise kernels stage rows of x's
//! planes in their scratch; a pointwise convolution's packing computes each element of its B
//! panels from the one tensor of x's shape.

use super::emit::{Emitter, Slot, F32};
use crate::ir::ops::fused::{emit_steps, Step};
use cranelift_codegen::ir::{Type, Value};

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
    /// The values of x's elements of channel `channel` (`ty`, F32 or F32X4) from those of its
    /// one input of x's shape there (`whole`, see [`Prologue::only_whole_input`]); the
    /// per-channel inputs are read here, each in every lane.
    pub fn apply(&self, e: &mut Emitter, ty: Type, channel: Value, whole: Value) -> Value {
        let values: Vec<Value> = self
            .inputs
            .iter()
            .map(|&(slot, per_channel)| {
                if !per_channel {
                    return whole;
                }
                let base = e.buffer(slot);
                let value = e.load(F32, Emitter::frozen(), base, channel, 0);
                e.splat(ty, value)
            })
            .collect();
        emit_steps(e, &self.steps, &values, ty)
    }

    /// The one input of x's shape, where there is just one: a packing reads it where it would
    /// read x.
    pub fn only_whole_input(&self) -> Option<Slot> {
        let mut whole = self.inputs.iter().filter(|(_, per_channel)| !per_channel);
        match (whole.next(), whole.next()) {
            (Some(&(slot, _)), None) => Some(slot),
            _ => None,
        }
    }
}
