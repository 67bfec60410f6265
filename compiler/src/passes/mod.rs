//! The passes between the training (or inference) graph and code generation, listed in order
//! in one function, `run`. Each rewrites the graph into one that means the same (the
//! interpreter agrees before and after, which the tests check for every zoo model), or plans
//! how the code uses memory; each can be switched off by name (`--disable-pass NAME`), and
//! `--unfused` switches off every fusion pass, so what each buys can be measured.

pub mod fold_batch_norm;
pub mod fuse_elementwise;
pub mod memory;

use crate::ir::Graph;
use std::fmt;

/// A pass, by what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    FoldBatchNorm,
    FuseElementwise,
    ReuseBuffers,
    UpdateInPlace,
}

impl Pass {
    /// Every pass, in the order `run` applies them.
    pub const ALL: [Pass; 4] = [
        Pass::FoldBatchNorm,
        Pass::FuseElementwise,
        Pass::ReuseBuffers,
        Pass::UpdateInPlace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pass::FoldBatchNorm => "fold_batch_norm",
            Pass::FuseElementwise => "fuse_elementwise",
            Pass::ReuseBuffers => "reuse_buffers",
            Pass::UpdateInPlace => "update_in_place",
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
            Pass::FoldBatchNorm | Pass::FuseElementwise => true,
            Pass::ReuseBuffers | Pass::UpdateInPlace => false,
        }
    }

    /// What the pass is for, for `--help` and errors.
    pub fn doc(self) -> &'static str {
        match self {
            Pass::FoldBatchNorm => "inference batch norm folded into the convolution before it",
            Pass::FuseElementwise => "chains of elementwise ops as one loop, forward and backward",
            Pass::ReuseBuffers => "values whose lives do not overlap share a buffer",
            Pass::UpdateInPlace => "parameters and state updated in their own buffers",
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
}

impl PassOptions {
    /// Every pass but the fusions.
    pub fn unfused() -> PassOptions {
        PassOptions {
            disabled: Pass::ALL.into_iter().filter(|p| p.is_fusion()).collect(),
        }
    }

    /// No pass at all: the graph as differentiation left it, one buffer per value.
    pub fn none() -> PassOptions {
        PassOptions {
            disabled: Pass::ALL.to_vec(),
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
        if options.enabled(pass) {
            graph = apply(pass, &graph);
        }
    }
    graph
}

/// One pass on its own. The memory passes leave the graph as it is: code generation asks
/// `memory::plan` for the buffers, with them on or off.
pub fn apply(pass: Pass, graph: &Graph) -> Graph {
    match pass {
        Pass::FoldBatchNorm => fold_batch_norm::run(graph),
        Pass::FuseElementwise => fuse_elementwise::run(graph),
        Pass::ReuseBuffers | Pass::UpdateInPlace => graph.clone(),
    }
}
