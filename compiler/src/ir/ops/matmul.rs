//! Matrix multiplication of two matrices, either operand optionally transposed: dense layers
//! are `x · wᵀ`, their backward passes `dy · w` and `dyᵀ · x`.

use super::{arity, OpKind};
use crate::codegen::emit::{Emitter, F32X4};
use crate::codegen::gemm::{
    self, Block, Epilogue, IndexMath, Matrices, Runs, ScratchLayout, Tile, KC,
};
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use netc_runtime::microkernel::{MR, NR};

pub fn shape(transpose_a: bool, transpose_b: bool, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    let (&[ar, ac], &[br, bc]) = (inputs[0].as_slice(), inputs[1].as_slice()) else {
        return Err("expected two matrices".into());
    };
    let (m, k) = if transpose_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if transpose_b { (bc, br) } else { (br, bc) };
    if k != k2 {
        return Err(format!("inner extents {k} and {k2} differ"));
    }
    Ok(vec![m, n])
}

/// Element `(r, c)` of matrix `t`, or of its transpose.
fn element(t: &Tensor, transposed: bool, r: usize, c: usize) -> f64 {
    let cols = t.shape[1];
    if transposed {
        t.data[c * cols + r]
    } else {
        t.data[r * cols + c]
    }
}

pub fn eval(transpose_a: bool, transpose_b: bool, inputs: &[&Tensor]) -> Tensor {
    let (a, b) = (inputs[0], inputs[1]);
    let y_shape =
        shape(transpose_a, transpose_b, &[&a.shape, &b.shape]).expect("verified shapes fit");
    let (m, n) = (y_shape[0], y_shape[1]);
    let k = if transpose_a { a.shape[0] } else { a.shape[1] };
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|p| element(a, transpose_a, i, p) * element(b, transpose_b, p, j))
                .sum();
        }
    }
    Tensor::new(y_shape, y)
}

/// With `A = op(a)`, `B = op(b)` and `y = A·B`: `dA = dy·Bᵀ` and `dB = Aᵀ·dy`; where an operand
/// was transposed, its gradient is the transpose of that, which the product can absorb by
/// swapping its factors (`(dy·Bᵀ)ᵀ = B·dyᵀ`).
pub fn vjp(
    transpose_a: bool,
    transpose_b: bool,
    op: &Op,
    graph: &mut Graph,
    grad: ValueId,
) -> Vec<Option<ValueId>> {
    let (a, b, dy) = (op.inputs[0], op.inputs[1], grad);
    let matmul = |transpose_a, transpose_b| OpKind::MatMul {
        transpose_a,
        transpose_b,
    };
    let ((da_kind, da_args), (db_kind, db_args)) = match (transpose_a, transpose_b) {
        // y = a·b: da = dy·bᵀ, db = aᵀ·dy.
        (false, false) => (
            (matmul(false, true), [dy, b]),
            (matmul(true, false), [a, dy]),
        ),
        // y = a·bᵀ: da = dy·b, db = dyᵀ·a.
        (false, true) => (
            (matmul(false, false), [dy, b]),
            (matmul(true, false), [dy, a]),
        ),
        // y = aᵀ·b: da = b·dyᵀ, db = a·dy.
        (true, false) => (
            (matmul(false, true), [b, dy]),
            (matmul(false, false), [a, dy]),
        ),
        // y = aᵀ·bᵀ: da = bᵀ·dyᵀ, db = dyᵀ·aᵀ.
        (true, true) => ((matmul(true, true), [b, dy]), (matmul(true, true), [dy, a])),
    };
    let layer = op.layer.as_deref();
    let da = graph.op(da_kind, &da_args, layer);
    let db = graph.op(db_kind, &db_args, layer);
    vec![Some(da), Some(db)]
}

/// The most rows and columns of C one task keeps in scratch, in panels.
const MOST_PANELS: [usize; 2] = [16, 8];

/// The most floats of a product whose tiles the microkernel writes in place (see [`emit`]):
/// 4 MiB, small enough to stay in the last-level cache.
const DIRECT_WRITE_MOST: usize = 1 << 20;

/// Floats a product `m x k` by `k x n` packs: its transposed operands (see [`emit`]).
fn packed_floats([transpose_a, transpose_b]: [bool; 2], [m, n, k]: [usize; 3]) -> usize {
    usize::from(transpose_a) * m * k + usize::from(transpose_b) * n * k
}

