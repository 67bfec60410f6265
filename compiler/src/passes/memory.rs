//! Memory planning: which buffer holds each value, decided from the whole step before it runs.
//!
//! - **Buffer reuse** (`reuse_buffers`): the values ops compute share one arena, each at an
//!   offset where no value live at the same time lies; a value lives from the op that computes
//!   it to its last reader, so an op never writes over what it reads. Offsets are chosen
//!   greedily, largest value first (`pack`). Inputs and the outputs the host reads keep their
//!   own buffers (it writes and reads them between steps); gradients, unless it asks, do not
//!   (`host_reads`). A reshape shares its input's
//!   buffer, and a slice that is one contiguous run of its input (a result of a fused op with
//!   several) lies inside it: that storage lives as long as any of its names. Ops' workspaces
//!   (packed operands) share buffers too, since none outlives its op.
//! - **In-place updates** (`update_in_place`): an update of a parameter or state tensor is
//!   computed straight into its buffer when the op computing it is elementwise, reads the old
//!   value at the same positions, and is its last reader: no copy after the step, and no
//!   second buffer.
//!
//! The plan also says what the memory is for (`MemoryReport`), which `netc summary --memory`
//! prints before anything runs.

use super::Uses;
use crate::ir::ops::fused::is_pointwise;
use crate::ir::{Definition, Graph, InputKind, Op, OpKind, OutputRole, ValueId};
use std::collections::HashMap;
use std::ops::Range;

/// Each value's buffer and each buffer's size.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// The buffer of each value.
    pub buffer_of: Vec<usize>,
    /// Floats per buffer.
    pub buffer_floats: Vec<usize>,
    /// For each buffer that lies inside another (a value in the arena that values share), that
    /// buffer and the offset in floats.
    pub inside: Vec<Option<(usize, usize)>>,
}

impl MemoryPlan {
    /// The allocation `buffer` lies in, and the floats of it that it spans.
    pub fn extent(&self, buffer: usize) -> (usize, Range<usize>) {
        let floats = self.buffer_floats[buffer];
        match self.inside[buffer] {
            Some((arena, offset)) => (arena, offset..offset + floats),
            None => (buffer, 0..floats),
        }
    }

    /// Whether two buffers share any memory.
    pub fn overlap(&self, a: usize, b: usize) -> bool {
        meet(&self.extent(a), &self.extent(b))
    }
}

/// Whether two extents (an allocation and floats in it) share any float.
fn meet((a_in, a): &(usize, Range<usize>), (b_in, b): &(usize, Range<usize>)) -> bool {
    a_in == b_in && a.start < b.end && b.start < a.end
}

/// What a buffer holds, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Purpose {
    /// Examples, targets, the learning rate and step.
    Inputs,
    Weights,
    /// Optimizer moments and batch-norm running statistics.
    State,
    /// Forward results that the backward pass reads.
    SavedActivations,
    /// Everything else the step computes: other activations, gradients, updates.
    Temporaries,
}

impl Purpose {
    pub const ALL: [Purpose; 5] = [
        Purpose::Inputs,
        Purpose::Weights,
        Purpose::State,
        Purpose::SavedActivations,
        Purpose::Temporaries,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Purpose::Inputs => "inputs (batch, targets, scalars)",
            Purpose::Weights => "weights",
            Purpose::State => "optimizer and running state",
            Purpose::SavedActivations => "activations kept for backward",
            Purpose::Temporaries => "other activations and gradients",
        }
    }
}

/// One buffer per value (but views, see [`view_of`]), as code generation does without
/// planning.
pub fn one_per_value(graph: &Graph) -> MemoryPlan {
    let mut buffer_of = vec![None; graph.values.len()];
    let mut buffer_floats = Vec::new();
    for (index, value) in graph.values.iter().enumerate() {
        if alias_of(graph, ValueId(index)).is_none() {
            buffer_floats.push(value.shape.iter().product());
            buffer_of[index] = Some(buffer_floats.len() - 1);
        }
    }
    let inside = vec![None; buffer_floats.len()];
    with_views(graph, buffer_of, buffer_floats, inside)
}

