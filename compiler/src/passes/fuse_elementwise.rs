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
//! tensors of the summed shape and of its own (batch norm's `sum(dy · x̂)`, its variance's sum
//! of squares): the terms are summed as they are computed and never written.
//!
//! An elementwise op that several chains read, and that reads (through other such ops) at most
//! one tensor of its shape, is computed again in each of them rather than written once
//! (recomputation): batch norm's centred input `x - mean` and normalised `x̂` exist only inside
//! the chains that read them, which read `x` instead. The step then writes and keeps fewer
//! tensors (`x̂` is no longer kept for the backward pass; `x` is) at the price of a few
//! arithmetic instructions per element. What such an op reads through ops that only it reads
//! is recomputed with it (batch norm's output `x̂ · γ + β` through `x̂ · γ`). Once the chains
//! are formed, an op reading more tensors than that is recomputed too where that adds no reads:
//! each reader's chain reads all of them but one already, or sums what the op's own pass would
//! have read (batch norm's ReLU-masked gradient `dy · step(z)`, which its sums and the input
//! gradient's chain compute from `dy` and `x` rather than read).
//!
//! A ReLU's gradient masks by its output, `step(relu(z))`; where `z` is recomputed this way
//! (batch norm's output before a ReLU) the mask is taken from `z`, so the gradient's chain reads
//! the tensor `z` comes from (the convolution's output, which batch norm's gradient reads
//! anyway) instead of the ReLU's output too.

use super::{rewrite, Rewrite, Uses};
use crate::ir::ops::fused::{is_elementwise, Arg, Chain, Step};
use crate::ir::ops::MapFn;
use crate::ir::{Definition, Graph, OpKind, ValueId};
use std::collections::HashMap;

pub fn run(graph: &Graph) -> Graph {
    let graph = &masks_from_recomputed_inputs(graph);
    let uses = Uses::of(graph);
    let (mut recomputed, wide_reads) = recomputable(graph, &uses);
    let mut root_of = settle(graph, &uses, &mut recomputed);
    // Each op is offered once, so one stranded again is not offered forever.
    let mut offered = vec![false; graph.ops.len()];
    loop {
        let rereads: Vec<usize> = (0..graph.ops.len())
            .filter(|&op| !offered[op])
            .filter(|&op| rereads_no_more(graph, &uses, &recomputed, &wide_reads, &root_of, op))
            .collect();
        if rereads.is_empty() {
            break;
        }
        for op in rereads {
            offered[op] = true;
            recompute(graph, &uses, &mut recomputed, op);
        }
        root_of = settle(graph, &uses, &mut recomputed);
    }

    let mut members = vec![0usize; graph.ops.len()];
    for root in root_of.iter().flatten() {
        members[*root] += 1;
    }

    rewrite(graph, |fused, index, renumber| {
        if recomputed[index] {
            return Rewrite::Drop;
        }
        match root_of[index] {
            Some(root) if root != index => Rewrite::Drop,
            Some(root) => {
                let (inputs, Some(chain)) = chain(graph, root, &root_of, &recomputed) else {
                    panic!("internal error: the chain ending in op {root} changes its shape")
                };
                // The root alone, reading no recomputed op.
                let reads_recomputed = graph.ops[index].inputs.iter().any(|value| {
                    matches!(graph.values[value.0].definition,
                        Definition::Op(op) if recomputed[op])
                });
                if members[root] == 1 && !reads_recomputed {
                    return Rewrite::Keep;
                }
                let inputs: Vec<ValueId> = inputs.iter().map(|v| renumber[v]).collect();
                let layer = graph.ops[index].layer.as_deref();
                Rewrite::Replace(fused.op(OpKind::Fused(chain), &inputs, layer))
            }
            None => Rewrite::Keep,
        }
    })
}

/// The chains, once every recomputed op is in the chain of each of its readers: where a
/// reader's chain does not take one in, it is computed once after all, and the chains are
/// formed again.
fn settle(graph: &Graph, uses: &Uses, recomputed: &mut [bool]) -> Vec<Option<usize>> {
    loop {
        let root_of = chains(graph, uses, recomputed);
        let mut stranded = false;
        for op in 0..graph.ops.len() {
            if !recomputed[op] {
                continue;
            }
            let readers = &uses.readers[graph.ops[op].output.0];
            let absorbed = readers.iter().all(|&reader| {
                recomputed[reader]
                    || root_of[reader]
                        .is_some_and(|root| chain(graph, root, &root_of, recomputed).1.is_some())
            });
            if !absorbed {
                recomputed[op] = false;
                stranded = true;
            }
        }
        if !stranded {
            return root_of;
        }
    }
}

