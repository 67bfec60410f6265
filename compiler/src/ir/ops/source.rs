//! Ops that make tensors rather than transform them: dropout masks from a counter-based random
//! generator, and constants.

use super::arity;
use crate::interp::{EvalContext, Tensor};
use crate::ir::Shape;

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
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
    let key = splitmix64(splitmix64(splitmix64(context.seed) ^ stream) ^ step as u64);
    // Infinite at rate 1, where u < rate always and it is never used.
    let keep = 1.0 / (1.0 - rate);
    let n: usize = shape.iter().product();
    let data = (0..n as u64)
        .map(|i| {
            let u = (splitmix64(key ^ i) >> 11) as f64 / (1u64 << 53) as f64;
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

// CODEGEN-STUB: replaced by the real code-generation rules.
pub fn emit_dropout_mask(
    rate: f64,
    stream: u64,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (rate, stream, sink, inputs, output);
    panic!("internal error: no code generation for `emit_dropout_mask` yet");
}
pub fn emit_fill(
    value: f64,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (value, sink, inputs, output);
    panic!("internal error: no code generation for `emit_fill` yet");
}
