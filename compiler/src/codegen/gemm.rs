//! Contractions: what convolutions and matrix products share on their way to the microkernel
//! (`netc_runtime::microkernel`), and the generated f32x4 microkernel, the portable fallback
//! behind the same interface as the runtime's AVX-512 and AVX2 ones.
//!
//! Every contraction is `C (+)= A · B` over blocks: A is packed into panels of `MR` rows
//! (`a[k*MR + i]`) and B into panels of `NR` columns (`b[k*NR + j]`), both zero-padded past the
//! matrix, either once per op into a workspace by a parallel kernel ([`pack_a`], [`pack_b`]) or
//! per task into scratch ([`pack_b_panel`], or an op's own packing, such as a convolution's
//! implicit im2col). A task computes one block of C into a scratch tile of whole
//! `MR x NR` tiles ([`multiply`]), K block by K block of at most [`KC`], and copies its valid
//! part out ([`copy_block`]): no edge tile needs a special case, and the output is written once.
//!
//! Tasks split C only, never the reduction, so every sum runs in the same order whatever the
//! number of threads.

use super::emit::{Emitter, Slot, F32, F32X4, LANES};
use super::{KernelSink, Operand};
use crate::ir::ops::fused::{arg_value, emit_each_step, Arg, Step};
use crate::ir::ops::layout::{fold_together, reduce_range, Accumulators, Reduce};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I64, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_module::FuncId;
use netc_runtime::microkernel::{MR, NR};

/// The deepest K block one microkernel call covers: A's `MR x KC` panel (6 KiB) and B's
/// `KC x NR` panel (32 KiB) then stay in the core's L1 and L2 caches.
pub const KC: usize = 256;

/// Tasks a contraction aims for when its shape allows, so that up to 16 threads have work.
pub const TASKS: usize = 16;

/// f32x4 steps per unrolled iteration of the packing and copying loops.
const UNROLL: usize = 2;

/// Panels of `MR` rows that cover `rows` rows.
pub fn row_panels(rows: usize) -> usize {
    rows.div_ceil(MR)
}

/// Panels of `NR` columns that cover `cols` columns.
pub fn col_panels(cols: usize) -> usize {
    cols.div_ceil(NR)
}

/// `total` cut into as few blocks of at most `most` as possible, of nearly equal size:
/// `(blocks, size)`, the last block possibly smaller.
pub fn balanced_blocks(total: usize, most: usize) -> (usize, usize) {
    let blocks = total.div_ceil(most.max(1)).max(1);
    (blocks, total.div_ceil(blocks))
}

/// Tiles of C, in panels: `(rows, cols)` of at most `most` panels each, halved (columns first,
/// which costs no repacking of A) until `batch` times the tile count reaches the task target or
/// the tiles are single panels, then evened out.
pub fn tiles(batch: usize, m_panels: usize, n_panels: usize, most: [usize; 2]) -> (usize, usize) {
    let mut mt = m_panels.min(most[0]).max(1);
    let mut nt = n_panels.min(most[1]).max(1);
    while batch * m_panels.div_ceil(mt) * n_panels.div_ceil(nt) < TASKS {
        if nt > 1 {
            nt = nt.div_ceil(2);
        } else if mt > 1 {
            mt = mt.div_ceil(2);
        } else {
            break;
        }
    }
    // As many tiles, of nearly equal sizes.
    let balance = |panels: usize, tile: usize| panels.div_ceil(panels.div_ceil(tile));
    (balance(m_panels, mt), balance(n_panels, nt))
}

/// Integer arithmetic on i64 values, for the index computations of contraction kernels.
pub trait IndexMath {
    fn add(&mut self, a: Value, b: Value) -> Value;
    fn sub(&mut self, a: Value, b: Value) -> Value;
    fn mul(&mut self, a: Value, b: Value) -> Value;
    fn add_imm(&mut self, a: Value, k: i64) -> Value;
    fn mul_imm(&mut self, a: Value, k: i64) -> Value;
    fn div_imm(&mut self, a: Value, k: i64) -> Value;
    fn rem_imm(&mut self, a: Value, k: i64) -> Value;
    fn min(&mut self, a: Value, b: Value) -> Value;
    fn max(&mut self, a: Value, b: Value) -> Value;
    /// `min(a, k)` for a constant `k`.
    fn min_imm(&mut self, a: Value, k: i64) -> Value;
    /// `max(a, k)` for a constant `k`.
    fn max_imm(&mut self, a: Value, k: i64) -> Value;
    /// The address of float `index` of `base` (a pointer).
    fn at(&mut self, base: Value, index: Value) -> Value;
    /// The address of float `index * scale` of `base`.
    fn at_scaled(&mut self, base: Value, index: Value, scale: i64) -> Value;
    /// The coordinates of row-major flat index `flat` over `extents`.
    fn decode(&mut self, flat: Value, extents: &[usize]) -> Vec<Value>;
}

impl IndexMath for Emitter<'_> {
    fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().iadd(a, b)
    }

    fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().isub(a, b)
    }

    fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().imul(a, b)
    }

    fn add_imm(&mut self, a: Value, k: i64) -> Value {
        if k == 0 {
            a
        } else {
            self.b.ins().iadd_imm_s(a, k)
        }
    }

    fn mul_imm(&mut self, a: Value, k: i64) -> Value {
        if k == 1 {
            a
        } else {
            self.b.ins().imul_imm_s(a, k)
        }
    }

    /// Division of a non-negative value by a positive constant.
    fn div_imm(&mut self, a: Value, k: i64) -> Value {
        if k == 1 {
            a
        } else {
            self.b.ins().udiv_imm_s(a, k)
        }
    }

    fn rem_imm(&mut self, a: Value, k: i64) -> Value {
        if k == 1 {
            self.int(0)
        } else {
            self.b.ins().urem_imm_s(a, k)
        }
    }

    fn min(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().smin(a, b)
    }

    fn max(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().smax(a, b)
    }

    fn min_imm(&mut self, a: Value, k: i64) -> Value {
        let k = self.int(k);
        self.min(a, k)
    }

    fn max_imm(&mut self, a: Value, k: i64) -> Value {
        let k = self.int(k);
        self.max(a, k)
    }

    fn at(&mut self, base: Value, index: Value) -> Value {
        self.element(base, index)
    }

    fn at_scaled(&mut self, base: Value, index: Value, scale: i64) -> Value {
        let index = self.mul_imm(index, scale);
        self.element(base, index)
    }

    fn decode(&mut self, flat: Value, extents: &[usize]) -> Vec<Value> {
        let mut coordinates = vec![flat; extents.len()];
        let mut rest = flat;
        for axis in (1..extents.len()).rev() {
            coordinates[axis] = self.rem_imm(rest, extents[axis] as i64);
            rest = self.div_imm(rest, extents[axis] as i64);
        }
        if let Some(first) = coordinates.first_mut() {
            *first = rest;
        }
        coordinates
    }
}

