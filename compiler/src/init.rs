//! Initial values of parameters and state. Weights follow the recipe's `init.kind`:
//! PyTorch's defaults (convolution and dense weights and biases uniform in `±1/sqrt(fan_in)`,
//! what `kaiming_uniform_(a=sqrt(5))` amounts to), He (`kaiming_normal_`: normal with standard
//! deviation `sqrt(2 / fan_in)`, for ReLU networks) or Xavier (`xavier_uniform_`: uniform in
//! `±sqrt(6 / (fan_in + fan_out))`); He and Xavier zero the biases, as their users do. Batch
//! norm's scale is 1 and shift 0, running mean 0 and variance 1, optimizer moments 0. Seeded,
//! so runs repeat.

use crate::interp::Tensor;
use crate::lower::{ParamRole, StateRole};
use crate::pipeline::Compiled;
use netc_runtime::recipe::InitKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// Values for every parameter and state input of `compiled`, by name.
pub fn initial_values(compiled: &Compiled, kind: InitKind, seed: u64) -> HashMap<String, Tensor> {
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
        let n: usize = shape.iter().product();
        // PyTorch's `_calculate_fan_in_and_fan_out`: `[out, in, kernel...]`.
        let receptive: usize = shape.iter().skip(2).product();
        let fan_out = shape[0] * receptive;
        let tensor = match (param.role, kind) {
            (ParamRole::Weight | ParamRole::Bias, InitKind::PyTorch) => {
                let bound = 1.0 / (param.fan_in as f64).sqrt();
                let data = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                Tensor::new(shape, data)
            }
            (ParamRole::Weight, InitKind::He) => {
                let normal = Normal::new(0.0, (2.0 / param.fan_in as f64).sqrt())
                    .expect("a positive standard deviation");
                let data = (0..n).map(|_| normal.sample(&mut rng)).collect();
                Tensor::new(shape, data)
            }
            (ParamRole::Weight, InitKind::Xavier) => {
                let bound = (6.0 / (param.fan_in + fan_out) as f64).sqrt();
                let data = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                Tensor::new(shape, data)
            }
            (ParamRole::Bias, InitKind::He | InitKind::Xavier) | (ParamRole::NormShift, _) => {
                Tensor::full(shape, 0.0)
            }
            (ParamRole::NormScale, _) => Tensor::full(shape, 1.0),
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
