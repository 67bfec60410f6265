//! The passes between the training (or inference) graph and code generation, listed in order
//! in one function, `run`. Each rewrites the graph into one that means the same (the
//! interpreter agrees before and after, which the tests check for every zoo model), or plans
//! how the code uses memory or launches its kernels; each can be switched off by name
//! (`--disable-pass NAME`), and `--unfused` switches off every fusion pass, so what each buys
//! can be measured.

pub mod factor_sums;
pub mod fold_batch_norm;
pub mod fold_channel_factors;
pub mod fuse_elementwise;
pub mod fuse_epilogue;
pub mod fuse_prologue;
pub mod fuse_sums;
pub mod group_launches;
pub mod memory;
pub mod merge_duplicates;
pub mod pool_weight_grads;
pub mod schedule;
pub mod store_prologue;

use crate::ir::{Graph, Op, ValueId};
use std::collections::HashMap;
use std::fmt;

/// A pass, by what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    FactorSums,
    MergeDuplicates,
    PoolWeightGrads,
    FoldBatchNorm,
    FuseElementwise,
    FuseEpilogue,
    FuseSums,
    FusePrologue,
    StorePrologue,
    FoldChannelFactors,
    ScheduleUpdates,
    ReuseBuffers,
    UpdateInPlace,
    GroupLaunches,
}

impl Pass {
    /// Every pass, in the order `run` applies them.
    pub const ALL: [Pass; 14] = [
        Pass::FactorSums,
        Pass::MergeDuplicates,
        Pass::PoolWeightGrads,
        Pass::FoldBatchNorm,
        Pass::FuseElementwise,
        Pass::FuseEpilogue,
        Pass::FuseSums,
        Pass::FusePrologue,
        Pass::StorePrologue,
        Pass::FoldChannelFactors,
        Pass::ScheduleUpdates,
        Pass::ReuseBuffers,
        Pass::UpdateInPlace,
        Pass::GroupLaunches,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pass::FactorSums => "factor_sums",
            Pass::MergeDuplicates => "merge_duplicates",
            Pass::PoolWeightGrads => "pool_weight_grads",
            Pass::FoldBatchNorm => "fold_batch_norm",
            Pass::FuseElementwise => "fuse_elementwise",
            Pass::FuseEpilogue => "fuse_epilogue",
            Pass::FuseSums => "fuse_sums",
            Pass::FusePrologue => "fuse_prologue",
            Pass::StorePrologue => "store_prologue",
            Pass::FoldChannelFactors => "fold_channel_factors",
            Pass::ScheduleUpdates => "schedule_updates",
            Pass::ReuseBuffers => "reuse_buffers",
            Pass::UpdateInPlace => "update_in_place",
            Pass::GroupLaunches => "group_launches",
        }
    }

    /// A pass by name, or the user's error: what the passes are.
    pub fn parse(name: &str) -> Result<Pass, String> {
        if let Some(pass) = Pass::ALL.into_iter().find(|p| p.name() == name) {
            return Ok(pass);
        }
        let names = Pass::ALL.map(Pass::name);
        let hint = netc_grammar::diagnostic::nearest(name, names.iter().copied())
            .map_or(String::new(), |n| format!("did you mean `{n}`? "));
        let list: Vec<String> = Pass::ALL
            .iter()
            .map(|p| format!("{} ({})", p.name(), p.doc()))
            .collect();
        Err(format!(
            "no such pass; {hint}the passes are: {}",
            list.join(", ")
        ))
    }

    /// Whether the pass fuses ops (what `--unfused` turns off).
    pub fn is_fusion(self) -> bool {
        match self {
            Pass::PoolWeightGrads
            | Pass::FoldBatchNorm
            | Pass::FuseElementwise
            | Pass::FuseEpilogue
            | Pass::FuseSums
            | Pass::FusePrologue
            | Pass::StorePrologue
            | Pass::FoldChannelFactors
            | Pass::GroupLaunches => true,
            Pass::FactorSums
            | Pass::MergeDuplicates
            | Pass::ScheduleUpdates
            | Pass::ReuseBuffers
            | Pass::UpdateInPlace => false,
        }
    }

    /// Whether the pass rewrites the graph (the others plan memory for its code).
    pub fn rewrites_graph(self) -> bool {
        match self {
            Pass::FactorSums
            | Pass::MergeDuplicates
            | Pass::PoolWeightGrads
            | Pass::FoldBatchNorm
            | Pass::FuseElementwise
            | Pass::FuseEpilogue
            | Pass::FuseSums
            | Pass::FusePrologue
            | Pass::StorePrologue
            | Pass::FoldChannelFactors
            | Pass::ScheduleUpdates => true,
            Pass::ReuseBuffers | Pass::UpdateInPlace | Pass::GroupLaunches => false,
        }
    }

    /// What the pass is for, for `--help` and errors.
    pub fn doc(self) -> &'static str {
        match self {
            Pass::FactorSums => {
                "factors constant along a sum's axes taken out of it (batch norm's gradient: two \
                 sums instead of four); a sum of max pooling's gradient over whole planes taken \
                 over the pooled gradient"
            }
            Pass::MergeDuplicates => "ops that compute the same thing from the same inputs, once",
            Pass::PoolWeightGrads => {
                "a convolution's weight gradient through max pooling taken at each window's \
                 maximum alone, where nothing else reads the unpooled gradient"
            }
            Pass::FoldBatchNorm => "inference batch norm folded into the convolution before it",
            Pass::FuseElementwise => {
                "chains of elementwise ops as one loop, forward and backward, and into the sums \
                 that read them"
            }
            Pass::FuseEpilogue => {
                "a convolution's or matrix product's elementwise reader applied to its tiles as \
                 they are written"
            }
            Pass::FuseSums => {
                "sums of tensors of one shape in one pass, with each other and with the \
                 elementwise op whose result they sum"
            }
            Pass::FusePrologue => {
                "an elementwise op that only depthwise or pointwise convolutions and their weight \
                 gradients read computed by them as they read it, instead of written to memory"
            }
            Pass::StorePrologue => {
                "an elementwise op that other ops read too computed by the first convolution \
                 that reads it (or the input gradient of one), which stores it as it goes"
            }
            Pass::FoldChannelFactors => {
                "in fused elementwise steps, factors and terms constant per channel gathered \
                 (batch norm's apply as x * a + b), so each element pays fewer operations"
            }
            Pass::ScheduleUpdates => {
                "each optimizer update (with the gradient it reads) as early as its inputs allow, \
                 so that gradients do not live to the end of the step"
            }
            Pass::ReuseBuffers => "values whose lives do not overlap share a buffer",
            Pass::UpdateInPlace => "parameters and state updated in their own buffers",
            Pass::GroupLaunches => {
                "independent elementwise kernels (every parameter's optimizer update) run as one \
                 launch of the thread pool; softmax cross-entropy with its gradient in one pass"
            }
        }
    }
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which passes run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassOptions {
    pub disabled: Vec<Pass>,
    /// Whether the host reads the gradients after a step (tests compare them), so that the
    /// memory plan keeps them in buffers of their own; see `memory::host_reads`.
    pub keep_gradients: bool,
}

