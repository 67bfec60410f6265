//! Launch grouping (`group_launches`): runs of pointwise ops that follow one another in the
//! step and do not get in each other's way become one launch of the thread pool instead of one
//! each. The optimizer's update is the case it is for: every parameter's moments and new value
//! are a few small elementwise kernels (two per parameter with momentum), and in one launch
//! the pool spreads all of them across its threads at once.
//!
//! A group is a list of segments that run side by side, each a list of ops that run one after
//! the other per task. Ops in different segments share no buffer that either writes. An op that
//! writes or reads what a segment's op wrote (momentum's `w' = w - lr·v'` reading `v'`, written
//! over `v`) joins that segment, which it may only when both are pointwise over the same number
//! of elements, every shared buffer is accessed at the element's own position, and so task `t`
//! of the later op touches only what task `t` of the earlier one did: the kernels
//! (`codegen::strided`) cut equal element counts into equal tasks.
//!
//! The decision is on memory, after the memory plan, so two values the plan puts in the same
//! place at different times conflict like any other pair.
//!
//! A softmax cross-entropy and the gradient of it that differentiation made (same logits, same
//! labels) are one launch too, and one kernel: a pass over the rows computes both. The loss
//! moves to its gradient's place, which is legal when nothing between reads it or writes what
//! it reads or writes.

use super::memory::{self, MemoryPlan};
use crate::ir::ops::fused::is_pointwise;
use crate::ir::{Graph, Op, OpKind, ValueId};
use std::collections::{HashMap, HashSet};

/// One launch of the step: ops by their index in `Graph::ops`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// One op's own kernels.
    Op(usize),
    /// Pointwise ops: segments run side by side; the ops of a segment run in order, task by
    /// task.
    Group(Vec<Vec<usize>>),
    /// A softmax cross-entropy and its gradient, in one pass over the rows.
    LossWithGradient { loss: usize, gradient: usize },
}

/// A buffer an op touches, and whether at the op's own element positions (a tensor of the
/// op's shape) or as a whole (a broadcast scalar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Access {
    buffer: usize,
    positional: bool,
    writes: bool,
}

/// What an op does to memory, if it may be grouped: pointwise, every input either of its
/// shape or a single element.
fn accesses(graph: &Graph, op: &Op, plan: &MemoryPlan) -> Option<Vec<Access>> {
    let shape = graph.shape(op.output);
    if !is_pointwise(&op.kind) || shape.iter().product::<usize>() == 0 {
        return None;
    }
    let mut accesses = Vec::with_capacity(op.inputs.len() + 1);
    for &input in &op.inputs {
        let input_shape = graph.shape(input);
        let positional = input_shape == shape;
        if !positional && input_shape.iter().product::<usize>() != 1 {
            return None;
        }
        accesses.push(Access {
            buffer: plan.buffer_of[input.0],
            positional,
            writes: false,
        });
    }
    accesses.push(Access {
        buffer: plan.buffer_of[op.output.0],
        positional: true,
        writes: true,
    });
    Some(accesses)
}

/// A segment being built: its ops, their element count, and what they touch.
struct Segment {
    ops: Vec<usize>,
    elements: usize,
    accesses: Vec<Access>,
}

/// How op `accesses` meets a segment's: not at all, only at shared positions, or otherwise.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meeting {
    Apart,
    Positional,
    Conflict,
}

fn meet(segment: &Segment, accesses: &[Access], elements: usize, plan: &MemoryPlan) -> Meeting {
    let mut meeting = Meeting::Apart;
    for a in accesses {
        for b in &segment.accesses {
            if !(a.writes || b.writes) || !plan.overlap(a.buffer, b.buffer) {
                continue;
            }
            let same_positions = a.buffer == b.buffer && a.positional && b.positional;
            if same_positions && segment.elements == elements {
                meeting = Meeting::Positional;
            } else {
                return Meeting::Conflict;
            }
        }
    }
    meeting
}

