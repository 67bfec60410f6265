//! Elementary functions as inline vector code, where calling the C library per lane would cost
//! more than the arithmetic around it.

use super::emit::{Emitter, F32};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{I32, I32X4};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value};

/// Cephes' `expf`: `x = n ln 2 + r` with `|r| <= ln(2)/2` (ln 2 in two parts, so `r` is
/// exact), `e^r` by a polynomial, and `2^n` built in the exponent bits. Within one ulp of the
/// true value where the result is a normal float; 0 below `EXP_LOW` (results under 2^-124,
/// flushed), infinite above `EXP_HIGH`, NaN for NaN.
mod cephes {
    pub const LOG2_E: f32 = std::f32::consts::LOG2_E;
    pub const LN2_HIGH: f32 = 0.693_359_4;
    pub const LN2_LOW: f32 = -2.121_944_4e-4;
    /// `e^r ~ 1 + r + r^2 (((((P0 r + P1) r + P2) r + P3) r + P4) r + P5)`.
    pub const POLYNOMIAL: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
    /// ln(f32::MAX): above it e^x is infinite.
    pub const EXP_HIGH: f32 = 88.722_84;
    pub const EXP_LOW: f32 = -86.0;
    /// 1.5 * 2^23: adding it rounds a float of magnitude below 2^22 to a whole number, which
    /// then sits in the low bits of the sum (`bits = MAGIC_BITS + n`).
    pub const MAGIC: f32 = 12_582_912.0;
    pub const MAGIC_BITS: i32 = 0x4b40_0000;
}

/// `e^x` on every lane of `x` (F32 or F32X4), without calls: see `cephes`.
pub fn exp(e: &mut Emitter, x: Value, ty: Type) -> Value {
    use cephes::*;
    let magic = e.constant(ty, MAGIC);
    let log2_e = e.constant(ty, LOG2_E);
    let scaled = e.b.ins().fmul(x, log2_e);
    let rounded = e.b.ins().fadd(scaled, magic);
    let n = e.b.ins().fsub(rounded, magic);
    let mut r = x;
    for part in [LN2_HIGH, LN2_LOW] {
        let part = e.constant(ty, part);
        let step = e.b.ins().fmul(n, part);
        r = e.b.ins().fsub(r, step);
    }
    let mut p = e.constant(ty, POLYNOMIAL[0]);
    for &c in &POLYNOMIAL[1..] {
        let c = e.constant(ty, c);
        let pr = e.b.ins().fmul(p, r);
        p = e.b.ins().fadd(pr, c);
    }
    let r2 = e.b.ins().fmul(r, r);
    let p = e.b.ins().fmul(p, r2);
    let p = e.b.ins().fadd(p, r);
    let one = e.constant(ty, 1.0);
    let p = e.b.ins().fadd(p, one);
    // 2^(n-1), then times 2: 2^n itself would overflow the exponent at n = 128.
    let int = if ty == F32 { I32 } else { I32X4 };
    let lane_order = MemFlagsData::new().with_endianness(Endianness::Little);
    let bits = e.b.ins().bitcast(int, lane_order, rounded);
    let bias = e.b.ins().iconst(I32, i64::from(126 - MAGIC_BITS));
    let bias = if ty == F32 {
        bias
    } else {
        e.b.ins().splat(I32X4, bias)
    };
    let biased = e.b.ins().iadd(bits, bias);
    let exponent = e.b.ins().ishl_imm_s(biased, 23);
    let half_power = e.b.ins().bitcast(ty, lane_order, exponent);
    let y = e.b.ins().fmul(p, half_power);
    let y = e.b.ins().fadd(y, y);
    // Outside the range the bits above are garbage (NaN stays NaN through the polynomial).
    let (high, low) = (e.constant(ty, EXP_HIGH), e.constant(ty, EXP_LOW));
    let infinity = e.constant(ty, f32::INFINITY);
    let y = e.select_cmp(FloatCC::GreaterThan, x, high, infinity, y);
    // Zero below `low`: "not below" keeps NaN.
    e.keep_where(FloatCC::UnorderedOrGreaterThanOrEqual, [x, low], y)
}