/// `count` matrices of `rows x cols` in one buffer: element `(i, j)` of matrix `t` is float
/// `t*stride + i*row_stride + j*col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Matrices {
    pub slot: Slot,
    pub count: usize,
    pub stride: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// Packs the rows of every matrix into A panels, all columns deep, in a new workspace: panel
/// `p` of matrix `t` starts at float `(t * row_panels(rows) + p) * cols * MR`. One task per panel.
pub fn pack_a(sink: &mut KernelSink, m: &Matrices) -> Slot {
    pack_kernel(sink, m, MR, |e, src, rows, dst| {
        let kc = e.int(m.cols as i64);
        pack_a_panel(e, src, [m.row_stride, m.col_stride], rows, kc, dst)
    })
}

/// Packs the columns of every matrix into B panels, all rows deep, in a new workspace: panel
/// `p` of matrix `t` starts at float `(t * col_panels(cols) + p) * rows * NR`. One task per panel.
pub fn pack_b(sink: &mut KernelSink, m: &Matrices) -> Slot {
    let transposed = Matrices {
        rows: m.cols,
        cols: m.rows,
        row_stride: m.col_stride,
        col_stride: m.row_stride,
        ..*m
    };
    pack_kernel(sink, &transposed, NR, |e, src, cols, dst| {
        let kc = e.int(m.rows as i64);
        let width = e.int(NR as i64);
        pack_b_panel(
            e,
            src,
            [m.row_stride, m.col_stride],
            [cols, width],
            kc,
            dst,
            None,
        )
    })
}

/// A kernel of one task per panel of `width` rows of each matrix of `m`, the panels laid out
/// one after the other, `cols * width` floats each: `pack(e, first element, rows in the
/// panel, destination)` packs one.
fn pack_kernel(
    sink: &mut KernelSink,
    m: &Matrices,
    width: usize,
    pack: impl FnOnce(&mut Emitter, Value, Value, Value),
) -> Slot {
    let panels = m.rows.div_ceil(width);
    let panel_floats = m.cols * width;
    let workspace = sink.workspace(m.count * panels * panel_floats);
    let m = *m;
    sink.kernel(m.count * panels, 0, |e| {
        let (src, dst) = (e.buffer(m.slot), e.buffer(workspace));
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let [t, panel] = e.decode(task, &[m.count, panels])[..] else {
                unreachable!()
            };
            let first_row = e.mul_imm(panel, width as i64);
            let left = e.int(m.rows as i64);
            let left = e.sub(left, first_row);
            let rows = e.min_imm(left, width as i64);
            let matrix = e.mul_imm(t, m.stride as i64);
            let offset = e.mul_imm(first_row, m.row_stride as i64);
            let index = e.add(matrix, offset);
            let from = e.at(src, index);
            let to = e.at_scaled(dst, task, panel_floats as i64);
            pack(e, from, rows, to);
        });
    });
    workspace
}

const _: () = assert!(
    MR == 6,
    "pack_a_panel's vector loop transposes rows 0-3 and 4-5"
);

/// Packs `rows` (1 to `MR`) rows of a matrix, `kc` columns deep, into the A panel at `dst`
/// (`dst[k*MR + i]`), zeros past `rows`. `src` is the address of its element `(0, 0)`, and
/// `strides` its row and column strides in floats.
fn pack_a_panel(
    e: &mut Emitter,
    src: Value,
    strides: [usize; 2],
    rows: Value,
    kc: Value,
    dst: Value,
) {
    let [row_stride, col_stride] = strides.map(|s| s as i64);
    // Rows past the matrix read its last row (memory that exists) and store zeros instead.
    let last = e.add_imm(rows, -1);
    let sources: Vec<(Value, Value)> = (0..MR as i64)
        .map(|i| {
            let row = e.min_imm(last, i);
            let address = e.at_scaled(src, row, row_stride);
            let outside = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, last, i);
            (address, outside)
        })
        .collect();
    let zero = e.float(0.0);
    let mut start = e.int(0);
    if col_stride == 1 {
        // Rows contiguous along k: four k at a time, rows 0-3 and 4-5 transposed in registers
        // (`MR` is 6, checked at compile time above).
        // Each k's rows 4-5 are stored as a vector whose last two lanes land on the next k's
        // rows 0-1, which that k then overwrites: so the last k is left to the loop below.
        let vectors = e.add_imm(kc, -1);
        let vectors = e.b.ins().band_imm_s(vectors, !3);
        let whole = e.b.ins().icmp_imm_s(IntCC::Equal, rows, MR as i64);
        let vectors = e.b.ins().select(whole, vectors, start);
        e.for_loop(start, vectors, 4, |e, k| {
            let load = |e: &mut Emitter, i: usize| {
                e.load(F32X4, Emitter::frozen(), sources[i.min(MR - 1)].0, k, 0)
            };
            let low = [0, 1, 2, 3].map(|i| load(e, i));
            let high = [4, 5, 5, 5].map(|i| load(e, i));
            let row = e.mul_imm(k, MR as i64);
            let [low, high] = [low, high].map(|rows| transpose4(e, rows));
            for t in 0..4 {
                let at = (t * MR) as i64;
                e.store(Emitter::mutable(), low[t], dst, row, at);
                e.store(Emitter::mutable(), high[t], dst, row, at + 4);
            }
        });
        start = vectors;
    }
    e.for_loop(start, kc, 1, |e, k| {
        let column = e.mul_imm(k, col_stride);
        let row = e.mul_imm(k, MR as i64);
        for (i, &(address, outside)) in sources.iter().enumerate() {
            let value = e.load(F32, Emitter::frozen(), address, column, 0);
            let value = e.b.ins().select(outside, zero, value);
            e.store(Emitter::mutable(), value, dst, row, i as i64);
        }
    });
}

/// What a kernel computes in place of the elements it would load from one line of a source
/// (F32 or F32X4 of `ty`, at `[base, index]` and `offset` as [`Emitter::load`] takes them): a
/// convolution's prologue, in one channel of x.
pub type ElementLoad<'t> = dyn Fn(&mut Emitter, Type, [Value; 2], i64) -> Value + 't;

