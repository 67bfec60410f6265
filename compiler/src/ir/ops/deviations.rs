//! `sum_squared_deviations_to`: the squares of a tensor's deviations from its mean, summed to a
//! shape as `sum_to` sums — over the axes where the target's extent is 1. Batch norm's variance
//! times the count, as one primitive so that a convolution's write-out can gather it in the
//! pass that produces the activation: each block of a row keeps its count, sum and squared
//! deviations from its own mean, combined afterwards without cancellation (see
//! `gemm::RowSum::SquaredDeviations`). On its own it is two passes: the mean, then the squares.

use super::elementwise::broadcast_indices;
use super::fused::{Arg, Results, Step};
use super::{layout, MapFn, OpKind};
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};

pub fn shape(target: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    layout::sum_to_shape(target, inputs)
}

/// Two passes: each target element's mean, then the squares of the deviations from it.
pub fn eval(target: &Shape, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let indices = broadcast_indices(target, &x.shape);
    let len: usize = target.iter().product();
    let count = (x.data.len() / len.max(1)) as f64;
    let mut sums = vec![0.0; len];
    for (&t, &v) in indices.iter().zip(&x.data) {
        sums[t] += v;
    }
    let means: Vec<f64> = sums.iter().map(|s| s / count).collect();
    let mut squares = vec![0.0; len];
    for (&t, &v) in indices.iter().zip(&x.data) {
        let apart = v - means[t];
        squares[t] += apart * apart;
    }
    Tensor::new(target.clone(), squares)
}

/// `dx = 2 (x - mean) · dy`, broadcast: the mean's own gradient is zero, as the deviations
/// sum to zero.
pub fn vjp(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let layer = op.layer.as_deref();
    let x = op.inputs[0];
    let target = graph.shape(op.output).clone();
    let count = graph.shape(x).iter().product::<usize>() / target.iter().product::<usize>();
    let sum = graph.op(OpKind::SumTo(target), &[x], layer);
    let mean = graph.op(OpKind::Map(MapFn::Scale(1.0 / count as f64)), &[sum], layer);
    let centred = graph.op(OpKind::Sub, &[x, mean], layer);
    let scaled = graph.op(OpKind::Mul, &[centred, grad], layer);
    vec![Some(graph.op(
        OpKind::Map(MapFn::Scale(2.0)),
        &[scaled],
        layer,
    ))]
}

/// The sums into a workspace, then the squares' sum over x and the mean.
pub fn emit(sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let x = &inputs[0];
    let sums = Operand {
        slot: sink.workspace(output.len()),
        shape: output.shape.clone(),
    };
    layout::emit_sum_to(sink, inputs, &sums);
    let count = x.len() / output.len();
    // x0: x; x1: the sums.
    let steps = [
        Step {
            kind: OpKind::Map(MapFn::Scale(1.0 / count as f64)),
            args: vec![Arg::Input(1)],
        },
        Step {
            kind: OpKind::Sub,
            args: vec![Arg::Input(0), Arg::Step(0)],
        },
        Step {
            kind: OpKind::Mul,
            args: vec![Arg::Step(1), Arg::Step(1)],
        },
    ];
    let pass = Results {
        summed: x.shape.clone(),
        target: output.shape.clone(),
        steps: &steps,
        sums: vec![(Arg::Step(2), 0)],
        stores: Vec::new(),
    };
    layout::emit_sum(sink, &[x.clone(), sums], &pass, output);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_squared_deviations_from_each_target_elements_mean() {
        let x = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 9.0]);
        // Columns: means 2.5, 3.5, 6; rows: 2, 6; all: 4.
        assert_eq!(eval(&vec![1, 3], &[&x]).data, vec![4.5, 4.5, 18.0]);
        assert_eq!(eval(&vec![2, 1], &[&x]).data, vec![2.0, 14.0]);
        assert_eq!(eval(&vec![], &[&x]).data, vec![40.0]);
    }
}
