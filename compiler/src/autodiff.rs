//! Symbolic reverse-mode differentiation: appends to a graph the ops that compute the gradient
//! of a scalar with respect to chosen values, from each primitive's backward rule. The result
//! is one graph holding forward and backward, so later passes see both.
//!
//! Only needed work is built: an op is differentiated only when its output lies between a
//! chosen value and the loss, and `prune` then removes whatever backward rules built that
//! nothing reads (the gradient of a convolution's data input, say, or of a frozen layer).

use crate::ir::{Graph, OpKind, ValueId};
use std::collections::HashMap;

/// Appends the gradient of `loss` with respect to each of `wrt`. A value in `wrt` that the loss
/// does not depend on gets a zero gradient.
pub fn gradients(graph: &mut Graph, loss: ValueId, wrt: &[ValueId]) -> HashMap<ValueId, ValueId> {
    assert!(
        graph.shape(loss).is_empty(),
        "internal error: differentiating a non-scalar"
    );
    let forward_ops = graph.ops.len();
    // Values that depend on something in `wrt`.
    let mut depends = vec![false; graph.values.len()];
    for &v in wrt {
        depends[v.0] = true;
    }
    for op in &graph.ops {
        depends[op.output.0] = op.inputs.iter().any(|v| depends[v.0]);
    }
    // Values the loss depends on.
    let mut feeds_loss = vec![false; graph.values.len()];
    feeds_loss[loss.0] = true;
    for op in graph.ops.iter().rev() {
        if feeds_loss[op.output.0] {
            for v in &op.inputs {
                feeds_loss[v.0] = true;
            }
        }
    }
    let mut grads: HashMap<ValueId, ValueId> = HashMap::new();
    let seed = graph.op(
        OpKind::Fill {
            value: 1.0,
            shape: vec![],
        },
        &[],
        None,
    );
    grads.insert(loss, seed);
    for index in (0..forward_ops).rev() {
        let op = graph.ops[index].clone();
        if !(depends[op.output.0] && feeds_loss[op.output.0]) {
            continue;
        }
        let Some(&grad) = grads.get(&op.output) else {
            continue;
        };
        let input_grads = op.kind.vjp(&op, graph, grad);
        for (&input, input_grad) in op.inputs.iter().zip(input_grads) {
            let Some(input_grad) = input_grad else {
                continue;
            };
            if !depends[input.0] {
                continue;
            }
            let total = match grads.get(&input) {
                Some(&earlier) => {
                    graph.op(OpKind::Add, &[earlier, input_grad], op.layer.as_deref())
                }
                None => input_grad,
            };
            grads.insert(input, total);
        }
    }
    wrt.iter()
        .map(|&v| {
            let grad = grads.get(&v).copied().unwrap_or_else(|| {
                let shape = graph.shape(v).clone();
                graph.op(OpKind::Fill { value: 0.0, shape }, &[], None)
            });
            (v, grad)
        })
        .collect()
}

/// Removes ops whose results no output reads, and lists inputs before ops (the canonical
/// order: building interleaves them). Inputs all stay: they are the graph's interface.
pub fn prune(graph: &Graph) -> Graph {
    let mut live = vec![false; graph.values.len()];
    for output in &graph.outputs {
        live[output.value.0] = true;
    }
    for op in graph.ops.iter().rev() {
        if live[op.output.0] {
            for v in &op.inputs {
                live[v.0] = true;
            }
        }
    }
    let mut renumber: HashMap<ValueId, ValueId> = HashMap::new();
    let mut pruned = Graph::new(graph.name.clone());
    for (old, input) in graph.inputs() {
        let new = pruned.input(input.kind, input.name.clone(), graph.shape(old).clone());
        renumber.insert(old, new);
    }
    for op in graph.ops.iter().filter(|op| live[op.output.0]) {
        let inputs: Vec<ValueId> = op.inputs.iter().map(|v| renumber[v]).collect();
        let new = pruned.op(op.kind.clone(), &inputs, op.layer.as_deref());
        renumber.insert(op.output, new);
    }
    for output in &graph.outputs {
        pruned.output(output.role, output.name.clone(), renumber[&output.value]);
    }
    pruned
}
