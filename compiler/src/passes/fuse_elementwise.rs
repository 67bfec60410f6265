//! `fuse_elementwise`: chains of elementwise ops become one `fused` op, forward and backward
//! alike: batch norm's normalisation, scale, shift and activation; their gradients; every
//! optimizer update. Each chain is one pass over memory instead of one per op, and its
//! intermediate tensors are never written.
//!
//! An op joins the chain of the op that reads it when it is elementwise (or a `broadcast`,
//! which the chain does by reading its input where broadcasting puts it), that op is its only
//! reader, it is not a graph output, and it has the chain's shape (a narrower producer, like a
//! per-channel scale, would be recomputed at every position; it stays a tensor of its own).
//!
//! A `sum_to` takes in the chain that computes what it sums, made of ops that read only
//! tensors of the summed shape (batch norm's `sum(dy · x̂)`, its variance's sum of squares):
//! the product is summed as it is computed and never written.

use super::{rewrite, Rewrite, Uses};
use crate::ir::ops::fused::{is_elementwise, Arg, Chain, Step};
use crate::ir::{Definition, Graph, OpKind, ValueId};
use std::collections::HashMap;

pub fn run(graph: &Graph) -> Graph {
    let uses = Uses::of(graph);
    let producer = |value: ValueId| match graph.values[value.0].definition {
        Definition::Op(op) => Some(op),
        Definition::Input(_) => None,
    };

    // The chain each op belongs to, by its last op (the root); roots are found last to first,
    // so an op's only reader has been placed when the op is reached.
    let mut root_of: Vec<Option<usize>> = vec![None; graph.ops.len()];
    for root in (0..graph.ops.len()).rev() {
        let sums = matches!(graph.ops[root].kind, OpKind::SumTo(_));
        if root_of[root].is_some() || !(sums || is_elementwise(&graph.ops[root].kind)) {
            continue;
        }
        root_of[root] = Some(root);
        // The shape of what the chain computes element by element: a sum's is its input's.
        let shape = match sums {
            true => graph.shape(graph.ops[root].inputs[0]),
            false => graph.shape(graph.ops[root].output),
        };
        let mut members = vec![root];
        let mut pending = vec![root];
        while let Some(reader) = pending.pop() {
            for &value in &graph.ops[reader].inputs {
                let Some(op) = producer(value) else { continue };
                let kind = &graph.ops[op].kind;
                let joins = root_of[op].is_none()
                    && (is_elementwise(kind) || matches!(kind, OpKind::Broadcast(_)))
                    && uses.only(value, reader)
                    && graph.shape(value) == shape
                    && (!sums
                        || graph.ops[op]
                            .inputs
                            .iter()
                            .all(|&v| graph.shape(v) == shape));
                if joins {
                    root_of[op] = Some(root);
                    members.push(op);
                    pending.push(op);
                }
            }
        }
        // Without its broadcasts a chain may compute on narrower tensors only, and broadcast
        // at the end; then the broadcasts stay ops.
        if chain(graph, root, &root_of).1.is_none() {
            for &op in &members {
                if matches!(graph.ops[op].kind, OpKind::Broadcast(_)) {
                    root_of[op] = None;
                }
            }
        }
    }

    let mut members = vec![0usize; graph.ops.len()];
    for root in root_of.iter().flatten() {
        members[*root] += 1;
    }

    rewrite(graph, |fused, index, renumber| match root_of[index] {
        Some(root) if root != index => Rewrite::Drop,
        Some(root) if members[root] > 1 => {
            let (inputs, Some(chain)) = chain(graph, root, &root_of) else {
                panic!("internal error: the chain ending in op {root} changes its shape")
            };
            let inputs: Vec<ValueId> = inputs.iter().map(|v| renumber[v]).collect();
            let layer = graph.ops[index].layer.as_deref();
            Rewrite::Replace(fused.op(OpKind::Fused(chain), &inputs, layer))
        }
        _ => Rewrite::Keep,
    })
}

/// The chain rooted at `root` over the ops `root_of` puts in it: its inputs (values outside
/// it) and its steps, or `None` for the steps if it does not have the root's shape.
fn chain(graph: &Graph, root: usize, root_of: &[Option<usize>]) -> (Vec<ValueId>, Option<Chain>) {
    struct Builder<'g> {
        graph: &'g Graph,
        root: usize,
        root_of: &'g [Option<usize>],
        inputs: Vec<ValueId>,
        steps: Vec<Step>,
        done: HashMap<usize, Arg>,
    }
    impl Builder<'_> {
        fn arg(&mut self, value: ValueId) -> Arg {
            let member = match self.graph.values[value.0].definition {
                Definition::Op(op) if self.root_of[op] == Some(self.root) => Some(op),
                _ => None,
            };
            let Some(op) = member else {
                let index = match self.inputs.iter().position(|&v| v == value) {
                    Some(index) => index,
                    None => {
                        self.inputs.push(value);
                        self.inputs.len() - 1
                    }
                };
                return Arg::Input(index);
            };
            if let Some(&arg) = self.done.get(&op) {
                return arg;
            }
            let op_ref = &self.graph.ops[op];
            let arg = if matches!(op_ref.kind, OpKind::Broadcast(_)) {
                self.arg(op_ref.inputs[0])
            } else {
                let args = op_ref.inputs.iter().map(|&v| self.arg(v)).collect();
                self.steps.push(Step {
                    kind: op_ref.kind.clone(),
                    args,
                });
                Arg::Step(self.steps.len() - 1)
            };
            self.done.insert(op, arg);
            arg
        }
    }
    let mut builder = Builder {
        graph,
        root,
        root_of,
        inputs: Vec::new(),
        steps: Vec::new(),
        done: HashMap::new(),
    };
    builder.arg(graph.ops[root].output);
    let chain = Chain {
        steps: builder.steps,
    };
    let shapes: Vec<&Vec<usize>> = builder.inputs.iter().map(|&v| graph.shape(v)).collect();
    let fits = OpKind::Fused(chain.clone()).shape(&shapes).ok().as_ref()
        == Some(graph.shape(graph.ops[root].output));
    (builder.inputs, fits.then_some(chain))
}