/// The elements at `[base, index]` and `offset`: loaded, or what `load` makes of them.
pub fn load_through(
    e: &mut Emitter,
    load: Option<&ElementLoad>,
    ty: Type,
    [base, index]: [Value; 2],
    offset: i64,
) -> Value {
    match load {
        Some(load) => load(e, ty, [base, index], offset),
        None => e.load(ty, Emitter::frozen(), base, index, offset),
    }
}

/// What a packing computes in place of loading the elements of one line (a row, or transposed a
/// column) of its source, given the line's index: a convolution's prologue, in the channel of x
/// that the line is. Called once per line, outside the loop over its elements.
pub type RowLoad<'t> = dyn Fn(&mut Emitter, Value) -> Box<ElementLoad<'t>> + 't;

/// Packs the first `cols` columns of a matrix whose rows are contiguous (row `k` at `src + k *
/// row_stride`), `kc` rows deep, into `panels` B panels at `dst`, one after the other (`kc * NR`
/// floats apart; `cols` more than `(panels - 1) * NR` and at most `panels * NR`), zeros past
/// `cols` up to column `width` of the last. Row by row: each row is read in one run however
/// many panels it spans (rows lie a plane apart in a convolution's x or dy, so panel by panel
/// each row would be a short read from far away), and what `row_load` makes of a row's
/// elements, if anything, is set up once per row.
pub fn pack_b_rows(
    e: &mut Emitter,
    (src, row_stride): (Value, usize),
    [cols, width, panels]: [Value; 3],
    kc: Value,
    dst: Value,
    row_load: Option<&RowLoad>,
) {
    let whole = e.div_imm(cols, NR as i64);
    let tail_start = e.mul_imm(whole, NR as i64);
    let tail_cols = e.sub(cols, tail_start);
    let has_tail = e.b.ins().icmp(IntCC::SignedLessThan, whole, panels);
    let panel_floats = e.mul_imm(kc, NR as i64);
    let zero = e.int(0);
    e.for_loop(zero, kc, 1, |e, k| {
        let from = e.at_scaled(src, k, row_stride as i64);
        let to = e.at_scaled(dst, k, NR as i64);
        let load = row_load.map(|row_load| row_load(e, k));
        let load = load.as_deref();
        e.for_loop(zero, whole, 1, |e, j| {
            let column = e.mul_imm(j, NR as i64);
            let panel = e.mul(j, panel_floats);
            let to = e.at(to, panel);
            for offset in (0..NR as i64).step_by(4) {
                let value = load_through(e, load, F32X4, [from, column], offset);
                e.store(Emitter::mutable(), value, to, zero, offset);
            }
        });
        e.if_else(
            has_tail,
            |e| {
                let panel = e.mul(whole, panel_floats);
                let to = e.at(to, panel);
                let from = e.at(from, tail_start);
                copy_run_through(e, load, [from, to], [zero, tail_cols]);
                zero_run(e, to, 1, tail_cols, width);
            },
            |_| {},
        );
    });
}

/// Packs `cols` (1 to `NR`) columns of a matrix, `kc` rows deep, into the B panel at `dst`
/// (`dst[k*NR + j]`), zeros past `cols` up to column `width` (`NR`, or less where the columns
/// after belong to another matrix); `src` and `strides` as for [`pack_a_panel`]. Where there
/// is a `line_load`, each element packed is what it makes of the matrix's.
pub fn pack_b_panel(
    e: &mut Emitter,
    src: Value,
    strides: [usize; 2],
    [cols, width]: [Value; 2],
    kc: Value,
    dst: Value,
    line_load: Option<&RowLoad>,
) {
    let [row_stride, col_stride] = strides.map(|s| s as i64);
    let start = e.int(0);
    if col_stride == 1 {
        let one = e.int(1);
        pack_b_rows(e, (src, strides[0]), [cols, width, one], kc, dst, line_load);
        return;
    }
    // What column `line` is loaded through, set up once per column.
    let column_load = |e: &mut Emitter, line: Value| line_load.map(|load| load(e, line));
    // Columns are (more nearly) contiguous: four columns at a time, 4x4 blocks transposed in
    // registers when the columns are contiguous, then the columns left one by one.
    let quads = e.b.ins().band_imm_s(cols, !3);
    if row_stride == 1 {
        e.for_loop(start, quads, 4, |e, j| {
            let from: Vec<Value> = (0..4)
                .map(|t| {
                    let column = e.add_imm(j, t);
                    e.at_scaled(src, column, col_stride)
                })
                .collect();
            let to = e.at(dst, j);
            let rows = e.b.ins().band_imm_s(kc, !3);
            let zero = e.int(0);
            let loads: Vec<_> = (0..4)
                .map(|t| {
                    let line = e.add_imm(j, t);
                    column_load(e, line)
                })
                .collect();
            e.for_loop(zero, rows, 4, |e, k| {
                let columns = [0, 1, 2, 3]
                    .map(|t| load_through(e, loads[t].as_deref(), F32X4, [from[t], k], 0));
                let target = e.mul_imm(k, NR as i64);
                for (t, row) in transpose4(e, columns).into_iter().enumerate() {
                    e.store(Emitter::mutable(), row, to, target, (t * NR) as i64);
                }
            });
            e.for_loop(rows, kc, 1, |e, k| {
                let target = e.mul_imm(k, NR as i64);
                for (t, &column) in from.iter().enumerate() {
                    let value = load_through(e, loads[t].as_deref(), F32, [column, k], 0);
                    e.store(Emitter::mutable(), value, to, target, t as i64);
                }
            });
        });
    }
    let first_single = if row_stride == 1 { quads } else { start };
    e.for_loop(first_single, cols, 1, |e, j| {
        let from = e.at_scaled(src, j, col_stride);
        let to = e.at(dst, j);
        let zero = e.int(0);
        let load = column_load(e, j);
        e.for_loop(zero, kc, 1, |e, k| {
            let source = e.mul_imm(k, row_stride);
            let value = load_through(e, load.as_deref(), F32, [from, source], 0);
            let target = e.mul_imm(k, NR as i64);
            e.store(Emitter::mutable(), value, to, target, 0);
        });
    });
    e.for_loop(cols, width, 1, |e, j| {
        let to = e.at(dst, j);
        let zero = e.int(0);
        zero_run(e, to, NR as i64, zero, kc);
    });
}

