//! Matrix multiplication of two matrices, either operand optionally transposed: dense layers
//! are `x · wᵀ`, their backward passes `dy · w` and `dyᵀ · x`.

use super::{arity, OpKind};
use crate::codegen::emit::Emitter;
use crate::codegen::gemm::{self, Block, Epilogue, IndexMath, Matrices, ScratchLayout, Tile, KC};
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::InstBuilder;
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

/// Both operands packed once, then tasks over tiles of the product, each summing every K block
/// and writing its tile through `epilogue`.
pub fn emit(
    transpose_a: bool,
    transpose_b: bool,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
    epilogue: &Epilogue,
) {
    let (a, b) = (&inputs[0], &inputs[1]);
    let (m, n) = (output.shape[0], output.shape[1]);
    let k = if transpose_a { a.shape[0] } else { a.shape[1] };
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
    // The C tiles, and the offsets of B's rows (i64, two floats each).
    let scratch = ScratchLayout::new(&[mt * MR * ldc, 2 * k_blocks.1]);
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
                gemm::multiply(e, &block, c_tiles, ldc as i64, first);
            });
            let first_row = e.mul_imm(tile.first_panel[0], MR as i64);
            let first_col = e.mul_imm(tile.first_panel[1], NR as i64);
            let row_start = e.at_scaled(y, first_row, n as i64);
            let to = e.at(row_start, first_col);
            let inputs = epilogue.block_inputs(e, &[first_row, first_col], 0);
            let (lds, extent) = ([ldc as i64, n as i64], [rows, cols]);
            gemm::copy_block(e, [c_tiles, to], lds, extent, epilogue, &inputs, None);
        });
    });
}
