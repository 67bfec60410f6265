//! Ops that make tensors rather than transform them: dropout masks from a counter-based random
//! generator, and constants.
//!
//! Generated code computes each mask element alone from its index, as the definition does, in
//! 64-bit integer arithmetic, so masks are the interpreter's bit for bit.

use super::arity;
use super::layout::Units;
use crate::codegen::emit::{Emitter, F32, I64};
use crate::codegen::strided::{for_each_element, Strided};
use crate::codegen::{KernelSink, Operand};
use crate::interp::{EvalContext, Tensor};
use crate::ir::Shape;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I32;
use cranelift_codegen::ir::{InstBuilder, Value};

pub fn dropout_mask_shape(shape: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if !inputs[0].is_empty() {
        return Err("the step must be a scalar".into());
    }
    Ok(shape.clone())
}

pub fn fill_shape(shape: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 0)?;
    Ok(shape.clone())
}

/// splitmix64's step (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// 2014): add the golden-ratio increment, then mix. A bijection on u64 with strong avalanche
/// (every input bit flips every output bit about half the time), so neighbouring counters give
/// unrelated outputs, which is what a counter-based generator needs.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(INCREMENT);
    for (shift, multiplier) in MIX {
        z = (z ^ (z >> shift)).wrapping_mul(multiplier);
    }
    z ^ (z >> FINAL_SHIFT)
}

/// splitmix64's constants, shared with the generated code that reproduces it: the increment
/// (2^64 over the golden ratio), the `(shift, multiplier)` of its two mixing rounds
/// `z = (z ^ (z >> shift)) * multiplier`, and the shift of its final `z ^ (z >> shift)`.
const INCREMENT: u64 = 0x9e37_79b9_7f4a_7c15;
const MIX: [(u32, u64); 2] = [(30, 0xbf58_476d_1ce4_e5b9), (27, 0x94d0_49bb_1331_11eb)];
const FINAL_SHIFT: u32 = 31;
/// Bits of a draw a uniform variate keeps: `u = (draw >> (64 - BITS)) * 2^-BITS`, exact in f64.
const UNIFORM_BITS: u32 = 53;

/// The part of a mask's key fixed when the graph is built: `splitmix64(splitmix64(seed) ^
/// stream)`; the step is mixed in at run time.
fn stream_key(seed: u64, stream: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ stream)
}

/// The mask, element `i` (its row-major index) computed alone. Generated code must reproduce
/// this bit for bit, so it is the definition (u64 arithmetic wraps):
///
/// ```text
/// key  = splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ step)
/// u    = (splitmix64(key ^ i) >> 11) * 2^-53          uniform in [0, 1), exact in f64
/// mask = 0 if u < rate, else 1 / (1 - rate)
/// ```
///
/// `u < rate` is the integer test `(splitmix64(key ^ i) >> 11) < rate * 2^53` (scaling by a
/// power of two is exact), for code without f64. Mixing between the parts of the key, rather
/// than XOR-ing them together, keeps streams and steps apart: with `seed ^ stream ^ step`,
/// stream 1 at step 2 would repeat stream 2 at step 1.
pub fn eval_dropout_mask(
    rate: f64,
    stream: u64,
    shape: &Shape,
    inputs: &[&Tensor],
    context: &EvalContext,
) -> Tensor {
    let step = inputs[0].data[0];
    assert!(
        step >= 0.0 && step.fract() == 0.0,
        "the step {step} is not a whole number"
    );
    let key = splitmix64(stream_key(context.seed, stream) ^ step as u64);
    // Infinite at rate 1, where u < rate always and it is never used.
    let keep = 1.0 / (1.0 - rate);
    let n: usize = shape.iter().product();
    let data = (0..n as u64)
        .map(|i| {
            let draw = splitmix64(key ^ i) >> (64 - UNIFORM_BITS);
            let u = draw as f64 / (1u64 << UNIFORM_BITS) as f64;
            if u < rate {
                0.0
            } else {
                keep
            }
        })
        .collect();
    Tensor::new(shape.clone(), data)
}

pub fn eval_fill(value: f64, shape: &Shape) -> Tensor {
    Tensor::full(shape.clone(), value)
}

/// `splitmix64(x)` in generated code (i64 arithmetic wraps, as the definition's u64 does).
fn emit_splitmix64(e: &mut Emitter, x: Value) -> Value {
    let mut z = e.b.ins().iadd_imm_s(x, INCREMENT as i64);
    for (shift, multiplier) in MIX {
        let shifted = e.b.ins().ushr_imm_u(z, i64::from(shift));
        let mixed = e.b.ins().bxor(z, shifted);
        z = e.b.ins().imul_imm_s(mixed, multiplier as i64);
    }
    let shifted = e.b.ins().ushr_imm_u(z, i64::from(FINAL_SHIFT));
    e.b.ins().bxor(z, shifted)
}

/// The mask as `eval_dropout_mask` defines it, element by element over chunks of the flat
/// index range, keyed by the program's seed (`CodegenOptions::seed`); only the step is read
/// at run time.
pub fn emit_dropout_mask(
    rate: f64,
    stream: u64,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
) {
    let stream_key = stream_key(sink.seed(), stream);
    // `draw < rate * 2^53` for a whole `draw` is `draw < ceil(rate * 2^53)` (saturating: a NaN
    // rate drops nothing, as `u < NaN` is false).
    let threshold = (rate * (1u64 << UNIFORM_BITS) as f64).ceil() as u64;
    let keep = (1.0 / (1.0 - rate)) as f32;
    let units = Units::new(output.len(), 1);
    sink.kernel(units.tasks(), 0, |e| {
        let (step, mask) = (e.buffer(inputs[0].slot), e.buffer(output.slot));
        let zero = e.int(0);
        let step = e.load(F32, Emitter::frozen(), step, zero, 0);
        // Saturating, as the interpreter's `as u64`; the step is a whole number.
        let step = e.b.ins().fcvt_to_uint_sat(I64, step);
        let key = e.b.ins().bxor_imm_s(step, stream_key as i64);
        let key = emit_splitmix64(e, key);
        // The mask's values as integer bits: an integer select is a conditional move, while a
        // float one is a branch, mispredicted on every other element at rate 0.5.
        let dropped = e.b.ins().iconst(I32, 0);
        let kept = e.b.ins().iconst(I32, i64::from(keep.to_bits()));
        units.for_each(e, |e, i| {
            let counter = e.b.ins().bxor(key, i);
            let draw = emit_splitmix64(e, counter);
            let draw = e.b.ins().ushr_imm_u(draw, i64::from(64 - UNIFORM_BITS));
            let drop =
                e.b.ins()
                    .icmp_imm_u(IntCC::UnsignedLessThan, draw, threshold as i64);
            let value = e.b.ins().select(drop, dropped, kept);
            e.store(Emitter::mutable(), value, mask, i, 0);
        });
    });
}

pub fn emit_fill(value: f64, sink: &mut KernelSink, _inputs: &[Operand], output: &Operand) {
    let out = Strided::dense(output.slot, &output.shape);
    for_each_element(sink, &output.shape, &[], &out, |e, _, ty| {
        e.constant(ty, value as f32)
    });
}