/// The transpose of the 4x4 matrix whose rows are `rows`: lane `i` of row `t` of the result
/// is lane `t` of `rows[i]`. Interleaves of 32-bit then 64-bit lanes, one instruction each.
pub fn transpose4(e: &mut Emitter, rows: [Value; 4]) -> [Value; 4] {
    // 32-bit lanes `[a0 b0 a1 b1]`, `[a2 b2 a3 b3]`, then 64-bit halves `[a0 a1 b0 b1]`,
    // `[a2 a3 b2 b3]`.
    let [low32, high32, low64, high64] = [[0, 4, 1, 5], [2, 6, 3, 7], [0, 1, 4, 5], [2, 3, 6, 7]];
    let t0 = shuffle_lanes(e, [rows[0], rows[1]], low32);
    let t1 = shuffle_lanes(e, [rows[2], rows[3]], low32);
    let t2 = shuffle_lanes(e, [rows[0], rows[1]], high32);
    let t3 = shuffle_lanes(e, [rows[2], rows[3]], high32);
    [
        shuffle_lanes(e, [t0, t1], low64),
        shuffle_lanes(e, [t0, t1], high64),
        shuffle_lanes(e, [t2, t3], low64),
        shuffle_lanes(e, [t2, t3], high64),
    ]
}

/// The lanes of f32x4 values `a` and `b` that `lanes` picks, counting `a`'s 0 to 3 and `b`'s 4
/// to 7: one instruction.
pub fn shuffle_lanes(e: &mut Emitter, [a, b]: [Value; 2], lanes: [u8; 4]) -> Value {
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |byte| 4 * l + byte))
        .collect();
    let mask = e.b.func.dfg.immediates.push(ConstantData::from(bytes));
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let [a, b] = [a, b].map(|v| e.b.ins().bitcast(I8X16, little, v));
    let shuffled = e.b.ins().shuffle(a, b, mask);
    e.b.ins().bitcast(F32X4, little, shuffled)
}

/// `to[i] = from[i]` for `i` in `lo..hi`; `from` is not written meanwhile. Runs of four or more
/// go by f32x4, in steps of `COPY_UNROLL` vectors where the run has that many: the last step
/// ends at `hi`, overlapping the one before it, so there is no tail loop.
pub fn copy_run(e: &mut Emitter, from: Value, to: Value, lo: Value, hi: Value) {
    copy_run_through(e, None, [from, to], [lo, hi]);
}

/// [`copy_run`], each element what `load` makes of `from`'s, if there is a `load`.
pub fn copy_run_through(
    e: &mut Emitter,
    load: Option<&ElementLoad>,
    [from, to]: [Value; 2],
    [lo, hi]: [Value; 2],
) {
    let count = e.sub(hi, lo);
    let copy = |e: &mut Emitter, i: Value, vectors: i64| {
        for v in 0..vectors {
            let value = load_through(e, load, F32X4, [from, i], 4 * v);
            e.store(Emitter::mutable(), value, to, i, 4 * v);
        }
    };
    let steps = |e: &mut Emitter, vectors: i64| {
        let last = e.add_imm(hi, -4 * vectors);
        e.for_loop(lo, last, 4 * vectors, |e, i| copy(e, i, vectors));
        copy(e, last, vectors);
    };
    let at_least = |e: &mut Emitter, floats: i64| {
        e.b.ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, count, floats)
    };
    let long = at_least(e, 4 * COPY_UNROLL);
    e.if_else(
        long,
        |e| steps(e, COPY_UNROLL),
        |e| {
            let vectors = at_least(e, 4);
            e.if_else(
                vectors,
                |e| steps(e, 1),
                |e| {
                    e.for_loop(lo, hi, 1, |e, i| {
                        let value = load_through(e, load, F32, [from, i], 0);
                        e.store(Emitter::mutable(), value, to, i, 0);
                    })
                },
            )
        },
    );
}

/// Calls `body` with a copy of `count` floats from one address to another (`copy(e, from,
/// to)`), for runs that are all `count` long. Where that is most often `usual` floats, a
/// constant of at most [`STRAIGHT_FLOATS`], `body` is emitted twice: with a copy of exactly
/// that many, without a loop, when `count` is `usual`, and with [`copy_run`] otherwise.
pub fn copy_runs_of(
    e: &mut Emitter,
    count: Value,
    usual: usize,
    body: impl Fn(&mut Emitter, &dyn Fn(&mut Emitter, Value, Value)),
) {
    let general = |e: &mut Emitter| {
        body(e, &|e: &mut Emitter, from, to| {
            let zero = e.int(0);
            copy_run(e, from, to, zero, count)
        })
    };
    if usual > STRAIGHT_FLOATS {
        return general(e);
    }
    let is_usual = e.b.ins().icmp_imm_s(IntCC::Equal, count, usual as i64);
    e.if_else(
        is_usual,
        |e| {
            body(e, &|e: &mut Emitter, from, to| {
                copy_floats(e, from, to, usual)
            })
        },
        general,
    );
}

/// Copies `count` floats, a number known when generating code, from `from` to `to` without a
/// loop: f32x4 vectors, the last ending at the run's end (overlapping the one before where
/// `count` is not a multiple of four), or single floats where there are fewer than four.
/// `from` is not written meanwhile.
pub fn copy_floats(e: &mut Emitter, from: Value, to: Value, count: usize) {
    let starts: Vec<(Type, i64)> = if count >= 4 {
        let vectors = count.div_ceil(4) as i64;
        (0..vectors)
            .map(|v| (F32X4, (4 * v).min(count as i64 - 4)))
            .collect()
    } else {
        (0..count as i64).map(|i| (F32, i)).collect()
    };
    let zero = e.int(0);
    for (ty, offset) in starts {
        let value = e.load(ty, Emitter::frozen(), from, zero, offset);
        e.store(Emitter::mutable(), value, to, zero, offset);
    }
}

/// The longest run [`copy_runs_of`] copies without a loop.
const STRAIGHT_FLOATS: usize = 16;

/// Vectors per step of [`copy_run`]: a panel row of `NR` floats in two steps.
const COPY_UNROLL: i64 = 4;