impl PassOptions {
    /// Every pass but the fusions.
    pub fn unfused() -> PassOptions {
        PassOptions {
            disabled: Pass::ALL.into_iter().filter(|p| p.is_fusion()).collect(),
            keep_gradients: false,
        }
    }

    /// No pass at all: the graph as differentiation left it, one buffer per value.
    pub fn none() -> PassOptions {
        PassOptions {
            disabled: Pass::ALL.to_vec(),
            keep_gradients: false,
        }
    }

    pub fn enabled(&self, pass: Pass) -> bool {
        !self.disabled.contains(&pass)
    }

    /// All passes but `disabled`, and but the fusions if `unfused`.
    pub fn new(unfused: bool, disabled: &[Pass]) -> PassOptions {
        let mut options = if unfused {
            PassOptions::unfused()
        } else {
            PassOptions::default()
        };
        for pass in disabled {
            if !options.disabled.contains(pass) {
                options.disabled.push(*pass);
            }
        }
        options
    }
}

/// The graph after every enabled pass, in order.
pub fn run(graph: &Graph, options: &PassOptions) -> Graph {
    let mut graph = graph.clone();
    for pass in Pass::ALL {
        if options.enabled(pass) && pass.rewrites_graph() {
            graph = apply(pass, &graph);
        }
    }
    graph
}

