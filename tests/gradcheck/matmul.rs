//! Gradient checks of the `matmul` primitives (see `gradcheck/mod.rs`), in all four transpose
//! combinations, and its values against a product written out by hand.

use super::{check_vjp, random_tensor};
use netc::interp::{EvalContext, Tensor};
use netc::ir::OpKind;
use proptest::prelude::*;

fn matmul(transpose_a: bool, transpose_b: bool, a: &Tensor, b: &Tensor) -> Tensor {
    let kind = OpKind::MatMul {
        transpose_a,
        transpose_b,
    };
    kind.eval(&[a, b], &EvalContext::default())
}

fn transpose(t: &Tensor) -> Tensor {
    let [r, c] = t.shape[..] else {
        panic!("a matrix")
    };
    let data = (0..c)
        .flat_map(|j| (0..r).map(move |i| t.data[i * c + j]))
        .collect();
    Tensor::new(vec![c, r], data)
}

#[test]
fn matmul_of_small_matrices() {
    let a = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = Tensor::new(vec![3, 2], vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    let expected = Tensor::new(vec![2, 2], vec![58.0, 64.0, 139.0, 154.0]);
    assert_eq!(matmul(false, false, &a, &b), expected);
    assert_eq!(matmul(true, false, &transpose(&a), &b), expected);
    assert_eq!(matmul(false, true, &a, &transpose(&b)), expected);
    assert_eq!(matmul(true, true, &transpose(&a), &transpose(&b)), expected);
}

proptest! {
    #![proptest_config(super::config())]

    #[test]
    fn matmul_gradients(
        [m, k, n] in prop::array::uniform3(1..=5usize),
        transpose_a in any::<bool>(),
        transpose_b in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let a = if transpose_a { vec![k, m] } else { vec![m, k] };
        let b = if transpose_b { vec![n, k] } else { vec![k, n] };
        let kind = OpKind::MatMul { transpose_a, transpose_b };
        let inputs = vec![random_tensor(a, seed, -1.0, 1.0), random_tensor(b, !seed, -1.0, 1.0)];
        check_vjp(kind, inputs, &[true, true], seed);
    }
}