/// `to[i * stride] = 0` for `i` in `lo..hi`.
pub fn zero_run(e: &mut Emitter, to: Value, stride: i64, lo: Value, hi: Value) {
    if stride == 1 {
        e.vector_loop(lo, hi, UNROLL, |e, i, ty| {
            let zero = e.constant(ty, 0.0);
            e.store(Emitter::mutable(), zero, to, i, 0);
        });
    } else {
        let zero = e.float(0.0);
        e.for_loop(lo, hi, 1, |e, i| {
            let index = e.mul_imm(i, stride);
            e.store(Emitter::mutable(), zero, to, index, 0);
        });
    }
}

/// One K block of packed operands for [`multiply`]: `m_panels` A panels from `a`, `a_stride`
/// floats apart, and `n_panels` B panels from `b`, `b_stride` floats apart, each `kc` deep
/// from its first float on.
pub struct Block {
    pub kc: Value,
    pub a: Value,
    /// How far apart A's rows lie, in floats, when they are read where they lie (a row-major
    /// matrix's); 0 for packed panels.
    pub a_rows: Value,
    pub a_stride: Value,
    pub m_panels: Value,
    /// The rows of those panels that are wanted: `MR` each, but maybe fewer in the last.
    pub m_rows: Value,
    pub b: Value,
    pub b_stride: Value,
    /// Where B's rows start, in floats from a panel's start (`kc` i64 offsets), when they are
    /// read where they lie; null (0) for packed panels.
    pub b_rows: Value,
    pub n_panels: Value,
}

/// `C (+)= A · B` over one K block, tile by tile into `c` (row stride `ldc`): tile `(i, j)` at
/// float `i*MR*ldc + j*NR`. `first` (an integer, nonzero for the first K block) overwrites the
/// tiles instead of adding to them. Each B panel stays in cache while every A panel passes it.
pub fn multiply(e: &mut Emitter, block: &Block, c: Value, ldc: i64, first: Value) {
    let start = e.int(0);
    let ldc_value = e.int(ldc);
    e.for_loop(start, block.n_panels, 1, |e, j| {
        let b_index = e.mul(j, block.b_stride);
        let b = e.at(block.b, b_index);
        let c_column = e.at_scaled(c, j, NR as i64);
        let start = e.int(0);
        e.for_loop(start, block.m_panels, 1, |e, i| {
            let a_index = e.mul(i, block.a_stride);
            let a = e.at(block.a, a_index);
            let tile = e.at_scaled(c_column, i, (MR as i64) * ldc);
            let rows_before = e.mul_imm(i, MR as i64);
            let rows_left = e.sub(block.m_rows, rows_before);
            let sizes = [block.kc, e.min_imm(rows_left, MR as i64)];
            let (a, b) = ([a, block.a_rows], [b, block.b_rows]);
            e.if_else(
                first,
                |e| e.microkernel(sizes, a, b, tile, ldc_value, false),
                |e| e.microkernel(sizes, a, b, tile, ldc_value, true),
            );
        });
    });
}

/// What a contraction computes from each element of its result as it writes it out (a fused
/// chain's steps after the contraction): elementwise `steps` over the result (input 0) and
/// `inputs` (1 on), each read with strides along the result's axes, its trailing column axes
/// merged into one (positions of a convolution) along which they are 1 or 0. It writes
/// `result`, and adds up `sums` along each row of the product (a convolution's channels).
pub struct Epilogue {
    pub steps: Vec<Step>,
    pub inputs: Vec<(Slot, Vec<i64>)>,
    pub result: Arg,
    pub sums: Vec<(Arg, RowSum)>,
}

/// What an epilogue adds up along each row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowSum {
    /// The values.
    Plain,
    /// The squares of the values' deviations from the row's mean; only of the epilogue's
    /// result, which the write-out reads back. Each block of a row keeps its count, sum and
    /// squared deviations from its own mean, and [`Partials::add_up`] combines them (Chan et
    /// al.'s formula): no difference of two large sums, as `E[x²] - E[x]²` would take.
    SquaredDeviations,
}

impl RowSum {
    /// Floats each block keeps per row: the sum; or the count, the sum and the squared
    /// deviations.
    fn partials(self) -> usize {
        match self {
            RowSum::Plain => 1,
            RowSum::SquaredDeviations => 3,
        }
    }
}

impl Epilogue {
    /// The result as it is.
    pub fn none() -> Epilogue {
        Epilogue {
            steps: Vec::new(),
            inputs: Vec::new(),
            result: Arg::Input(0),
            sums: Vec::new(),
        }
    }

    /// Whether the write-out computes nothing: the result as it is, no sums.
    pub fn is_none(&self) -> bool {
        self.steps.is_empty() && self.sums.is_empty()
    }

    /// Where a contraction whose tasks write `count` blocks of rows puts each block's row sums
    /// (`count` per row for each sum) before they are added up, if the epilogue sums; `rows`
    /// is the rows of the whole result (a convolution's channels).
    pub fn partials(&self, sink: &mut KernelSink, count: usize, rows: usize) -> Option<Partials> {
        let floats: usize = self.sums.iter().map(|(_, sum)| sum.partials()).sum();
        (!self.sums.is_empty()).then(|| Partials {
            slot: sink.workspace(floats * count * rows),
            count,
            rows,
            sums: self.sums.iter().map(|&(_, sum)| sum).collect(),
        })
    }

    /// The epilogue's inputs where a block starts at `coordinates` (along the result's axes,
    /// columns merged), its rows along axis `row_axis`.
    pub fn block_inputs(
        &self,
        e: &mut Emitter,
        coordinates: &[Value],
        row_axis: usize,
    ) -> Vec<BlockInput> {
        self.inputs
            .iter()
            .map(|(slot, strides)| {
                let mut start = e.buffer(*slot);
                for (&coordinate, &stride) in coordinates.iter().zip(strides) {
                    start = e.at_scaled(start, coordinate, stride);
                }
                BlockInput {
                    start,
                    row_stride: strides[row_axis],
                    col_stride: *strides.last().expect("a column axis"),
                }
            })
            .collect()
    }
}

/// The row sums of an epilogue's sums, block by block: partial `s` of row `r` of block `b` is
/// float `(s * count + b) * rows + r` of a workspace, each sum taking [`RowSum::partials`]
/// partials. A kernel after the contraction's adds each row's blocks in block order, so the
/// sums do not depend on how tasks are dealt out.
pub struct Partials {
    slot: Slot,
    count: usize,
    rows: usize,
    sums: Vec<RowSum>,
}

impl Partials {
    /// Where block `block`'s sums go from row `row` on, for [`copy_block`].
    pub fn at(&self, e: &mut Emitter, block: Value, row: Value) -> BlockSums {
        let base = e.buffer(self.slot);
        let start = e.mul_imm(block, self.rows as i64);
        let start = e.add(start, row);
        BlockSums {
            start: e.at(base, start),
            stride: (self.count * self.rows) as i64,
        }
    }

