//! `fuse_sums`: sums of tensors of one shape to one shape computed in one pass, with each other
//! and with the elementwise op that computes what they sum. Batch norm's backward reads its
//! gradient and input three times for three per-channel sums (of `dy`, `dy · x̂` and the
//! variance's); they become one pass over the two. The sum through the mean's gradient reads
//! a gradient that another op reads too; it is taken while that gradient is written.
//!
//! The merged op is a chain with several results (`fused::Chain::results`) in place of the
//! first op it merges: every input of the ops it merges is computed before that op. When
//! that op is a convolution, or a convolution's input gradient, the sums are per channel and
//! are added up as its tiles are written out (after `fuse_epilogue`): batch norm's mean and
//! variance (`sum_squared_deviations_to`, which only a convolution's write-out computes in the
//! same pass) are gathered as the convolution before it writes its result, and its gradient's
//! sums as the input gradient of the convolution after it is written. Each result is read back as a
//! `slice` of the output and a `reshape`, which share its buffer; one that the host reads after
//! the step (a gradient) is copied out, so that it does not keep the whole buffer (an input
//! gradient with it) alive. An elementwise result that nothing outside the merged op reads is
//! not written at all.

use super::memory::view_of;
use super::{rewrite, Rewrite, Uses};
use crate::ir::ops::fused::{is_pointwise, is_sum, Arg, Chain, Step};
use crate::ir::ops::MapFn;
use crate::ir::{Definition, Graph, OpKind, Shape, ValueId};
use std::collections::HashMap;

/// Sums one pass takes at most: each keeps its own accumulators in registers.
const MOST_SUMS: usize = 4;

/// Ops computed in one pass: at most one op whose result the others may sum (`host`: an
/// elementwise op, or a convolution that sums as it writes), then sums, in graph order.
struct Group {
    host: Option<usize>,
    sums: Vec<usize>,
    summed: Shape,
}

impl Group {
    fn first(&self) -> usize {
        self.host.unwrap_or_else(|| self.sums[0])
    }

    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        self.host.iter().copied().chain(self.sums.iter().copied())
    }
}

pub fn run(graph: &Graph) -> Graph {
    let uses = Uses::of(graph);
    let mut groups: Vec<Group> = Vec::new();
    for (index, op) in graph.ops.iter().enumerate() {
        if let Some(summed) = summed_shape(graph, index) {
            let joined = groups.iter_mut().rev().find(|group| {
                group.summed == summed
                    && group.sums.len() < MOST_SUMS
                    && op.inputs.iter().all(|&v| {
                        group.host.is_some_and(|h| graph.ops[h].output == v)
                            || defined_before(graph, v, group.first())
                    })
                    && {
                        let mut sums = group.sums.clone();
                        sums.push(index);
                        let candidate = Group {
                            host: group.host,
                            sums,
                            summed: summed.clone(),
                        };
                        let (inputs, chain) = merged(graph, &candidate, &uses);
                        let shapes: Vec<&Shape> = inputs.iter().map(|&v| graph.shape(v)).collect();
                        OpKind::Fused(chain).shape(&shapes).is_ok()
                    }
            });
            match joined {
                Some(group) => group.sums.push(index),
                None => groups.push(Group {
                    host: None,
                    sums: vec![index],
                    summed,
                }),
            }
        } else if is_pointwise(&op.kind) || sums_in_write_out(&op.kind) {
            groups.push(Group {
                host: Some(index),
                sums: Vec::new(),
                summed: graph.shape(op.output).clone(),
            });
        }
    }
    groups.retain(|group| group.members().count() > 1);
    let read_after = read_after_the_step(graph);
    // Each merged op's group by its first op, and each later member's group.
    let first_of: HashMap<usize, usize> = groups
        .iter()
        .enumerate()
        .map(|(g, group)| (group.first(), g))
        .collect();
    let mut values_of: HashMap<usize, ValueId> = HashMap::new();
    rewrite(graph, |new, index, renumber| {
        if let Some(&value) = values_of.get(&index) {
            return Rewrite::Replace(value);
        }
        let Some(&g) = first_of.get(&index) else {
            return Rewrite::Keep;
        };
        let group = &groups[g];
        let (inputs, chain) = merged(graph, group, &uses);
        let inputs: Vec<ValueId> = inputs.iter().map(|v| renumber[v]).collect();
        let layer = graph.ops[index].layer.as_deref();
        let written = chain.results.len();
        let output = new.op(OpKind::Fused(chain), &inputs, layer);
        if written == 0 {
            // One sum of what the host computes: a chain that ends in it.
            values_of.insert(group.sums[0], output);
            return Rewrite::Drop;
        }
        let results: Vec<usize> = group
            .members()
            .filter(|&member| Some(member) != group.host || written > group.sums.len())
            .collect();
        let mut start = 0;
        for member in results {
            let shape = graph.shape(graph.ops[member].output).clone();
            let len = shape.iter().product();
            let part = new.op(
                OpKind::Slice {
                    axis: 0,
                    start,
                    len,
                },
                &[output],
                graph.ops[member].layer.as_deref(),
            );
            let layer = graph.ops[member].layer.as_deref();
            let mut value = new.op(OpKind::Reshape(shape), &[part], layer);
            if read_after[graph.ops[member].output.0] {
                value = new.op(OpKind::Map(MapFn::Scale(1.0)), &[value], layer);
            }
            values_of.insert(member, value);
            start += len;
        }
        // A host that is not a result is read by the merged op alone.
        match values_of.get(&index) {
            Some(&value) => Rewrite::Replace(value),
            None => Rewrite::Drop,
        }
    })
}