/// Where op `op`'s result lies in its input's storage, in floats, if it computes nothing of
/// its own: a reshape is its input; a slice that is one contiguous run of its input is that
/// run.
pub fn view_of(graph: &Graph, op: &Op) -> Option<usize> {
    match op.kind {
        OpKind::Reshape(_) => Some(0),
        OpKind::Slice { axis, start, .. } => {
            let shape = graph.shape(op.inputs[0]);
            let outer: usize = shape[..axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            (outer == 1).then_some(start * inner)
        }
        _ => None,
    }
}

/// The value whose storage `value` lies in, and where: see [`view_of`].
fn alias_of(graph: &Graph, value: ValueId) -> Option<(ValueId, usize)> {
    let op = &graph.ops[graph.producer(value)?];
    view_of(graph, op).map(|offset| (op.inputs[0], offset))
}

/// The plan from the buffers of the values that are not views, every view placed in its
/// source's storage, in value order (a source before its views): a reshape in its input's
/// buffer, a slice in a buffer of its own inside the allocation its input lies in.
fn with_views(
    graph: &Graph,
    buffer_of: Vec<Option<usize>>,
    buffer_floats: Vec<usize>,
    inside: Vec<Option<(usize, usize)>>,
) -> MemoryPlan {
    let mut plan = MemoryPlan {
        buffer_of: Vec::with_capacity(buffer_of.len()),
        buffer_floats,
        inside,
    };
    for (index, own) in buffer_of.into_iter().enumerate() {
        let buffer = match alias_of(graph, ValueId(index)) {
            None => own.expect("every value placed"),
            Some((source, offset)) => {
                let buffer = plan.buffer_of[source.0];
                let floats: usize = graph.values[index].shape.iter().product();
                if offset == 0 && floats == plan.buffer_floats[buffer] {
                    buffer
                } else {
                    let (allocation, extent) = plan.extent(buffer);
                    plan.buffer_floats.push(floats);
                    plan.inside.push(Some((allocation, extent.start + offset)));
                    plan.buffer_floats.len() - 1
                }
            }
        };
        plan.buffer_of.push(buffer);
    }
    plan
}

/// Whether the host reads outputs of `role` after a step, so that they keep their own buffers:
/// the loss, the prediction and the updates, and the gradients only if it asks to keep them.
/// The gradient checks read gradients from the interpreter; training needs only the updates,
/// so in its code each gradient lives in the arena until its update has read it.
pub fn host_reads(role: OutputRole, keep_gradients: bool) -> bool {
    match role {
        OutputRole::Loss | OutputRole::Prediction | OutputRole::Update => true,
        OutputRole::Gradient => keep_gradients,
    }
}

/// The plan with reuse and in-place updates as asked; gradients kept as `host_reads` says.
pub fn plan(graph: &Graph, reuse: bool, in_place: bool, keep_gradients: bool) -> MemoryPlan {
    if !reuse && !in_place {
        return one_per_value(graph);
    }
    let values = graph.values.len();
    // Each value's storage: the value that owns its buffer (through views).
    let mut owner: Vec<usize> = (0..values).collect();
    for index in 0..values {
        if let Some((source, _)) = alias_of(graph, ValueId(index)) {
            owner[index] = owner[source.0];
        }
    }
    // Each update computed in place, to the input whose buffer it takes.
    let in_place_of: HashMap<usize, usize> = if in_place {
        in_place_updates(graph).into_iter().collect()
    } else {
        HashMap::new()
    };
    let mut pinned = vec![false; values];
    for (index, value) in graph.values.iter().enumerate() {
        if matches!(value.definition, Definition::Input(_)) {
            pinned[owner[index]] = true;
        }
    }
    for output in graph
        .outputs
        .iter()
        .filter(|o| host_reads(o.role, keep_gradients))
    {
        pinned[owner[output.value.0]] = true;
    }
    // The last op that reads each storage, through any of its names.
    let mut last_read: Vec<Option<usize>> = vec![None; values];
    for (op_index, op) in graph.ops.iter().enumerate() {
        for input in &op.inputs {
            last_read[owner[input.0]] = Some(op_index);
        }
    }

    let mut buffer_of: Vec<Option<usize>> = vec![None; values];
    let mut buffer_floats: Vec<usize> = Vec::new();
    let new_buffer = |floats: usize, buffer_floats: &mut Vec<usize>| {
        buffer_floats.push(floats);
        buffer_floats.len() - 1
    };
    for (index, value) in graph.values.iter().enumerate() {
        if matches!(value.definition, Definition::Input(_)) {
            buffer_of[index] = Some(new_buffer(value.shape.iter().product(), &mut buffer_floats));
        }
    }
    // Storage the ops define that may share a buffer, with the ops it is live over: from the
    // op that defines it to its last reader (or that op alone, if nothing reads it). The
    // spans are closed, so an op's result never shares a buffer with an input it reads.
    let mut shared = Vec::new();
    for (op_index, op) in graph.ops.iter().enumerate() {
        let out = op.output.0;
        if owner[out] != out || in_place_of.contains_key(&out) {
            continue;
        }
        let floats: usize = graph.values[out].shape.iter().product();
        if reuse && !pinned[out] {
            shared.push(Span {
                value: out,
                floats,
                first: op_index,
                last: last_read[out].unwrap_or(op_index),
            });
        } else {
            buffer_of[out] = Some(new_buffer(floats, &mut buffer_floats));
        }
    }
    let (offsets, arena_floats) = pack(shared);
    let mut inside = vec![None; buffer_floats.len()];
    if !offsets.is_empty() {
        let arena = new_buffer(arena_floats, &mut buffer_floats);
        inside.push(None);
        for (value, offset) in offsets {
            let floats = graph.values[value].shape.iter().product();
            buffer_of[value] = Some(new_buffer(floats, &mut buffer_floats));
            inside.push(Some((arena, offset)));
        }
    }
    // Then what shares another value's storage: in-place updates, then views.
    for (&update, &target) in &in_place_of {
        buffer_of[update] = buffer_of[target];
    }
    with_views(graph, buffer_of, buffer_floats, inside)
}

/// A value that may share a buffer, with the span of ops it is live over.
struct Span {
    value: usize,
    floats: usize,
    first: usize,
    last: usize,
}

/// Offsets in one arena for values whose spans overlap nowhere they do in memory: the largest
/// value first, each at the lowest offset of the smallest gap it fits among the values placed
/// that are live while it is, else above them all (greedy by size, Pisarchyk and Lee, 2020:
/// within a few percent of the most that is ever live at once on the usual networks).
/// Offsets are in floats, multiples of 16 (64 bytes). Returns `(value, offset)` pairs and the
/// arena's size.
fn pack(mut spans: Vec<Span>) -> (Vec<(usize, usize)>, usize) {
    spans.sort_by(|a, b| b.floats.cmp(&a.floats).then(a.first.cmp(&b.first)));
    // `(offset, end, first, last)` of each value placed.
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(spans.len());
    let mut offsets = Vec::with_capacity(spans.len());
    let mut arena = 0;
    for span in &spans {
        let floats = span.floats.div_ceil(16) * 16;
        let mut taken: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, first, last)| first <= span.last && span.first <= last)
            .map(|&(offset, end, _, _)| (offset, end))
            .collect();
        taken.sort_unstable();
        // The smallest gap that fits, else the end of everything live meanwhile.
        let (mut best, mut cursor): (Option<(usize, usize)>, usize) = (None, 0);
        for (offset, end) in taken {
            let gap = offset.saturating_sub(cursor);
            if gap >= floats && best.is_none_or(|(smallest, _)| gap < smallest) {
                best = Some((gap, cursor));
            }
            cursor = cursor.max(end);
        }
        let offset = best.map_or(cursor, |(_, at)| at);
        placed.push((offset, offset + floats, span.first, span.last));
        arena = arena.max(offset + floats);
        offsets.push((span.value, offset));
    }
    (offsets, arena)
}