    /// The kernel that adds the blocks' sums into the output after `result` (the contraction's
    /// result, in the same buffer), sum after sum. A block's partials of consecutive rows lie
    /// side by side, so each task takes `LANES` rows as one vector: a quarter of the loads and
    /// divisions, and chains of additions that do not wait on each other. Tasks: groups of
    /// `LANES` rows.
    pub fn add_up(&self, sink: &mut KernelSink, result: &Operand) {
        let (count, rows) = (self.count, self.rows);
        let lanes = LANES as usize;
        sink.kernel(rows.div_ceil(lanes), 0, |e| {
            let (partials, out) = (e.buffer(self.slot), e.buffer(result.slot));
            let sums = e.int(result.len() as i64);
            let sums = e.at(out, sums);
            let (begin, end) = (e.begin(), e.end());
            let first_row = e.mul_imm(begin, LANES);
            let end_row = e.mul_imm(end, LANES);
            let rows_end = e.int(rows as i64);
            let end_row = e.b.ins().smin(end_row, rows_end);
            e.vector_loop(first_row, end_row, 1, |e, row, ty| {
                let first = e.at(partials, row);
                // Partial `s` of block `b`: float `(s * count + b) * rows` from `first`.
                let partial = |e: &mut Emitter, s: usize, block: Value| {
                    let index = e.add_imm(block, (s * count) as i64);
                    let index = e.mul_imm(index, rows as i64);
                    e.load(ty, Emitter::frozen(), first, index, 0)
                };
                let total = |e: &mut Emitter, s: usize| {
                    let zero = e.constant(ty, 0.0);
                    let total = e.variable(ty, zero);
                    e.for_range(0, count as i64, |e, block| {
                        let value = partial(e, s, block);
                        let sum = e.get(total);
                        let sum = e.b.ins().fadd(sum, value);
                        e.set(total, sum);
                    });
                    e.get(total)
                };
                let mut s = 0;
                for (k, &sum) in self.sums.iter().enumerate() {
                    let value = match sum {
                        RowSum::Plain => total(e, s),
                        RowSum::SquaredDeviations => {
                            let [n, sum] = [s, s + 1].map(|s| total(e, s));
                            let mean = e.b.ins().fdiv(sum, n);
                            // Σ_b M2_b + n_b (mean_b - mean)²
                            let zero = e.constant(ty, 0.0);
                            let squares = e.variable(ty, zero);
                            e.for_range(0, count as i64, |e, block| {
                                let [n, sum, own] = [s, s + 1, s + 2].map(|s| partial(e, s, block));
                                let block_mean = e.b.ins().fdiv(sum, n);
                                let apart = e.b.ins().fsub(block_mean, mean);
                                let spread = e.b.ins().fmul(apart, apart);
                                let spread = e.b.ins().fmul(n, spread);
                                let so_far = e.get(squares);
                                let so_far = e.b.ins().fadd(so_far, own);
                                let so_far = e.b.ins().fadd(so_far, spread);
                                e.set(squares, so_far);
                            });
                            e.get(squares)
                        }
                    };
                    let index = e.add_imm(row, (k * rows) as i64);
                    e.store(Emitter::mutable(), value, sums, index, 0);
                    s += sum.partials();
                }
            });
        });
    }
}

/// Where a block's row sums go: partial `s` of row `r` at float `s * stride + r` from `start`.
pub struct BlockSums {
    start: Value,
    stride: i64,
}

/// An epilogue input over one block: the address of its element at the block's first, and
/// its strides along the block's rows and columns (1, or 0 where it is constant along them).
pub struct BlockInput {
    start: Value,
    row_stride: i64,
    col_stride: i64,
}

/// Puts a block of a convolution's result, already written, through `epilogue` in place:
/// `rows x cols` floats at `at` (row stride `ld`), whose first is element `[image, channel,
/// column]` of the result (columns merged), channels along its rows; their row sums go to
/// `partials` as block `block`'s.
pub fn epilogue_in_place(
    e: &mut Emitter,
    (epilogue, partials): (&Epilogue, Option<&Partials>),
    (at, ld): (Value, i64),
    [rows, cols]: [Value; 2],
    [image, channel, column]: [Value; 3],
    block: Value,
) {
    let inputs = epilogue.block_inputs(e, &[image, channel, column], 1);
    let sums = partials.map(|partials| partials.at(e, block, channel));
    copy_block(
        e,
        [at, at],
        [ld, ld],
        ([rows, cols], Runs::Together),
        epilogue,
        &inputs,
        sums.as_ref(),
    );
}

/// Where the columns of a block copied out of scratch lie there, along each of its rows.
#[derive(Clone, Copy)]
pub enum Runs {
    /// Column `j` at column `j`.
    Together,
    /// Columns `lo..hi` of a plane of rows `width` columns long (`widths: [width, kept]`), of
    /// which only the first `kept` of each row are the block's (a convolution's output
    /// positions, computed over rows of its padded input): column `j` of the block is the
    /// `j`-th such column from `lo` on. `first` is `kept_before(lo)`, which the caller has
    /// worked out already and the copy's row loop need not again.
    Rows {
        widths: [usize; 2],
        columns: [Value; 2],
        first: Value,
    },
}

impl Runs {
    /// Calls `body([lo, hi], shift)` for each run: the block's columns `lo..hi`, at column
    /// `j + shift` in scratch.
    fn for_each(
        &self,
        e: &mut Emitter,
        cols: Value,
        mut body: impl FnMut(&mut Emitter, [Value; 2], Value),
    ) {
        let &Runs::Rows {
            widths: [width, kept],
            columns: [lo, hi],
            first,
        } = self
        else {
            let zero = e.int(0);
            return body(e, [zero, cols], zero);
        };
        for_each_span(e, width, [lo, hi], |e, span| {
            let end = e.min_imm(span.end, kept as i64);
            let length = e.sub(end, span.start);
            let length = e.max_imm(length, 0);
            let before = e.mul_imm(span.block, kept as i64);
            let at = e.add(before, span.start);
            let to = e.sub(at, first);
            let past = e.add(to, length);
            let from = e.add(span.col, span.start);
            let shift = e.sub(from, to);
            body(e, [to, past], shift);
        });
    }
}

