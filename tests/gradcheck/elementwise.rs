//! Gradient checks of the `elementwise` primitives (see `gradcheck/mod.rs`), and their values on
//! hand-computed cases. The strategies here (random shapes, shapes that broadcast to them) are
//! shared with the other families' checks.

use super::{assert_close, check_vjp, config, eval, random_tensor};
use netc::interp::Tensor;
use netc::ir::ops::{MapFn, OpKind};
use netc::ir::{Graph, InputKind};
use proptest::prelude::*;

/// A shape of rank at most `max_rank` with small extents; rank 0 is a scalar.
pub fn shape(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=3, 0..=max_rank)
}

/// A shape that broadcasts to `shape`: some leading axes dropped, some of the others 1.
pub fn broadcastable(shape: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let rank = shape.len();
    (0..=rank, prop::collection::vec(any::<bool>(), rank)).prop_map(move |(dropped, ones)| {
        (dropped..rank)
            .map(|i| if ones[i] { 1 } else { shape[i] })
            .collect()
    })
}

/// Values with magnitudes in [0.5, 2), either sign: away from the kinks and poles at 0.
pub fn away_from_zero(shape: Vec<usize>, seed: u64) -> Tensor {
    let mut t = random_tensor(shape, seed, -1.5, 1.5);
    for v in &mut t.data {
        *v += 0.5f64.copysign(*v);
    }
    t
}

pub fn binary_op() -> impl Strategy<Value = OpKind> {
    prop_oneof![
        Just(OpKind::Add),
        Just(OpKind::Sub),
        Just(OpKind::Mul),
        Just(OpKind::Div),
    ]
}

