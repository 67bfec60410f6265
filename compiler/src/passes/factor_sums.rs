//! `factor_sums`: the factors of a sum's terms that are constant along the summed axes move out
//! of it, `sum_to(a · c) = sum_to(a) · c`, through products, negations and scalings. Batch norm's
//! gradient sums `g`, `g · x̂ = g · (x − μ) · σ⁻¹`, `g · γ · (x − μ)` and `−g · γ · σ⁻¹`: factored,
//! those are two sums, of `g` and of `g · (x − μ)`, which `merge_duplicates` (after this pass)
//! computes once each, so the convolution's input gradient gathers two sums instead of four.
//!
//! The factors left inside a sum are multiplied in the order of their values, so that equal
//! products are equal ops for `merge_duplicates`.
//!
//! A sum over whole planes of max pooling's gradient is the same sum of the pooled gradient,
//! since each element of dy goes to exactly one cell: a convolution's bias gradient before a
//! 3×3 pool reads a ninth of the tensor it read.

use super::{rewrite, Rewrite};
use crate::autodiff::prune;
use crate::ir::ops::elementwise::broadcast;
use crate::ir::ops::pool::every_window_has_a_cell;
use crate::ir::ops::{MapFn, OpKind};
use crate::ir::{Graph, Shape, ValueId};

pub fn run(graph: &Graph) -> Graph {
    let factored = rewrite(graph, |new, index, renumber| {
        let op = &graph.ops[index];
        let OpKind::SumTo(target) = &op.kind else {
            return Rewrite::Keep;
        };
        let layer = op.layer.as_deref();
        if let Some(pooled) = pooled_gradient(graph, op.inputs[0], target) {
            return Rewrite::Replace(new.op(op.kind.clone(), &[renumber[&pooled]], layer));
        }
        let mut product = Product {
            scale: 1.0,
            inner: Vec::new(),
            outer: Vec::new(),
        };
        product.collect(graph, op.inputs[0], target);
        product.inner.sort();
        let shapes: Vec<&Shape> = product.inner.iter().map(|&v| graph.shape(v)).collect();
        let inner_shape = shapes
            .iter()
            .try_fold(Shape::new(), |shape, &next| broadcast(&shape, next));
        // Only where something moves out, and what stays is still the summed tensor's shape.
        let moves = !product.outer.is_empty() || product.scale != 1.0;
        if !moves || inner_shape.as_ref() != Ok(graph.shape(op.inputs[0])) {
            return Rewrite::Keep;
        }
        let mut terms = product.inner.iter().map(|v| renumber[v]);
        let first = terms.next().expect("a summed tensor's shape has a factor");
        let terms = terms.fold(first, |p, v| new.op(OpKind::Mul, &[p, v], layer));
        let mut sum = new.op(OpKind::SumTo(target.clone()), &[terms], layer);
        for factor in &product.outer {
            sum = new.op(OpKind::Mul, &[sum, renumber[factor]], layer);
        }
        if product.scale != 1.0 {
            let scale = OpKind::Map(MapFn::Scale(product.scale));
            sum = new.op(scale, &[sum], layer);
        }
        Rewrite::Replace(sum)
    });
    prune(&factored)
}

/// A tensor as a product: `scale` times the `inner` factors (which vary along the summed axes)
/// times the `outer` ones (which do not).
struct Product {
    scale: f64,
    inner: Vec<ValueId>,
    outer: Vec<ValueId>,
}

impl Product {
    /// Multiplies in `value` for a sum to `target`, taken apart through negations, scalings
    /// and those products that hold something to take out (others, like a ReLU's masked
    /// gradient, stay whole, so the sums read what the rest of the graph reads).
    fn collect(&mut self, graph: &Graph, value: ValueId, target: &Shape) {
        match operation(graph, value) {
            Some((OpKind::Mul, &[a, b])) if movable(graph, value, target) => {
                self.collect(graph, a, target);
                self.collect(graph, b, target);
            }
            Some((OpKind::Map(MapFn::Neg), &[a])) => {
                self.scale = -self.scale;
                self.collect(graph, a, target);
            }
            Some((OpKind::Map(MapFn::Scale(factor)), &[a])) => {
                self.scale *= factor;
                self.collect(graph, a, target);
            }
            _ if is_outer(graph, value, target) => self.outer.push(value),
            _ => self.inner.push(value),
        }
    }
}

/// The op that computes `value`, as its kind and inputs; None for a graph input.
fn operation(graph: &Graph, value: ValueId) -> Option<(&OpKind, &[ValueId])> {
    let op = &graph.ops[graph.producer(value)?];
    Some((&op.kind, &op.inputs[..]))
}

/// The dy of `value` when it is max pooling's gradient, every window holding a cell, and the
/// sum to `target` takes in whole planes.
fn pooled_gradient(graph: &Graph, value: ValueId, target: &Shape) -> Option<ValueId> {
    match operation(graph, value) {
        Some((OpKind::MaxPoolGrad(pool), &[_, dy]))
            if every_window_has_a_cell(pool) && target.len() == 4 && target[2..] == [1, 1] =>
        {
            Some(dy)
        }
        _ => None,
    }
}

/// Whether `value` is constant along the axes summed to `target`.
fn is_outer(graph: &Graph, value: ValueId, target: &Shape) -> bool {
    broadcast(graph.shape(value), target).as_ref() == Ok(target)
}

/// Whether something moves out of a sum to `target` through `value`: a factor constant along
/// the summed axes, or a negation or scaling, in its tree of products.
fn movable(graph: &Graph, value: ValueId, target: &Shape) -> bool {
    match operation(graph, value) {
        Some((OpKind::Mul, &[a, b])) => movable(graph, a, target) || movable(graph, b, target),
        Some((OpKind::Map(MapFn::Neg | MapFn::Scale(_)), _)) => true,
        _ => is_outer(graph, value, target),
    }
}