/// How many of the columns kept in rows of `[width, kept]` columns (the first `kept` of each
/// row) lie before column `column`.
pub fn kept_before(e: &mut Emitter, [width, kept]: [usize; 2], column: Value) -> Value {
    let row = e.div_imm(column, width as i64);
    let within = e.rem_imm(column, width as i64);
    let within = e.min_imm(within, kept as i64);
    let rows_before = e.mul_imm(row, kept as i64);
    e.add(rows_before, within)
}

/// Writes `rows x cols` floats from `src` (row stride `src_ld`; scratch the kernel wrote, its
/// columns in `runs`) to `dst` (row stride `dst_ld`), through `epilogue`, whose inputs over
/// this block are `inputs`; each row's sums to `sums`.
pub fn copy_block(
    e: &mut Emitter,
    [src, dst]: [Value; 2],
    [src_ld, dst_ld]: [i64; 2],
    ([rows, cols], runs): ([Value; 2], Runs),
    epilogue: &Epilogue,
    inputs: &[BlockInput],
    sums: Option<&BlockSums>,
) {
    let start = e.int(0);
    e.for_loop(start, rows, 1, |e, r| {
        let from = e.at_scaled(src, r, src_ld);
        let to = e.at_scaled(dst, r, dst_ld);
        // Per input: its row, and for one constant along the row, that value as a float and
        // as a vector.
        let input_rows: Vec<(Value, Option<[Value; 2]>)> = inputs
            .iter()
            .map(|input| {
                let row = e.at_scaled(input.start, r, input.row_stride);
                let constant = (input.col_stride == 0).then(|| {
                    let zero = e.int(0);
                    let value = e.load(F32, Emitter::frozen(), row, zero, 0);
                    [value, e.splat(F32X4, value)]
                });
                (row, constant)
            })
            .collect();
        let zero = e.int(0);
        // One running total per value summed: batch norm's statistics sum one value plainly
        // and, for its squared deviations, again for its mean.
        let mut summed: Vec<Arg> = Vec::new();
        for &(arg, _) in &epilogue.sums {
            if !summed.contains(&arg) {
                summed.push(arg);
            }
        }
        let totals: Vec<Accumulators> = summed
            .iter()
            .map(|_| Accumulators::new(e, Reduce::Sum))
            .collect();
        runs.for_each(e, cols, |e, [lo, hi], shift| {
            let from = e.at(from, shift);
            fold_together(&totals, e, lo, hi, |e, i, ty| {
                let mut loaded = vec![e.load(ty, Emitter::mutable(), from, i, 0)];
                for &(row, constant) in &input_rows {
                    loaded.push(match constant {
                        Some([scalar, vector]) => {
                            if ty == F32 {
                                scalar
                            } else {
                                vector
                            }
                        }
                        None => e.load(ty, Emitter::frozen(), row, i, 0),
                    });
                }
                let values = emit_each_step(e, &epilogue.steps, &loaded, ty);
                let value = |arg: Arg| arg_value(arg, &loaded, &values);
                e.store(Emitter::mutable(), value(epilogue.result), to, i, 0);
                summed.iter().map(|&arg| value(arg)).collect()
            });
        });
        let Some(sums) = sums else { return };
        let totals: Vec<Value> = totals.iter().map(|total| total.total(e)).collect();
        let mut s = 0;
        for &(arg, sum) in &epilogue.sums {
            let total = totals[summed
                .iter()
                .position(|&a| a == arg)
                .expect("a summed value")];
            let mut store = |e: &mut Emitter, value: Value| {
                e.store(
                    Emitter::mutable(),
                    value,
                    sums.start,
                    r,
                    s as i64 * sums.stride,
                );
                s += 1;
            };
            match sum {
                RowSum::Plain => store(e, total),
                RowSum::SquaredDeviations => {
                    // A second pass over the row just written (the result), in cache.
                    let count = e.b.ins().fcvt_from_sint(F32, cols);
                    let mean = e.b.ins().fdiv(total, count);
                    let means = [e.splat(F32X4, mean), mean];
                    let squares = reduce_range(e, zero, cols, Reduce::Sum, |e, i, ty| {
                        let value = e.load(ty, Emitter::mutable(), to, i, 0);
                        let apart = e.b.ins().fsub(value, means[usize::from(ty == F32)]);
                        e.b.ins().fmul(apart, apart)
                    });
                    for value in [count, total, squares] {
                        store(e, value);
                    }
                }
            }
        }
    });
}

/// The part of one block of `size` consecutive indices inside a range `lo..hi`: indices
/// `start..end` of block `block`, index `j` being the range's `col + j`. Output positions in
/// blocks of an output row (im2col columns), or the weight gradient's B columns in blocks of
/// taps.
pub struct Span {
    pub block: Value,
    pub col: Value,
    pub start: Value,
    pub end: Value,
}

/// Calls `body` once for each block of `size` indices that `lo..hi` (at least one) crosses.
pub fn for_each_span(
    e: &mut Emitter,
    size: usize,
    [lo, hi]: [Value; 2],
    body: impl FnOnce(&mut Emitter, &Span),
) {
    let size = size as i64;
    let first_block = e.div_imm(lo, size);
    let last = e.add_imm(hi, -1);
    let last_block = e.div_imm(last, size);
    let block_end = e.add_imm(last_block, 1);
    e.for_loop(first_block, block_end, 1, |e, block| {
        let block_start = e.mul_imm(block, size);
        let before = e.sub(lo, block_start);
        let start = e.max_imm(before, 0);
        let after = e.sub(hi, block_start);
        let end = e.min_imm(after, size);
        let col = e.sub(block_start, lo);
        let span = Span {
            block,
            col,
            start,
            end,
        };
        body(e, &span);
    });
}

/// A task's tile of C in panels: its first panel and panel count along each axis.
pub struct Tile {
    pub first_panel: [Value; 2],
    pub panels: [Value; 2],
}

impl Tile {
    /// Tile `index` of tiles of `size` panels, out of `total` panels, along rows and columns.
    pub fn new(e: &mut Emitter, index: [Value; 2], size: [usize; 2], total: [usize; 2]) -> Tile {
        let mut first_panel = index;
        let mut panels = index;
        for axis in 0..2 {
            first_panel[axis] = e.mul_imm(index[axis], size[axis] as i64);
            let left = e.int(total[axis] as i64);
            let left = e.sub(left, first_panel[axis]);
            panels[axis] = e.min_imm(left, size[axis] as i64);
        }
        Tile {
            first_panel,
            panels,
        }
    }