pub fn map_fn() -> impl Strategy<Value = MapFn> {
    prop_oneof![
        Just(MapFn::Neg),
        Just(MapFn::Exp),
        Just(MapFn::Log),
        Just(MapFn::Sqrt),
        Just(MapFn::Abs),
        Just(MapFn::Sign),
        Just(MapFn::Step),
        Just(MapFn::Sigmoid),
        Just(MapFn::Tanh),
        Just(MapFn::Relu),
        (-1.0..1.0f64).prop_map(MapFn::LeakyRelu),
        (-3.0..3.0f64).prop_map(MapFn::Scale),
        (-3.0..3.0f64).prop_map(MapFn::AddConst),
        (-3.0..3.0f64).prop_map(MapFn::PowConst),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn binary_ops_broadcast_their_gradients_back(
        kind in binary_op(),
        (a, b) in shape(4).prop_flat_map(|s| (broadcastable(s.clone()), broadcastable(s))),
        seed in any::<u64>(),
    ) {
        // b away from zero: it is a divisor.
        let inputs = vec![random_tensor(a, seed, -2.0, 2.0), away_from_zero(b, seed ^ 1)];
        check_vjp(kind, inputs, &[true, true], seed);
    }

    #[test]
    fn maps_match_central_differences(f in map_fn(), s in shape(4), seed in any::<u64>()) {
        let x = match f {
            MapFn::Log | MapFn::Sqrt | MapFn::PowConst(_) => random_tensor(s, seed, 0.5, 2.0),
            MapFn::Abs | MapFn::Sign | MapFn::Step | MapFn::Relu | MapFn::LeakyRelu(_) => {
                away_from_zero(s, seed)
            }
            _ => random_tensor(s, seed, -2.0, 2.0),
        };
        let differentiable = !matches!(f, MapFn::Sign | MapFn::Step);
        check_vjp(OpKind::Map(f), vec![x], &[differentiable], seed);
    }
}

#[test]
fn binary_ops_broadcast_numpy_style() {
    let m = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let row = Tensor::new(vec![3], vec![10.0, 20.0, 30.0]);
    let sum = eval(OpKind::Add, &[&m, &row]);
    assert_close(&sum, &[2, 3], &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    let difference = eval(OpKind::Sub, &[&row, &m]);
    assert_close(&difference, &[2, 3], &[9.0, 18.0, 27.0, 6.0, 15.0, 24.0]);

    let column = Tensor::new(vec![2, 1], vec![1.0, 2.0]);
    let row = Tensor::new(vec![1, 3], vec![1.0, 2.0, 3.0]);
    let outer = eval(OpKind::Mul, &[&column, &row]);
    assert_close(&outer, &[2, 3], &[1.0, 2.0, 3.0, 2.0, 4.0, 6.0]);

    let v = Tensor::new(vec![2], vec![6.0, 8.0]);
    let halves = eval(OpKind::Div, &[&v, &Tensor::scalar(2.0)]);
    assert_close(&halves, &[2], &[3.0, 4.0]);
    let quotients = eval(OpKind::Div, &[&Tensor::scalar(24.0), &v]);
    assert_close(&quotients, &[2], &[4.0, 3.0]);
    let scalar = eval(OpKind::Sub, &[&Tensor::scalar(1.0), &Tensor::scalar(3.0)]);
    assert_close(&scalar, &[], &[-2.0]);
}

#[test]
fn maps_compute_their_functions() {
    let cases: [(MapFn, &[f64], &[f64]); 14] = [
        (MapFn::Neg, &[-1.0, 2.0], &[1.0, -2.0]),
        (MapFn::Exp, &[0.0, 1.0], &[1.0, std::f64::consts::E]),
        (MapFn::Log, &[1.0, std::f64::consts::E], &[0.0, 1.0]),
        (MapFn::Sqrt, &[9.0, 0.25], &[3.0, 0.5]),
        (MapFn::Abs, &[-2.0, 3.0], &[2.0, 3.0]),
        (MapFn::Sign, &[-2.0, 0.0, -0.0, 3.0], &[-1.0, 0.0, 0.0, 1.0]),
        (MapFn::Step, &[-1.0, 0.0, 2.0], &[0.0, 0.0, 1.0]),
        // Far from 0 neither overflows to NaN.
        (MapFn::Sigmoid, &[-1000.0, 0.0, 1000.0], &[0.0, 0.5, 1.0]),
        (MapFn::Tanh, &[0.0, 1000.0], &[0.0, 1.0]),
        (MapFn::Relu, &[-2.0, 0.0, 3.0], &[0.0, 0.0, 3.0]),
        (MapFn::LeakyRelu(0.1), &[-2.0, 3.0], &[-0.2, 3.0]),
        (MapFn::Scale(-3.0), &[2.0], &[-6.0]),
        (MapFn::AddConst(0.5), &[2.0], &[2.5]),
        (MapFn::PowConst(1.5), &[4.0, 1.0], &[8.0, 1.0]),
    ];
    for (f, x, y) in cases {
        let got = eval(OpKind::Map(f), &[&Tensor::new(vec![x.len()], x.to_vec())]);
        assert_close(&got, &[y.len()], y);
    }
    let sigmoid = eval(OpKind::Map(MapFn::Sigmoid), &[&Tensor::scalar(1.0)]);
    assert_close(&sigmoid, &[], &[1.0 / (1.0 + (-1.0f64).exp())]);
}

#[test]
fn gradients_are_summed_only_where_an_input_was_broadcast() {
    let mut graph = Graph::new("broadcast");
    let a = graph.input(InputKind::Data, "a", vec![2, 3]);
    let b = graph.input(InputKind::Data, "b", vec![3]);
    let c = graph.input(InputKind::Data, "c", vec![2, 3]);
    for other in [b, c] {
        let y = graph.op(OpKind::Mul, &[a, other], None);
        let op = graph.ops.last().expect("the op").clone();
        let before = graph.count_ops("sum_to");
        let grads = OpKind::Mul.vjp(&op, &mut graph, y);
        assert_eq!(graph.count_ops("sum_to") - before, usize::from(other == b));
        assert_eq!(
            graph.shape(grads[1].expect("b's gradient")),
            graph.shape(other)
        );
    }
}
