//! Initial values of parameters and state, as PyTorch's layers initialise themselves:
//! convolution and dense weights and biases uniform in `±1/sqrt(fan_in)` (what
//! `kaiming_uniform_(a=sqrt(5))` amounts to), batch norm's scale 1 and shift 0, running mean 0
//! and variance 1, optimizer moments 0. Seeded, so runs repeat.

use crate::interp::Tensor;
use crate::lower::{ParamRole, StateRole};
use crate::pipeline::Compiled;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// Values for every parameter and state input of `compiled`, by name.
pub fn initial_values(compiled: &Compiled, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shape_of = |name: &str| {
        let id = compiled
            .graph
            .find_input(name)
            .expect("parameters and state are graph inputs");
        compiled.graph.shape(id).clone()
    };
    let mut values = HashMap::new();
    for param in &compiled.params {
        let shape = shape_of(&param.name);
        let tensor = match param.role {
            ParamRole::Weight | ParamRole::Bias => {
                let bound = 1.0 / (param.fan_in as f64).sqrt();
                let n = shape.iter().product();
                let data = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                Tensor::new(shape, data)
            }
            ParamRole::NormScale => Tensor::full(shape, 1.0),
            ParamRole::NormShift => Tensor::full(shape, 0.0),
        };
        values.insert(param.name.clone(), tensor);
    }
    for state in &compiled.states {
        let shape = shape_of(&state.name);
        let value = match state.role {
            StateRole::RunningVar => 1.0,
            StateRole::RunningMean | StateRole::OptimizerMoment => 0.0,
        };
        values.insert(state.name.clone(), Tensor::full(shape, value));
    }
    values
}
