//! `schedule_updates`: the execution order, chosen for memory. Differentiation leaves every
//! optimizer update at the end of the step, so each parameter's gradient lives from the op that
//! computes it to the end of the step, beside the activations still kept for the backward pass.
//! This pass runs the optimizer's ops (the updates, and what only they read: a bias correction,
//! a weight-decay term) as soon as their inputs exist, each update of a parameter or state
//! after every other reader of the old value, through views of it too (so that it is still
//! computed in place): a gradient's buffer is free again once its update has run. The other
//! ops keep their order.
//!
//! What no order can change is measured: the activations kept for the backward pass are all
//! live where it starts, and on the zoo they are all but 1-2% of the most ever live at once
//! when the gradients are not counted (two earlier schedulers, moving every op to its first
//! reader and a greedy list scheduler, gained nothing or lost).

use super::{rewrite_in_order, Rewrite, Uses};
use crate::ir::{Definition, Graph, OutputRole};

pub fn run(graph: &Graph) -> Graph {
    rewrite_in_order(graph, order(graph), |_, _, _| Rewrite::Keep)
}

/// The new order of the graph's ops.
fn order(graph: &Graph) -> Vec<usize> {
    let ops = graph.ops.len();
    let uses = Uses::of(graph);
    // Which values the graph outputs as updates, and which as gradients.
    let mut outputs_as = [
        vec![false; graph.values.len()],
        vec![false; graph.values.len()],
    ];
    for output in &graph.outputs {
        match output.role {
            OutputRole::Update => outputs_as[0][output.value.0] = true,
            OutputRole::Gradient => outputs_as[1][output.value.0] = true,
            OutputRole::Loss | OutputRole::Prediction => {}
        }
    }
    let [is_update, is_gradient] = &outputs_as;
    // The optimizer's ops: those computing an update, and the ops computing what only they
    // read (a learning-rate factor, a weight decay term); each reads nothing computed but the
    // gradients and other ops of the optimizer. Found from everything by striking out, until
    // none is left to strike, each op that breaks either rule.
    let mut optimizer = vec![true; ops];
    let mut changed = true;
    while changed {
        changed = false;
        for index in (0..ops).rev() {
            let op = &graph.ops[index];
            let readers = &uses.readers[op.output.0];
            let serves = is_update[op.output.0]
                || (!readers.is_empty() && readers.iter().all(|&r| optimizer[r]));
            let reads = op
                .inputs
                .iter()
                .all(|input| match graph.values[input.0].definition {
                    Definition::Input(_) => true,
                    Definition::Op(producer) => optimizer[producer] || is_gradient[input.0],
                });
            if optimizer[index] && !(serves && reads) {
                optimizer[index] = false;
                changed = true;
            }
        }
    }
    // The ops that must run before each: those computing its inputs, and, for an update of a
    // parameter or state, the other readers of the value it replaces.
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); ops];
    for (index, op) in graph.ops.iter().enumerate() {
        for input in &op.inputs {
            after[index].extend(graph.producer(*input));
        }
    }
    for output in graph
        .outputs
        .iter()
        .filter(|o| o.role == OutputRole::Update)
    {
        let (&Definition::Op(update), Some(old)) = (
            &graph.values[output.value.0].definition,
            graph.find_input(&output.name),
        ) else {
            continue;
        };
        let others = uses.storage_readers(graph, old);
        after[update].extend(others.into_iter().filter(|&r| r != update));
    }
    let mut done = vec![false; ops];
    let mut order = Vec::with_capacity(ops);
    let mut waiting: Vec<usize> = (0..ops).filter(|&i| optimizer[i]).collect();
    let mut rest = (0..ops).filter(|&i| !optimizer[i]);
    loop {
        // Every waiting op that can run now, in the given order, until none can.
        while let Some(at) = waiting
            .iter()
            .position(|&i| after[i].iter().all(|&before| done[before]))
        {
            let index = waiting.remove(at);
            done[index] = true;
            order.push(index);
        }
        let Some(index) = rest.next() else { break };
        done[index] = true;
        order.push(index);
    }
    // An update that must follow a reader of the old value which itself reads the new one
    // cannot run in place whatever the order: such ops keep their given order, at the end.
    order.extend(waiting);
    order
}
