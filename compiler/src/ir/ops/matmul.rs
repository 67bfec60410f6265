//! Matrix multiplication of two matrices, either operand optionally transposed: dense layers
//! are `x · wᵀ`, their backward passes `dy · w` and `dyᵀ · x`.

use super::{arity, OpKind};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};

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

// CODEGEN-STUB: replaced by the real code-generation rules.
pub fn emit(
    transpose_a: bool,
    transpose_b: bool,
    sink: &mut crate::codegen::KernelSink,
    inputs: &[crate::codegen::Operand],
    output: &crate::codegen::Operand,
) {
    let _ = (transpose_a, transpose_b, sink, inputs, output);
    panic!("internal error: no code generation for `emit` yet");
}