/// Whether each value is still in its buffer when the step ends (no later value took it),
/// so the host may read it: for locating the first non-finite result.
pub fn intact_at_end(graph: &Graph, plan: &MemoryPlan) -> Vec<bool> {
    let storage = |v: usize| {
        let mut v = ValueId(v);
        while let Some((source, _)) = alias_of(graph, v) {
            v = source;
        }
        v.0
    };
    let storages: Vec<usize> = (0..graph.values.len()).map(storage).collect();
    let extents: Vec<(usize, Range<usize>)> =
        plan.buffer_of.iter().map(|&b| plan.extent(b)).collect();
    (0..storages.len())
        .map(|index| {
            (index + 1..storages.len()).all(|later| {
                storages[later] == storages[index] || !meet(&extents[later], &extents[index])
            })
        })
        .collect()
}

/// The updates that can be computed into their old value's buffer: `(update, input)` pairs.
fn in_place_updates(graph: &Graph) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    let uses = Uses::of(graph);
    let outputs_of = |value: usize| graph.outputs.iter().filter(move |o| o.value.0 == value);
    for output in graph
        .outputs
        .iter()
        .filter(|o| o.role == OutputRole::Update)
    {
        let Some(old) = graph.find_input(&output.name) else {
            continue;
        };
        let Some(producer) = graph.producer(output.value) else {
            continue;
        };
        let op = &graph.ops[producer];
        let legal = is_pointwise(&op.kind)
            && matches!(
                graph.values[old.0].definition,
                Definition::Input(ref i) if matches!(i.kind, InputKind::Param | InputKind::State)
            )
            && op.inputs.contains(&old)
            && graph.shape(old) == graph.shape(output.value)
            // Nothing reads the old value after the update, through a view of it either.
            && uses.storage_readers(graph, old).iter().all(|&r| r <= producer)
            // The update's value is only this output (not also a gradient the host reads
            // as distinct memory).
            && outputs_of(output.value.0).count() == 1
            && outputs_of(old.0).count() == 0;
        if legal {
            pairs.push((output.value.0, old.0));
        }
    }
    pairs
}