/// The launches of the whole step, in the order they run: every op in exactly one.
///
/// Ops are taken in order into an open group. An op that cannot run beside or after a segment
/// (it reads a scalar that segment writes, say: Adam's bias corrections) sends that segment to
/// a launch of its own before the group, which is legal because no segment touches what
/// another writes. An op that meets several segments at shared positions merges them into one.
pub fn launches(graph: &Graph, plan: &MemoryPlan) -> Vec<Launch> {
    let loss_of_gradient = loss_gradient_pairs(graph, plan);
    let paired_losses: HashSet<usize> = loss_of_gradient.values().copied().collect();
    let mut launches = Vec::new();
    let mut open: Vec<Segment> = Vec::new();
    let launch = |segments: Vec<Segment>, launches: &mut Vec<Launch>| match &segments[..] {
        [] => {}
        [single] if single.ops.len() == 1 => launches.push(Launch::Op(single.ops[0])),
        _ => launches.push(Launch::Group(segments.into_iter().map(|s| s.ops).collect())),
    };
    for (index, op) in graph.ops.iter().enumerate() {
        // A view (a reshape, a contiguous slice) launches nothing, so it stands between no
        // two ops.
        if memory::view_of(graph, op).is_some() {
            launches.push(Launch::Op(index));
            continue;
        }
        if paired_losses.contains(&index) {
            continue;
        }
        let Some(accesses) = accesses(graph, op, plan) else {
            launch(std::mem::take(&mut open), &mut launches);
            launches.push(match loss_of_gradient.get(&index) {
                Some(&loss) => Launch::LossWithGradient {
                    loss,
                    gradient: index,
                },
                None => Launch::Op(index),
            });
            continue;
        };
        let elements = graph.shape(op.output).iter().product();
        let meetings: Vec<Meeting> = open
            .iter()
            .map(|segment| meet(segment, &accesses, elements, plan))
            .collect();
        let (mut before, mut joined, mut apart) = (Vec::new(), Vec::new(), Vec::new());
        for (segment, meeting) in open.drain(..).zip(meetings) {
            match meeting {
                Meeting::Conflict => before.push(segment),
                Meeting::Positional => joined.push(segment),
                Meeting::Apart => apart.push(segment),
            }
        }
        launch(before, &mut launches);
        let mut ops: Vec<usize> = joined.iter().flat_map(|s| s.ops.iter().copied()).collect();
        ops.sort_unstable();
        ops.push(index);
        let mut touched: Vec<Access> = joined.into_iter().flat_map(|s| s.accesses).collect();
        touched.extend(accesses);
        open = apart;
        open.push(Segment {
            ops,
            elements,
            accesses: touched,
        });
    }
    launch(open, &mut launches);
    launches
}

