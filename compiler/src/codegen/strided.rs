//! One kernel shape that serves every op computing each output element from the elements at
//! the same position of its inputs: elementwise arithmetic with broadcasting, and the copies
//! that broadcast, slice and concatenate. Operands are addressed by per-axis strides (0 along a
//! broadcast axis) and an offset; axes that are contiguous in every operand are merged, and the
//! innermost axis runs as an f32x4 loop, loading broadcast operands once as a splat.
//!
//! Tasks are rows of the merged shape, and long rows are cut into chunks so that even a single
//! large vector (an optimizer update of a big weight) spreads across threads.

use super::emit::{Emitter, Slot, F32};
use super::KernelSink;
use crate::interp::strides;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Elements per task along the innermost axis, when a row is long.
const CHUNK: usize = 16 * 1024;
/// f32x4 steps per unrolled iteration.
const UNROLL: usize = 4;

/// An operand: element `(i0, i1, ...)` is at `offset + sum(ik * strides[k])` of the buffer.
#[derive(Clone, Debug)]
pub struct Strided {
    pub slot: Slot,
    pub strides: Vec<i64>,
    pub offset: i64,
}

impl Strided {
    /// A whole buffer of `shape`, read as the broadcast to `to` (NumPy's rule).
    pub fn broadcast(slot: Slot, shape: &[usize], to: &[usize]) -> Strided {
        let own = strides(shape);
        let lead = to.len() - shape.len();
        let strides = (0..to.len())
            .map(|k| match k.checked_sub(lead) {
                Some(j) if shape[j] != 1 => own[j] as i64,
                _ => 0,
            })
            .collect();
        Strided {
            slot,
            strides,
            offset: 0,
        }
    }

    /// A whole buffer of `shape`, in row-major order.
    pub fn dense(slot: Slot, shape: &[usize]) -> Strided {
        Strided::broadcast(slot, shape, shape)
    }
}

/// Builds a kernel that sets every element of `output` (over `shape`) to `body(inputs at that
/// position)`. `body` gets the loaded inputs as values of the lane type it is given (F32 or
/// F32X4) and returns the output value of that type.
pub fn for_each_element(
    sink: &mut KernelSink,
    shape: &[usize],
    inputs: &[Strided],
    output: &Strided,
    body: impl Fn(&mut Emitter, &[Value], Type) -> Value,
) {
    let total: usize = shape.iter().product();
    if total == 0 {
        return;
    }
    let mut operands: Vec<Strided> = inputs.to_vec();
    operands.push(output.clone());
    let (extents, operands) = merge_axes(shape, &operands);
    let rank = extents.len();
    let inner = extents[rank - 1];
    let rows: usize = extents[..rank - 1].iter().product();
    let pieces = inner.div_ceil(CHUNK);
    let chunk = inner.div_ceil(pieces);
    // Vector code needs every operand's innermost stride to be 1, or 0 for a broadcast.
    let vectorise = operands
        .iter()
        .all(|o| matches!(o.strides[rank - 1], 0 | 1));
    sink.kernel(rows * pieces, 0, |e| {
        let bases: Vec<Value> = operands.iter().map(|o| e.buffer(o.slot)).collect();
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let (row, piece) = if pieces == 1 {
                (task, None)
            } else {
                let row = e.b.ins().udiv_imm_s(task, pieces as i64);
                let piece = e.b.ins().urem_imm_s(task, pieces as i64);
                (row, Some(piece))
            };
            // Each operand's offset at the start of this row.
            let mut starts: Vec<Value> = operands.iter().map(|o| e.int(o.offset)).collect();
            let mut rest = row;
            for axis in (0..rank - 1).rev() {
                let extent = extents[axis] as i64;
                let coordinate = if axis == 0 {
                    rest
                } else {
                    let c = e.b.ins().urem_imm_s(rest, extent);
                    rest = e.b.ins().udiv_imm_s(rest, extent);
                    c
                };
                for (start, operand) in starts.iter_mut().zip(&operands) {
                    if operand.strides[axis] != 0 {
                        let step = e.b.ins().imul_imm_s(coordinate, operand.strides[axis]);
                        *start = e.b.ins().iadd(*start, step);
                    }
                }
            }
            let (lo, hi) = match piece {
                None => (e.int(0), e.int(inner as i64)),
                Some(piece) => {
                    let lo = e.b.ins().imul_imm_s(piece, chunk as i64);
                    let hi = e.b.ins().iadd_imm_s(lo, chunk as i64);
                    let limit = e.int(inner as i64);
                    let hi = e.b.ins().smin(hi, limit);
                    (lo, hi)
                }
            };
            if !vectorise {
                e.for_loop(lo, hi, 1, |e, i| {
                    scalar_strided(e, i, &operands, &bases, &starts, inputs.len(), &body)
                });
                return;
            }
            e.vector_loop(lo, hi, UNROLL, |e: &mut Emitter, i: Value, ty: Type| {
                let mut values = Vec::with_capacity(inputs.len());
                for (k, operand) in operands[..inputs.len()].iter().enumerate() {
                    let value = if operand.strides[rank - 1] == 0 {
                        let x = e.load(F32, Emitter::frozen(), bases[k], starts[k], 0);
                        e.splat(ty, x)
                    } else {
                        let index = e.b.ins().iadd(starts[k], i);
                        e.load(ty, Emitter::frozen(), bases[k], index, 0)
                    };
                    values.push(value);
                }
                let result = body(e, &values, ty);
                let out = operands.len() - 1;
                let index = e.b.ins().iadd(starts[out], i);
                e.store(Emitter::mutable(), result, bases[out], index, 0);
            });
        });
    });
}

