//! The description of every parameter and state input of a compiled graph that the runtime
//! draws initial values from (`netc_runtime::init`), and those values as interpreter tensors.

use crate::interp::Tensor;
use crate::pipeline::Compiled;
use netc_runtime::init::{self, InitKind, TensorInit, TensorRole};
use std::collections::HashMap;

/// Every parameter, then every state input, of `compiled`.
pub fn tensor_inits(compiled: &Compiled) -> Vec<TensorInit> {
    let shape_of = |name: &str| {
        let id = compiled
            .graph
            .find_input(name)
            .expect("parameters and state are graph inputs");
        compiled.graph.shape(id).clone()
    };
    let params = compiled.params.iter().map(|param| TensorInit {
        name: param.name.clone(),
        shape: shape_of(&param.name),
        role: TensorRole::Param(param.role),
        fan_in: param.fan_in,
    });
    let states = compiled.states.iter().map(|state| TensorInit {
        name: state.name.clone(),
        shape: shape_of(&state.name),
        role: TensorRole::State(state.role),
        fan_in: 0,
    });
    params.chain(states).collect()
}

/// Initial values for every parameter and state input of `compiled`, by name.
pub fn initial_values(compiled: &Compiled, kind: InitKind, seed: u64) -> HashMap<String, Tensor> {
    let tensors = tensor_inits(compiled);
    init::initial_values(&tensors, kind, seed)
        .into_iter()
        .zip(&tensors)
        .map(|((name, data), tensor)| (name, Tensor::new(tensor.shape.clone(), data)))
        .collect()
}
