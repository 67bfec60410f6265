//! `merge_duplicates` (common subexpression elimination): an op that computes what an earlier
//! one already did (the same primitive, attributes and inputs) is dropped and its readers read
//! the earlier result. Differentiation makes such twins: batch norm's gradient multiplies the
//! same broadcast by the same centred input along two paths. Merged, the broadcast has one
//! reader and fuses into it, and the product is computed once.
//!
//! Every op is a pure function of its inputs and attributes (dropout masks too: their stream
//! is an attribute), so equal ops give equal values.

use super::{rewrite, Rewrite};
use crate::ir::{Graph, ValueId};
use std::collections::HashMap;

pub fn run(graph: &Graph) -> Graph {
    // Ops by their kind (its printed form, since attributes hold reals) and renumbered inputs.
    let mut seen: HashMap<(String, Vec<ValueId>), ValueId> = HashMap::new();
    rewrite(graph, |new, index, renumber| {
        let op = &graph.ops[index];
        let inputs: Vec<ValueId> = op.inputs.iter().map(|v| renumber[v]).collect();
        let key = (format!("{:?}", op.kind), inputs);
        match seen.get(&key) {
            Some(&earlier) => Rewrite::Replace(earlier),
            None => {
                let value = new.op(op.kind.clone(), &key.1, op.layer.as_deref());
                seen.insert(key, value);
                Rewrite::Replace(value)
            }
        }
    })
}