    /// The tile's rows and columns inside a matrix of `extent` (`[rows, cols]`).
    pub fn extent(&self, e: &mut Emitter, extent: [usize; 2]) -> (Value, Value) {
        let [rows, cols] = [0, 1].map(|axis| {
            let width = [MR, NR][axis] as i64;
            let first = e.mul_imm(self.first_panel[axis], width);
            let whole = e.mul_imm(self.panels[axis], width);
            let left = e.int(extent[axis] as i64);
            let left = e.sub(left, first);
            e.min(whole, left)
        });
        (rows, cols)
    }
}

/// Where a task keeps its packed panels and C tiles in the thread's scratch: consecutive
/// regions, each starting on a cache line.
pub struct ScratchLayout {
    offsets: Vec<usize>,
    total: usize,
}

impl ScratchLayout {
    /// Regions of these sizes, in floats.
    pub fn new(sizes: &[usize]) -> ScratchLayout {
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut total = 0;
        for size in sizes {
            offsets.push(total);
            total += size.div_ceil(16) * 16;
        }
        ScratchLayout { offsets, total }
    }

    /// Floats of scratch the task needs.
    pub fn floats(&self) -> usize {
        self.total
    }

    /// The address of region `region` in this thread's scratch.
    pub fn region(&self, e: &mut Emitter, region: usize) -> Value {
        let scratch = e.scratch();
        let offset = e.int(self.offsets[region] as i64);
        e.at(scratch, offset)
    }
}

/// Runs `body(e, start, len, first)` over `blocks` blocks of `size` of `0..total` (the last
/// possibly shorter), in order: the K blocks of a product. `first` is nonzero in the first block,
/// for [`multiply`].
pub fn for_each_k_block(
    e: &mut Emitter,
    (blocks, size): (usize, usize),
    total: usize,
    body: impl FnOnce(&mut Emitter, Value, Value, Value),
) {
    e.for_range(0, blocks as i64, |e, block| {
        let start = e.mul_imm(block, size as i64);
        let left = e.int(total as i64);
        let left = e.sub(left, start);
        let len = e.min_imm(left, size as i64);
        let first = e.b.ins().icmp_imm_s(IntCC::Equal, block, 0);
        body(e, start, len, first);
    });
}

/// Columns per pass of the generated microkernel: `MR` rows of two f32x4 make 12 accumulators,
/// which with the two `b` vectors and a broadcast fit Cranelift's 16 vector registers.
const PASS_COLUMNS: usize = 8;

/// Defines `(kc, height, a, b, rows, c, ldc, accumulate)`: `c[i*ldc + j] (+)= sum_k a[k*MR + i]
/// b[row(k) + j]`, `row(k)` being `k*NR`, or `rows[k]` unless `rows` is null, in `NR / 8` passes
/// over the panels. It multiplies all `MR` rows but writes only the first `height`: it serves
/// only CPUs without AVX2, where skipping rows is not worth a kernel per height.
pub fn define_microkernel(sink: &mut KernelSink) -> FuncId {
    sink.define(9, |e: &mut Emitter| {
        let [kc, height, a, a_rows, b, rows, c, ldc, accumulate] =
            [0, 1, 2, 3, 4, 5, 6, 7, 8].map(|i| e.params[i]);
        let flags = Emitter::frozen();
        // A's row `i` starts at `a_row_starts[i]`, its element `k` `k * a_step` floats on: a
        // packed panel's rows interleave; rows where they lie are `a_rows` apart, those past
        // `height` (not to be read) in place of the last wanted one.
        let placed_a = e.b.ins().icmp_imm_s(IntCC::NotEqual, a_rows, 0);
        let last_row = e.add_imm(height, -1);
        let last_row = e.min_imm(last_row, MR as i64 - 1);
        let last_row = e.max_imm(last_row, 0);
        let a_row_starts: Vec<Value> = (0..MR as i64)
            .map(|i| {
                let row = e.min_imm(last_row, i);
                let placed = e.mul(row, a_rows);
                let packed = e.int(i);
                let row = e.b.ins().select(placed_a, placed, packed);
                e.at(a, row)
            })
            .collect();
        let mr = e.int(MR as i64);
        let one = e.int(1);
        let a_step = e.b.ins().select(placed_a, one, mr);
        for pass in 0..NR / PASS_COLUMNS {
            let zero = e.constant(F32X4, 0.0);
            let acc: Vec<_> = (0..MR * 2).map(|_| e.variable(F32X4, zero)).collect();
            // One k loop per way of finding B's rows, so that neither tests which in its body.
            let k_loop = |e: &mut Emitter, placed: bool| {
                let start = e.int(0);
                e.for_loop(start, kc, 1, |e, k| {
                    let b_row = if placed {
                        let at = e.offset_entry(rows, k);
                        e.b.ins().load(I64, flags, at, 0)
                    } else {
                        e.b.ins().imul_imm_s(k, NR as i64)
                    };
                    let b0 = e.load(F32X4, flags, b, b_row, (pass * PASS_COLUMNS) as i64);
                    let b1 = e.load(F32X4, flags, b, b_row, (pass * PASS_COLUMNS + 4) as i64);
                    let a_column = e.mul(k, a_step);
                    for (i, &a_row) in a_row_starts.iter().enumerate() {
                        let ai = e.load(F32, flags, a_row, a_column, 0);
                        let ai = e.splat(F32X4, ai);
                        for (j, bj) in [b0, b1].into_iter().enumerate() {
                            let sum = e.get(acc[2 * i + j]);
                            let sum = e.b.ins().fma(ai, bj, sum);
                            e.set(acc[2 * i + j], sum);
                        }
                    }
                });
            };
            e.if_else(rows, |e| k_loop(e, true), |e| k_loop(e, false));
            for i in 0..MR {
                let wanted =
                    e.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThan, height, i as i64);
                e.if_else(
                    wanted,
                    |e| {
                        let row = e.b.ins().imul_imm_s(ldc, i as i64);
                        for j in 0..2 {
                            let offset = (pass * PASS_COLUMNS + 4 * j) as i64;
                            let sum = e.get(acc[2 * i + j]);
                            let old = e.load(F32X4, Emitter::mutable(), c, row, offset);
                            let added = e.b.ins().fadd(sum, old);
                            let value = e.b.ins().select(accumulate, added, sum);
                            e.store(Emitter::mutable(), value, c, row, offset);
                        }
                    },
                    |_| {},
                );
            }
        }
    })
}