/// Transposed operands packed once, then tasks over tiles of the product, each summing every K
/// block and writing its tile through `epilogue`; a tile with neither an epilogue nor a second
/// K block (a dense layer's weight gradient, of depth the batch) of a product of at most
/// [`DIRECT_WRITE_MOST`] floats is written by the microkernel in place, where its column panels
/// are whole.
///
/// Where packing the transposed product `yᵀ = op(b)ᵀ · op(a)ᵀ` instead costs less, counting the
/// transposition of each tile before its write-out, that is what the tiles compute: a dense
/// layer's `x · wᵀ` then reads the weight's rows where they lie and packs only x, which is
/// smaller at the batch sizes training uses (the weight would be packed again at every step, as
/// the update changes it).
pub fn emit(
    transpose_a: bool,
    transpose_b: bool,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
    epilogue: &Epilogue,
) {
    let (m, n) = (output.shape[0], output.shape[1]);
    let k = if transpose_a {
        inputs[0].shape[0]
    } else {
        inputs[0].shape[1]
    };
    let swapped = packed_floats([!transpose_b, !transpose_a], [n, m, k]) + m * n
        < packed_floats([transpose_a, transpose_b], [m, n, k]);
    // The product the tiles compute: `m x k` by `k x n`, `a` and `b` as stored.
    let (transpose_a, transpose_b, a, b, m, n) = match swapped {
        false => (transpose_a, transpose_b, &inputs[0], &inputs[1], m, n),
        true => (!transpose_b, !transpose_a, &inputs[1], &inputs[0], n, m),
    };
    // An operand stored untransposed is read where it lies: A's rows `k` floats apart, B's rows
    // `n` apart (through a table of their offsets). A transposed one is packed: element (i, j)
    // of its `rows x cols` matrix is x[j*rows + i].
    let transposed = |slot, rows, cols| Matrices {
        slot,
        count: 1,
        stride: 0,
        rows,
        cols,
        row_stride: 1,
        col_stride: rows,
    };
    let packed_a = transpose_a.then(|| gemm::pack_a(sink, &transposed(a.slot, m, k)));
    let packed_b = transpose_b.then(|| gemm::pack_b(sink, &transposed(b.slot, k, n)));
    let (m_panels, n_panels) = (gemm::row_panels(m), gemm::col_panels(n));
    let (mt, nt) = gemm::tiles(1, m_panels, n_panels, MOST_PANELS);
    let (m_tiles, n_tiles) = (m_panels.div_ceil(mt), n_panels.div_ceil(nt));
    let k_blocks = gemm::balanced_blocks(k, KC);
    let ldc = nt * NR;
    // Whole 4x4 blocks of a tile are transposed, rows past the product's included.
    let tile_rows = if swapped {
        (mt * MR).next_multiple_of(4)
    } else {
        mt * MR
    };
    // The C tiles, the offsets of B's rows (i64, two floats each), and a transposed tile.
    let transposed_floats = if swapped { ldc * tile_rows } else { 0 };
    let scratch = ScratchLayout::new(&[tile_rows * ldc, 2 * k_blocks.1, transposed_floats]);
    // With nothing to apply on the way and no second K block to add, the microkernel may
    // write a tile straight into y, in y's orientation, if y is small enough to stay in cache:
    // into a larger y, rows `n` floats apart, its tile stores miss the cache and the TLB more
    // than one stream of whole rows out of scratch does (alexnet's weight gradients at batch 8:
    // fc8's, 1000 by 4096, took 3.1-3.5 ms written directly, 2.2-2.3 ms through scratch; fc6's,
    // 4096 by 9216, 27-28 against 21-22 ms).
    let direct = epilogue.is_none() && k_blocks.0 == 1 && !swapped && m * n <= DIRECT_WRITE_MOST;
    sink.kernel(m_tiles * n_tiles, scratch.floats(), |e| {
        let (a_matrix, b_matrix, y) = (
            e.buffer(packed_a.unwrap_or(a.slot)),
            e.buffer(packed_b.unwrap_or(b.slot)),
            e.buffer(output.slot),
        );
        let (c_tiles, b_offsets) = (scratch.region(e, 0), scratch.region(e, 1));
        if !transpose_b {
            // Row `k` of every K block, from the block's first.
            e.for_range(0, k_blocks.1 as i64, |e, row| {
                let value = e.mul_imm(row, n as i64);
                let at = e.offset_entry(b_offsets, row);
                e.b.ins().store(Emitter::mutable(), value, at, 0);
            });
        }
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let [mi, ni] = e.decode(task, &[m_tiles, n_tiles])[..] else {
                unreachable!()
            };
            let tile = Tile::new(e, [mi, ni], [mt, nt], [m_panels, n_panels]);
            let a_tile = e.at_scaled(a_matrix, tile.first_panel[0], (k * MR) as i64);
            let (b_tile, b_stride) = match transpose_b {
                true => (
                    e.at_scaled(b_matrix, tile.first_panel[1], (k * NR) as i64),
                    k * NR,
                ),
                false => (e.at_scaled(b_matrix, tile.first_panel[1], NR as i64), NR),
            };
            let (rows, cols) = tile.extent(e, [m, n]);
            // The product of the tile's K blocks into `c` (row stride `c_ld`).
            let product = |e: &mut Emitter, c: Value, c_ld: usize| {
                gemm::for_each_k_block(e, k_blocks, k, |e, k0, kc, first| {
                    let (a, a_rows) = match transpose_a {
                        true => (e.at_scaled(a_tile, k0, MR as i64), e.int(0)),
                        false => (e.at(a_tile, k0), e.int(k as i64)),
                    };
                    let (b, b_rows) = match transpose_b {
                        true => (e.at_scaled(b_tile, k0, NR as i64), e.int(0)),
                        false => (e.at_scaled(b_tile, k0, n as i64), b_offsets),
                    };
                    let block = Block {
                        kc,
                        a,
                        a_rows,
                        a_stride: e.int((k * MR) as i64),
                        m_panels: tile.panels[0],
                        m_rows: rows,
                        b,
                        b_stride: e.int(b_stride as i64),
                        b_rows,
                        n_panels: tile.panels[1],
                    };
                    gemm::multiply(e, &block, c, c_ld as i64, first);
                });
            };
            let first_row = e.mul_imm(tile.first_panel[0], MR as i64);
            let first_col = e.mul_imm(tile.first_panel[1], NR as i64);
            // The tile through scratch, then written out: transposed back if `swapped`, and
            // through the epilogue.
            let through_scratch = |e: &mut Emitter| {
                product(e, c_tiles, ldc);
                // Where the tile goes in y: its first element, y's row stride, and the tile as
                // y's rows and columns see it, with its row stride.
                let (first, y_ld, from, from_ld, extent) = match swapped {
                    false => ([first_row, first_col], n, c_tiles, ldc, [rows, cols]),
                    true => {
                        let to = scratch.region(e, 2);
                        transpose_tile(e, c_tiles, to, [tile_rows, ldc]);
                        ([first_col, first_row], m, to, tile_rows, [cols, rows])
                    }
                };
                let row_start = e.at_scaled(y, first[0], y_ld as i64);
                let to = e.at(row_start, first[1]);
                let inputs = epilogue.block_inputs(e, &first, 0);
                let lds = [from_ld as i64, y_ld as i64];
                let block = (extent, Runs::Together);
                gemm::copy_block(e, [from, to], lds, block, epilogue, &inputs, None);
            };
            if !direct {
                return through_scratch(e);
            }
            // A tile of whole column panels is the microkernel's to write into y, which then
            // needs no copy; a last, narrower one would have it write past y's rows.
            let whole_width = e.mul_imm(tile.panels[1], NR as i64);
            let whole = e.b.ins().icmp(IntCC::Equal, cols, whole_width);
            e.if_else(
                whole,
                |e| {
                    let row_start = e.at_scaled(y, first_row, n as i64);
                    let to = e.at(row_start, first_col);
                    product(e, to, n);
                },
                through_scratch,
            );
        });
    });
}

/// Writes the transpose of the `rows x cols` floats at `from` (both multiples of 4, row stride
/// `cols`) to `to` (row stride `rows`), by 4x4 blocks transposed in registers.
fn transpose_tile(e: &mut Emitter, from: Value, to: Value, [rows, cols]: [usize; 2]) {
    e.for_range(0, (rows / 4) as i64, |e, block_row| {
        let first_row = e.mul_imm(block_row, 4);
        e.for_range(0, (cols / 4) as i64, |e, block_col| {
            let first_col = e.mul_imm(block_col, 4);
            let source = e.mul_imm(first_row, cols as i64);
            let source = e.add(source, first_col);
            let block = [0, 1, 2, 3]
                .map(|i| e.load(F32X4, Emitter::mutable(), from, source, i * cols as i64));
            let target = e.mul_imm(first_col, rows as i64);
            let target = e.add(target, first_row);
            for (t, row) in gemm::transpose4(e, block).into_iter().enumerate() {
                e.store(Emitter::mutable(), row, to, target, (t * rows) as i64);
            }
        });
    });
}