/// Bytes by purpose, and in all: `netc summary --memory`.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryReport {
    pub by_purpose: Vec<(Purpose, u64)>,
    /// Packed operands of contractions, shared by every op.
    pub workspace_bytes: u64,
    /// Scratch of every thread together.
    pub scratch_bytes: u64,
    /// Everything above: allocated once before the first step, this is the step's peak.
    pub total_bytes: u64,
    /// What one buffer per value would take instead of the planned buffers.
    pub unplanned_bytes: u64,
}

impl MemoryReport {
    pub fn text(&self) -> String {
        let mib = |bytes: u64| format!("{:>10.2} MiB", bytes as f64 / (1 << 20) as f64);
        let mut text = String::new();
        for (purpose, bytes) in &self.by_purpose {
            text += &format!("  {:<36}{}\n", purpose.label(), mib(*bytes));
        }
        text += &format!(
            "  {:<36}{}\n",
            "workspace (packed operands)",
            mib(self.workspace_bytes)
        );
        text += &format!(
            "  {:<36}{}\n",
            "scratch (all threads)",
            mib(self.scratch_bytes)
        );
        text += &format!(
            "  {:<36}{}\n",
            "peak (all of it, allocated once)",
            mib(self.total_bytes)
        );
        text += &format!(
            "  {:<36}{}\n",
            "values, one buffer each (unplanned)",
            mib(self.unplanned_bytes)
        );
        text
    }
}

/// What each buffer of `plan` is for: a buffer is counted under the first purpose (in
/// `Purpose::ALL`'s order) of the values it holds.
pub fn purposes(graph: &Graph, plan: &MemoryPlan) -> Vec<Purpose> {
    let forward = forward_ops(graph);
    let mut read_by_backward = vec![false; graph.values.len()];
    for (index, op) in graph.ops.iter().enumerate() {
        if !forward[index] {
            for input in &op.inputs {
                read_by_backward[input.0] = true;
            }
        }
    }
    let mut purpose = vec![Purpose::Temporaries; plan.buffer_floats.len()];
    for (index, value) in graph.values.iter().enumerate() {
        let this = match &value.definition {
            Definition::Input(input) => match input.kind {
                InputKind::Param => Purpose::Weights,
                InputKind::State => Purpose::State,
                InputKind::Data | InputKind::Target | InputKind::Scalar => Purpose::Inputs,
            },
            Definition::Op(op) if forward[*op] && read_by_backward[index] => {
                Purpose::SavedActivations
            }
            Definition::Op(_) => Purpose::Temporaries,
        };
        let buffer = plan.buffer_of[index];
        purpose[buffer] = purpose[buffer].min(this);
    }
    purpose
}

/// The ops the loss and prediction depend on: the forward pass.
fn forward_ops(graph: &Graph) -> Vec<bool> {
    let mut needed = vec![false; graph.values.len()];
    for output in &graph.outputs {
        if matches!(output.role, OutputRole::Loss | OutputRole::Prediction) {
            needed[output.value.0] = true;
        }
    }
    let mut forward = vec![false; graph.ops.len()];
    for (index, op) in graph.ops.iter().enumerate().rev() {
        if needed[op.output.0] {
            forward[index] = true;
            for input in &op.inputs {
                needed[input.0] = true;
            }
        }
    }
    forward
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(value: usize, floats: usize, first: usize, last: usize) -> Span {
        Span {
            value,
            floats,
            first,
            last,
        }
    }

    #[test]
    fn values_live_at_once_get_disjoint_offsets_and_others_share() {
        // 0 and 1 are live at once; 2 comes after 0 and takes its place; 3 is live with 1
        // and 2, and fits the gap between them. The arena is the most ever live: 0 and 1.
        let (mut offsets, arena) = pack(vec![
            span(0, 64, 0, 1),
            span(1, 32, 0, 3),
            span(2, 30, 2, 3),
            span(3, 16, 2, 2),
        ]);
        offsets.sort_unstable();
        assert_eq!(offsets, vec![(0, 0), (1, 64), (2, 0), (3, 32)]);
        assert_eq!(arena, 96);
    }
}