/// Whether the chain rooted at `op`, which several chains read, is better computed in each of
/// them although it reads more than one tensor of its shape: each reader's chain already reads
/// all of those but one, which it reads instead of `op`'s result, or sums tensors of `op`'s
/// shape (`fuse_sums` puts those sums in one pass with what they sum, which reads what `op`
/// reads). Batch norm's masked gradient `g = dy · step(z)`, read by its two sums and by the
/// input gradient's chain (which reads `x` for `z`), is then not written.
fn rereads_no_more(
    graph: &Graph,
    uses: &Uses,
    recomputed: &[bool],
    wide_reads: &[Vec<ValueId>],
    root_of: &[Option<usize>],
    op: usize,
) -> bool {
    let output = graph.ops[op].output;
    let shape = graph.shape(output);
    let readers = &uses.readers[output.0];
    let candidate = root_of[op] == Some(op)
        && !recomputed[op]
        && is_elementwise(&graph.ops[op].kind)
        && !uses.is_output[output.0]
        && readers.len() > 1
        && wide_reads[op].len() > 1;
    candidate
        && readers.iter().all(|&reader| {
            let Some(root) = root_of[reader].filter(|_| !recomputed[reader]) else {
                return false;
            };
            let root_op = &graph.ops[root];
            if matches!(root_op.kind, OpKind::SumTo(_)) && graph.shape(root_op.inputs[0]) == shape {
                return true;
            }
            let (inputs, _) = chain(graph, root, root_of, recomputed);
            let unread = wide_reads[op]
                .iter()
                .filter(|t| !inputs.contains(t))
                .count();
            unread <= 1
        })
}

/// Marks `op` recomputed, with the ops only it reads that are inlined into it.
fn recompute(graph: &Graph, uses: &Uses, recomputed: &mut [bool], op: usize) {
    recomputed[op] = true;
    for &value in &graph.ops[op].inputs {
        if let Some(producer) = inlined(graph, uses, value, op) {
            recompute(graph, uses, recomputed, producer);
        }
    }
}

/// The elementwise op of the same shape that computes an input only `reader` reads, which is
/// recomputed wherever `reader` is.
fn inlined(graph: &Graph, uses: &Uses, value: ValueId, reader: usize) -> Option<usize> {
    match graph.values[value.0].definition {
        Definition::Op(producer)
            if uses.only(value, reader)
                && is_elementwise(&graph.ops[producer].kind)
                && graph.shape(value) == graph.shape(graph.ops[reader].output) =>
        {
            Some(producer)
        }
        _ => None,
    }
}

/// The graph with each ReLU's gradient mask `step(relu(z))` read as `step(z)` where `z` is
/// then recomputed; the others stay as they are.
fn masks_from_recomputed_inputs(graph: &Graph) -> Graph {
    // Each mask's relu input, where an elementwise op computes it.
    let candidates: Vec<Option<usize>> = graph
        .ops
        .iter()
        .map(|op| {
            let (OpKind::Map(MapFn::Step), &[y]) = (&op.kind, &op.inputs[..]) else {
                return None;
            };
            let relu = &graph.ops[graph.producer(y)?];
            let z = graph.producer(relu.inputs[0])?;
            let from_relu = relu.kind == OpKind::Map(MapFn::Relu);
            (from_relu && is_elementwise(&graph.ops[z].kind)).then_some(z)
        })
        .collect();
    if candidates.iter().all(Option::is_none) {
        return graph.clone();
    }
    let masked = |masks: &[Option<usize>]| {
        rewrite(graph, |new, index, renumber| match masks[index] {
            Some(z) => {
                let op = &graph.ops[index];
                let z = renumber[&graph.ops[z].output];
                Rewrite::Replace(new.op(op.kind.clone(), &[z], op.layer.as_deref()))
            }
            None => Rewrite::Keep,
        })
    };
    // Each op of the rewritten graph is the op of the same index here. A `z` recomputed from
    // a tensor only it reads (a convolution's output through its bias) would make that tensor
    // be written where fusion would not have written it.
    let tried = masked(&candidates);
    let uses = Uses::of(&tried);
    let (recomputed, wide_reads) = recomputable(&tried, &uses);
    let kept: Vec<Option<usize>> = candidates
        .into_iter()
        .map(|z| {
            z.filter(|&z| {
                recomputed[z] && wide_reads[z].iter().all(|&t| uses.readers[t.0].len() > 1)
            })
        })
        .collect();
    masked(&kept)
}