/// Whether the host reads each value after the step: an output, or what an output is a view of.
pub(super) fn read_after_the_step(graph: &Graph) -> Vec<bool> {
    let mut read = vec![false; graph.values.len()];
    for output in &graph.outputs {
        let mut value = output.value;
        read[value.0] = true;
        while let Some(index) = graph.producer(value) {
            let op = &graph.ops[index];
            if view_of(graph, op).is_none() {
                break;
            }
            value = op.inputs[0];
            read[value.0] = true;
        }
    }
    read
}

/// The shape op `index` sums, if it is a sum: a `sum_to` or `sum_squared_deviations_to`, or
/// a chain that ends in a `sum_to`.
fn summed_shape(graph: &Graph, index: usize) -> Option<Shape> {
    let op = &graph.ops[index];
    let summed = match &op.kind {
        OpKind::SumTo(_) | OpKind::SumSquaredDeviationsTo(_) => {
            Some(graph.shape(op.inputs[0]).clone())
        }
        OpKind::Fused(chain) if chain.reduction().is_some() => {
            let last = chain.steps.last().expect("a sum");
            // The summed tensor is an elementwise step's, of the shape of the chain's inputs
            // it is computed from (the others are of the sum's shape).
            match last.args[0] {
                Arg::Input(i) => Some(graph.shape(op.inputs[i]).clone()),
                Arg::Step(_) => op
                    .inputs
                    .iter()
                    .map(|&v| graph.shape(v))
                    .find(|&shape| shape != graph.shape(op.output))
                    .cloned(),
            }
        }
        _ => None,
    };
    summed.filter(|shape| shape != graph.shape(op.output))
}

/// Whether an op of this kind is a convolution (or its input gradient), with or without an
/// epilogue, whose write-out can add up per-channel sums.
fn sums_in_write_out(kind: &OpKind) -> bool {
    let contraction = match kind {
        OpKind::Fused(chain) if chain.results.is_empty() => {
            chain.contraction().map(|a| a.contraction)
        }
        _ => None,
    };
    let kind = contraction.map_or(kind, |step| &step.kind);
    matches!(kind, OpKind::Conv2d(_) | OpKind::Conv2dInputGrad(..))
}

/// Whether `value` is an input or the result of an op before op `index`.
fn defined_before(graph: &Graph, value: ValueId, index: usize) -> bool {
    match graph.values[value.0].definition {
        Definition::Input(_) => true,
        Definition::Op(op) => op < index,
    }
}

/// The chain that computes a group's ops in one pass, and its inputs: the host's steps and
/// every sum's elementwise steps (each distinct step once), then the sums. Its results are the
/// host's value (a convolution's always, another's when an op outside the group reads it)
/// and the sums, in that order.
fn merged(graph: &Graph, group: &Group, uses: &Uses) -> (Vec<ValueId>, Chain) {
    let mut inputs: Vec<ValueId> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut sums: Vec<Step> = Vec::new();
    let mut host_value: Option<(ValueId, Arg)> = None;
    for member in group.members() {
        let op = &graph.ops[member];
        // Where each of the member's own steps is in the merged chain.
        let mut placed: Vec<Arg> = Vec::new();
        let mut map = |arg: &Arg, placed: &[Arg]| match *arg {
            Arg::Input(i) => {
                let value = op.inputs[i];
                match host_value {
                    Some((host, arg)) if host == value => arg,
                    _ => {
                        let index = inputs.iter().position(|&v| v == value).unwrap_or_else(|| {
                            inputs.push(value);
                            inputs.len() - 1
                        });
                        Arg::Input(index)
                    }
                }
            }
            Arg::Step(s) => placed[s],
        };
        let own: Vec<Step> = match &op.kind {
            OpKind::Fused(chain) => chain.steps.clone(),
            kind => vec![Step {
                kind: kind.clone(),
                args: (0..op.inputs.len()).map(Arg::Input).collect(),
            }],
        };
        for step in own {
            let step = Step {
                args: step.args.iter().map(|arg| map(arg, &placed)).collect(),
                kind: step.kind,
            };
            if is_sum(&step.kind) {
                sums.push(step);
                continue;
            }
            let index = steps.iter().position(|s| *s == step).unwrap_or_else(|| {
                steps.push(step);
                steps.len() - 1
            });
            placed.push(Arg::Step(index));
        }
        if Some(member) == group.host {
            host_value = Some((op.output, *placed.last().expect("a step")));
        }
    }
    let mut results = Vec::new();
    if let Some((host, Arg::Step(last))) = host_value {
        let members: Vec<usize> = group.members().collect();
        let read_outside =
            uses.is_output[host.0] || uses.readers[host.0].iter().any(|r| !members.contains(r));
        let contraction = group
            .host
            .is_some_and(|h| sums_in_write_out(&graph.ops[h].kind));
        if read_outside || contraction {
            results.push(last);
        }
    }
    for step in sums {
        results.push(steps.len());
        steps.push(step);
    }
    if results.len() == 1 {
        // A host's steps and one sum: a chain that ends in the sum.
        results.clear();
    }
    (inputs, Chain { steps, results })
}