/// One pass on its own. The memory passes and launch grouping leave the graph as it is: code
/// generation asks `memory::plan` for the buffers and `group_launches::groups` for the
/// launches, with them on or off.
pub fn apply(pass: Pass, graph: &Graph) -> Graph {
    match pass {
        Pass::FactorSums => factor_sums::run(graph),
        Pass::MergeDuplicates => merge_duplicates::run(graph),
        Pass::PoolWeightGrads => pool_weight_grads::run(graph),
        Pass::FoldBatchNorm => fold_batch_norm::run(graph),
        Pass::FuseElementwise => fuse_elementwise::run(graph),
        Pass::FuseEpilogue => fuse_epilogue::run(graph),
        Pass::FuseSums => fuse_sums::run(graph),
        Pass::FusePrologue => fuse_prologue::run(graph),
        Pass::StorePrologue => store_prologue::run(graph),
        Pass::FoldChannelFactors => fold_channel_factors::run(graph),
        Pass::ScheduleUpdates => schedule::run(graph),
        Pass::ReuseBuffers | Pass::UpdateInPlace | Pass::GroupLaunches => graph.clone(),
    }
}

/// Who reads each value: the ops (once each, in order), and whether the graph outputs it.
pub(crate) struct Uses {
    pub readers: Vec<Vec<usize>>,
    pub is_output: Vec<bool>,
}

impl Uses {
    pub fn of(graph: &Graph) -> Uses {
        let mut readers = vec![Vec::new(); graph.values.len()];
        for (index, op) in graph.ops.iter().enumerate() {
            for value in &op.inputs {
                if readers[value.0].last() != Some(&index) {
                    readers[value.0].push(index);
                }
            }
        }
        let mut is_output = vec![false; graph.values.len()];
        for output in &graph.outputs {
            is_output[output.value.0] = true;
        }
        Uses { readers, is_output }
    }

    /// The ops that read `value`'s storage: its readers, and those of the views of it (a
    /// reshape, a contiguous slice: `memory::view_of`), views of views included. An update
    /// computed in place of `value` must follow them all.
    pub fn storage_readers(&self, graph: &Graph, value: ValueId) -> Vec<usize> {
        let (mut found, mut values) = (Vec::new(), vec![value]);
        while let Some(value) = values.pop() {
            for &reader in &self.readers[value.0] {
                found.push(reader);
                let op = &graph.ops[reader];
                if memory::view_of(graph, op).is_some() {
                    values.push(op.output);
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Whether op `reader` is all that uses `value`, so a rewrite may absorb the value into it.
    pub fn only(&self, value: ValueId, reader: usize) -> bool {
        self.readers[value.0] == [reader] && !self.is_output[value.0]
    }
}

/// What a rewrite makes of one op of the graph it copies.
pub(crate) enum Rewrite {
    /// The op as it is.
    Keep,
    /// Nothing: another op's replacement computes what it did.
    Drop,
    /// This value of the new graph stands for the op's output.
    Replace(ValueId),
}

/// `graph` copied op by op, inputs and outputs renumbered, with `each` deciding every op's
/// fate: it gets the new graph to add ops to and the map from old values to new ones.
pub(crate) fn rewrite(
    graph: &Graph,
    each: impl FnMut(&mut Graph, usize, &HashMap<ValueId, ValueId>) -> Rewrite,
) -> Graph {
    rewrite_in_order(graph, 0..graph.ops.len(), each)
}

/// [`rewrite`], visiting the ops in `order` (every op once, each after the ops whose results
/// it reads), which becomes the new graph's order.
pub(crate) fn rewrite_in_order(
    graph: &Graph,
    order: impl IntoIterator<Item = usize>,
    mut each: impl FnMut(&mut Graph, usize, &HashMap<ValueId, ValueId>) -> Rewrite,
) -> Graph {
    let mut new = Graph::new(graph.name.clone());
    let mut renumber: HashMap<ValueId, ValueId> = HashMap::new();
    for (old, input) in graph.inputs() {
        let value = new.input(input.kind, input.name.clone(), graph.shape(old).clone());
        renumber.insert(old, value);
    }
    for index in order {
        let op = &graph.ops[index];
        let value = match each(&mut new, index, &renumber) {
            Rewrite::Keep => copy(&mut new, op, &renumber),
            Rewrite::Drop => continue,
            Rewrite::Replace(value) => value,
        };
        renumber.insert(op.output, value);
    }
    for output in &graph.outputs {
        new.output(output.role, output.name.clone(), renumber[&output.value]);
    }
    new
}

fn copy(new: &mut Graph, op: &Op, renumber: &HashMap<ValueId, ValueId>) -> ValueId {
    let inputs: Vec<ValueId> = op.inputs.iter().map(|v| renumber[v]).collect();
    new.op(op.kind.clone(), &inputs, op.layer.as_deref())
}