/// The ops worth computing again in each chain that reads them rather than once into a tensor:
/// elementwise, read by more than one op (or broadcasts, read by any), all of them elementwise
/// of the same shape or sums of it, not outputs of the graph, and reading (through other such
/// ops) at most one tensor of their shape, so each reader reads that tensor instead and nothing
/// is read twice over; with them, the elementwise ops of their shape that only they read. Also
/// the tensors of its shape each op reads through the recomputed ops.
fn recomputable(graph: &Graph, uses: &Uses) -> (Vec<bool>, Vec<Vec<ValueId>>) {
    let mut recomputed = vec![false; graph.ops.len()];
    // The tensors of its own shape each op reads, through recomputed and inlined ops.
    let mut wide_reads: Vec<Vec<ValueId>> = vec![Vec::new(); graph.ops.len()];
    for (index, op) in graph.ops.iter().enumerate() {
        let shape = graph.shape(op.output);
        let broadcast = matches!(op.kind, OpKind::Broadcast(_));
        if !is_elementwise(&op.kind) && !broadcast {
            continue;
        }
        let mut reads: Vec<ValueId> = Vec::new();
        for &value in &op.inputs {
            match graph.values[value.0].definition {
                Definition::Op(producer) if recomputed[producer] => {
                    reads.extend(&wide_reads[producer])
                }
                _ if let Some(producer) = inlined(graph, uses, value, index) => {
                    reads.extend(&wide_reads[producer])
                }
                _ if graph.shape(value) == shape => reads.push(value),
                _ => {}
            }
        }
        reads.sort_unstable();
        reads.dedup();
        let readers = &uses.readers[op.output.0];
        let readers_fit = readers.iter().all(|&reader| {
            let kind = &graph.ops[reader].kind;
            (is_elementwise(kind) && graph.shape(graph.ops[reader].output) == shape)
                || matches!(kind, OpKind::SumTo(_))
        });
        // A broadcast costs nothing to recompute: its readers read its input in place.
        let shared = readers.len() > 1 || (broadcast && !readers.is_empty());
        recomputed[index] =
            shared && readers_fit && !uses.is_output[op.output.0] && reads.len() <= 1;
        wide_reads[index] = reads;
    }
    // Each recomputed op with what it inlines.
    for index in 0..graph.ops.len() {
        if recomputed[index] {
            recompute(graph, uses, &mut recomputed, index);
        }
    }
    (recomputed, wide_reads)
}

/// The chain each op belongs to, by its last op (the root), besides the `recomputed` ones,
/// which belong to every chain that reads them.
fn chains(graph: &Graph, uses: &Uses, recomputed: &[bool]) -> Vec<Option<usize>> {
    // Roots are found last to first, so an op's only reader has been placed when the op is
    // reached.
    let mut root_of: Vec<Option<usize>> = vec![None; graph.ops.len()];
    for root in (0..graph.ops.len()).rev() {
        let kind = &graph.ops[root].kind;
        let sums = matches!(kind, OpKind::SumTo(_));
        if root_of[root].is_some() || recomputed[root] || !(sums || is_elementwise(kind)) {
            continue;
        }
        root_of[root] = Some(root);
        // The shape of what the chain computes element by element: a sum's is its input's.
        let shape = match sums {
            true => graph.shape(graph.ops[root].inputs[0]),
            false => graph.shape(graph.ops[root].output),
        };
        // What a sum's chain may read besides tensors of `shape`: tensors of its own shape.
        let target = graph.shape(graph.ops[root].output);
        let mut members = vec![root];
        let mut pending = vec![root];
        while let Some(reader) = pending.pop() {
            for &value in &graph.ops[reader].inputs {
                let Some(op) = graph.producer(value) else {
                    continue;
                };
                let kind = &graph.ops[op].kind;
                let joins = root_of[op].is_none()
                    && !recomputed[op]
                    && (is_elementwise(kind) || matches!(kind, OpKind::Broadcast(_)))
                    && uses.only(value, reader)
                    && graph.shape(value) == shape
                    && (!sums
                        || graph.ops[op]
                            .inputs
                            .iter()
                            .all(|&v| graph.shape(v) == shape || graph.shape(v) == target));
                if joins {
                    root_of[op] = Some(root);
                    members.push(op);
                    pending.push(op);
                }
            }
        }
        // Without its broadcasts a chain may compute on narrower tensors only, and broadcast
        // at the end; then the broadcasts stay ops.
        if chain(graph, root, &root_of, recomputed).1.is_none() {
            for &op in &members {
                if matches!(graph.ops[op].kind, OpKind::Broadcast(_)) {
                    root_of[op] = None;
                }
            }
        }
    }
    root_of
}

/// The chain rooted at `root` over the ops `root_of` puts in it and the `recomputed` ones it
/// reads: its inputs (values outside it) and its steps, or `None` for the steps if it does not
/// have the root's shape.
fn chain(
    graph: &Graph,
    root: usize,
    root_of: &[Option<usize>],
    recomputed: &[bool],
) -> (Vec<ValueId>, Option<Chain>) {
    struct Builder<'g> {
        graph: &'g Graph,
        root: usize,
        root_of: &'g [Option<usize>],
        recomputed: &'g [bool],
        inputs: Vec<ValueId>,
        steps: Vec<Step>,
        done: HashMap<usize, Arg>,
    }
    impl Builder<'_> {
        fn arg(&mut self, value: ValueId) -> Arg {
            let member = match self.graph.values[value.0].definition {
                Definition::Op(op)
                    if self.root_of[op] == Some(self.root) || self.recomputed[op] =>
                {
                    Some(op)
                }
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
        recomputed,
        inputs: Vec::new(),
        steps: Vec::new(),
        done: HashMap::new(),
    };
    builder.arg(graph.ops[root].output);
    let chain = Chain {
        steps: builder.steps,
        results: Vec::new(),
    };
    let shapes: Vec<&Vec<usize>> = builder.inputs.iter().map(|&v| graph.shape(v)).collect();
    // A chain of the root alone is the root as it is.
    let fits = chain.steps.len() == 1
        || OpKind::Fused(chain.clone()).shape(&shapes).ok().as_ref()
            == Some(graph.shape(graph.ops[root].output));
    (builder.inputs, fits.then_some(chain))
}
