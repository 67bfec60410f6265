//! Contractions: the generated f32x4 microkernel, the portable fallback behind the same
//! interface as the runtime's AVX-512 and AVX2 ones (`netc_runtime::microkernel`).

use super::emit::{Emitter, F32, F32X4};
use super::KernelSink;
use cranelift_codegen::ir::InstBuilder;
use cranelift_module::FuncId;
use netc_runtime::microkernel::{MR, NR};

/// Columns per pass of the generated microkernel: `MR` rows of two f32x4 make 12 accumulators,
/// which with the two `b` vectors and a broadcast fit Cranelift's 16 vector registers.
const PASS_COLUMNS: usize = 8;

/// Defines `(kc, a, b, c, ldc, accumulate)`: `c[i*ldc + j] (+)= sum_k a[k*MR + i] b[k*NR + j]`,
/// in `NR / 8` passes over the panels.
pub fn define_microkernel(sink: &mut KernelSink) -> FuncId {
    sink.define(6, |e: &mut Emitter| {
        let [kc, a, b, c, ldc, accumulate] = [0, 1, 2, 3, 4, 5].map(|i| e.params[i]);
        let flags = Emitter::frozen();
        for pass in 0..NR / PASS_COLUMNS {
            let zero = e.constant(F32X4, 0.0);
            let acc: Vec<_> = (0..MR * 2).map(|_| e.variable(F32X4, zero)).collect();
            let start = e.int(0);
            e.for_loop(start, kc, 1, |e, k| {
                let b_row = e.b.ins().imul_imm_s(k, NR as i64);
                let b0 = e.load(F32X4, flags, b, b_row, (pass * PASS_COLUMNS) as i64);
                let b1 = e.load(F32X4, flags, b, b_row, (pass * PASS_COLUMNS + 4) as i64);
                let a_row = e.b.ins().imul_imm_s(k, MR as i64);
                for i in 0..MR {
                    let ai = e.load(F32, flags, a, a_row, i as i64);
                    let ai = e.splat(F32X4, ai);
                    for (j, bj) in [b0, b1].into_iter().enumerate() {
                        let sum = e.get(acc[2 * i + j]);
                        let sum = e.b.ins().fma(ai, bj, sum);
                        e.set(acc[2 * i + j], sum);
                    }
                }
            });
            for i in 0..MR {
                let row = e.b.ins().imul_imm_s(ldc, i as i64);
                for j in 0..2 {
                    let offset = (pass * PASS_COLUMNS + 4 * j) as i64;
                    let sum = e.get(acc[2 * i + j]);
                    let old = e.load(F32X4, Emitter::mutable(), c, row, offset);
                    let added = e.b.ins().fadd(sum, old);
                    let value = e.b.ins().select(accumulate, added, sum);
                    e.store(Emitter::mutable(), value, c, row, offset);
                }
            }
        }
    })
}