/// One element where some operand's innermost stride is neither 0 nor 1.
fn scalar_strided(
    e: &mut Emitter,
    i: Value,
    operands: &[Strided],
    bases: &[Value],
    starts: &[Value],
    input_count: usize,
    body: &impl Fn(&mut Emitter, &[Value], Type) -> Value,
) {
    let inner = operands[0].strides.len() - 1;
    let mut values = Vec::with_capacity(input_count);
    for k in 0..input_count {
        let step = e.b.ins().imul_imm_s(i, operands[k].strides[inner]);
        let index = e.b.ins().iadd(starts[k], step);
        values.push(e.load(F32, Emitter::frozen(), bases[k], index, 0));
    }
    let result = body(e, &values, F32);
    let out = operands.len() - 1;
    let step = e.b.ins().imul_imm_s(i, operands[out].strides[inner]);
    let index = e.b.ins().iadd(starts[out], step);
    e.store(Emitter::mutable(), result, bases[out], index, 0);
}

/// Drops axes of extent 1 and merges neighbouring axes that are contiguous in every operand
/// (`stride[k] == stride[k+1] * extent[k+1]`, zero included), so a dense or simply broadcast
/// operation becomes one long innermost loop.
fn merge_axes(shape: &[usize], operands: &[Strided]) -> (Vec<usize>, Vec<Strided>) {
    let mut extents: Vec<usize> = Vec::new();
    let mut merged: Vec<Strided> = operands
        .iter()
        .map(|o| Strided {
            slot: o.slot,
            strides: Vec::new(),
            offset: o.offset,
        })
        .collect();
    for (axis, &extent) in shape.iter().enumerate() {
        if extent == 1 {
            continue;
        }
        let joins = !extents.is_empty()
            && operands.iter().zip(&merged).all(|(o, m)| {
                *m.strides.last().expect("same rank as extents") == o.strides[axis] * extent as i64
            });
        if joins {
            *extents.last_mut().expect("not empty") *= extent;
            for (m, o) in merged.iter_mut().zip(operands) {
                *m.strides.last_mut().expect("not empty") = o.strides[axis];
            }
        } else {
            extents.push(extent);
            for (m, o) in merged.iter_mut().zip(operands) {
                m.strides.push(o.strides[axis]);
            }
        }
    }
    if extents.is_empty() {
        extents.push(1);
        for m in &mut merged {
            m.strides.push(0);
        }
    }
    (extents, merged)
}