/// Each softmax cross-entropy gradient that its loss may run with, by op index, to the loss's.
fn loss_gradient_pairs(graph: &Graph, plan: &MemoryPlan) -> HashMap<usize, usize> {
    let mut pairs = HashMap::new();
    for (index, op) in graph.ops.iter().enumerate() {
        if op.kind != OpKind::SoftmaxCrossEntropy {
            continue;
        }
        let buffers: Vec<usize> = op
            .inputs
            .iter()
            .chain([&op.output])
            .map(|v| plan.buffer_of[v.0])
            .collect();
        let overwrites = |value: ValueId| {
            let buffer = plan.buffer_of[value.0];
            buffers.iter().any(|&b| plan.overlap(b, buffer))
        };
        for (later, next) in graph.ops.iter().enumerate().skip(index + 1) {
            if next.kind == OpKind::SoftmaxCrossEntropyGrad && next.inputs[..2] == op.inputs[..] {
                pairs.insert(later, index);
                break;
            }
            let reads_loss = next.inputs.contains(&op.output);
            if reads_loss || overwrites(next.output) {
                break;
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::parse::parse;
    use crate::passes::memory;

    /// The launches of more than one op.
    fn grouped(text: &str) -> Vec<Vec<Vec<usize>>> {
        let graph = parse(text).expect("parses");
        let plan = memory::plan(&graph, true, true, false);
        launches(&graph, &plan)
            .into_iter()
            .filter_map(|launch| match launch {
                Launch::Group(segments) => Some(segments),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_momentum_update_is_one_segment_per_parameter() {
        // v' = 0.9 v + g then w' = w - lr v', for two parameters: both updated in place.
        let groups = grouped(
            "graph step {
              %0 = param w1 : [4,3]
              %1 = param w2 : [5]
              %2 = state v1 : [4,3]
              %3 = state v2 : [5]
              %4 = scalar lr : []
              %5 = scale(%0) factor=2 : [4,3]
              %6 = scale(%1) factor=2 : [5]
              %7 = fused(%2, %5) chain={scale(x0) factor=0.9; add(t0, x1)} : [4,3]
              %8 = fused(%0, %4, %7) chain={mul(x1, x2); sub(x0, t0)} : [4,3]
              %9 = fused(%3, %6) chain={scale(x0) factor=0.9; add(t0, x1)} : [5]
              %10 = fused(%1, %4, %9) chain={mul(x1, x2); sub(x0, t0)} : [5]
              output update v1 = %7
              output update w1 = %8
              output update v2 = %9
              output update w2 = %10
            }",
        );
        // The gradients (ops 0 and 1) are independent of each other; op 2 reads op 0's result
        // at its positions; op 4 reads nothing of ops 0 to 3 but `lr`.
        assert_eq!(groups, vec![vec![vec![0, 2, 3], vec![1, 4, 5]]]);
    }

    #[test]
    fn a_reader_at_the_same_positions_follows_in_its_segment() {
        let groups = grouped(
            "graph step {
              %0 = data x : [8]
              %1 = sum_to(%0) shape=[] : []
              %2 = exp(%1) : []
              %3 = mul(%0, %2) : [8]
              %4 = exp(%3) : [8]
              %5 = exp(%0) : [8]
              output prediction p = %3
              output prediction q = %4
              output prediction r = %5
            }",
        );
        // Op 2 reads op 1's scalar as a whole, so op 1 runs first, alone; op 3 reads op 2's
        // result at its own positions and joins its segment; op 4 only shares reads.
        assert_eq!(groups, vec![vec![vec![2, 3], vec![4]]]);
    }

    #[test]
    fn a_scalar_read_later_goes_first_and_a_common_reader_merges_segments() {
        let graph = parse(
            "graph step {
              %0 = data x : [6]
              %1 = data y : [6]
              %2 = scalar step : []
              %3 = scale(%2) factor=2 : []
              %4 = exp(%0) : [6]
              %5 = exp(%1) : [6]
              %6 = add(%4, %5) : [6]
              %7 = div(%6, %3) : [6]
              output prediction p = %7
            }",
        )
        .expect("parses");
        let plan = memory::plan(&graph, true, true, false);
        assert_eq!(
            launches(&graph, &plan),
            vec![Launch::Op(0), Launch::Group(vec![vec![1, 2, 3, 4]])]
        );
    }

    /// A loss, the seed of its gradient, `between`, and the gradient as value `%{gradient}`.
    fn loss_launches(between: &str, gradient: usize) -> Vec<Launch> {
        let graph = parse(&format!(
            "graph step {{
              %0 = param w : [4,3]
              %1 = target labels : [4]
              %2 = softmax_cross_entropy(%0, %1) : []
              %3 = fill() value=1.0 shape=[] : []
              {between}
              %{gradient} = softmax_cross_entropy_grad(%0, %1, %3) : [4,3]
              output loss loss = %2
              output gradient w = %{gradient}
            }}"
        ))
        .expect("parses");
        launches(&graph, &memory::plan(&graph, true, true, false))
    }

    #[test]
    fn a_loss_runs_with_its_gradient_unless_something_between_reads_it() {
        let pair = Launch::LossWithGradient {
            loss: 0,
            gradient: 2,
        };
        assert_eq!(loss_launches("", 4), vec![Launch::Op(1), pair]);
        let apart = loss_launches("%4 = exp(%2) : []", 5);
        assert_eq!(apart[0], Launch::Op(0), "{apart:?}");
    }
}
