//! The compiler's stages, listed in order in one place. Each function here is a pipeline from
//! an elaborated network to a graph of one stage; every graph it returns is pruned and in
//! canonical order (inputs first), and verified in tests.

use crate::autodiff::{gradients, prune};
use crate::front::Network;
use crate::ir::{Graph, OutputRole};
use crate::lower::{lower, Mode, Param, State};
use crate::optim::{apply, Optimizer};
use netc_grammar::diagnostic::nearest;

/// A graph ready to run, with what its inputs are.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub graph: Graph,
    pub params: Vec<Param>,
    pub states: Vec<State>,
}

#[derive(Clone, Debug)]
pub struct TrainingOptions {
    pub batch: usize,
    pub optimizer: Optimizer,
    /// Layer names (dotted; a block's name freezes everything inside it) whose parameters are
    /// not trained.
    pub frozen: Vec<String>,
}

/// The forward graph in training mode (batch statistics, dropout), with the loss: `lowered`.
pub fn forward(network: &Network, batch: usize) -> Result<Compiled, String> {
    let lowered = lower(network, batch, Mode::Training)?;
    Ok(Compiled {
        graph: prune(&lowered.graph),
        params: lowered.params,
        states: lowered.states,
    })
}

/// The forward graph in inference mode (running statistics, no dropout), with the loss.
pub fn inference(network: &Network, batch: usize) -> Result<Compiled, String> {
    let lowered = lower(network, batch, Mode::Inference)?;
    Ok(Compiled {
        graph: prune(&lowered.graph),
        params: lowered.params,
        states: lowered.states,
    })
}

/// Whether a parameter belongs to a frozen layer or block.
pub fn is_frozen(param: &Param, frozen: &[String]) -> bool {
    frozen.iter().any(|f| {
        param.layer == *f
            || param
                .layer
                .strip_prefix(f.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// One training step as one graph: forward, loss, the gradient of every trainable parameter
/// (outputs of role `Gradient`), and the optimizer update (outputs of role `Update`).
pub fn training(network: &Network, options: &TrainingOptions) -> Result<Compiled, String> {
    let mut lowered = lower(network, options.batch, Mode::Training)?;
    for name in &options.frozen {
        let matches = lowered
            .params
            .iter()
            .any(|p| is_frozen(p, std::slice::from_ref(name)));
        if !matches {
            let layers = lowered.params.iter().map(|p| p.layer.as_str());
            let hint =
                nearest(name, layers).map_or(String::new(), |n| format!("; did you mean `{n}`?"));
            return Err(format!(
                "cannot freeze `{name}`: no layer of that name has parameters{hint}"
            ));
        }
    }
    lowered.graph.name = format!("{}.training", network.name);
    let graph = &mut lowered.graph;
    let loss = graph
        .find_output(OutputRole::Loss, "loss")
        .expect("lowering outputs the loss");
    let trainable: Vec<&Param> = lowered
        .params
        .iter()
        .filter(|p| !is_frozen(p, &options.frozen))
        .collect();
    let wrt: Vec<_> = trainable
        .iter()
        .map(|p| graph.find_input(&p.name).expect("parameters are inputs"))
        .collect();
    let grads = gradients(graph, loss, &wrt);
    let mut with_grads = Vec::new();
    for (param, value) in trainable.iter().zip(&wrt) {
        graph.output(OutputRole::Gradient, param.name.clone(), grads[value]);
        with_grads.push((*param, grads[value]));
    }
    let mut states = lowered.states.clone();
    apply(graph, &options.optimizer, &with_grads, &mut states);
    Ok(Compiled {
        graph: prune(graph),
        params: lowered.params,
        states,
    })
}
