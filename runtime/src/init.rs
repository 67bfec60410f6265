//! Initial values of parameters and state. Weights follow the recipe's `init.kind`:
//! PyTorch's defaults (convolution and dense weights and biases uniform in `±1/sqrt(fan_in)`,
//! what `kaiming_uniform_(a=sqrt(5))` amounts to), He (`kaiming_normal_`: normal with standard
//! deviation `sqrt(2 / fan_in)`, for ReLU networks) or Xavier (`xavier_uniform_`: uniform in
//! `±sqrt(6 / (fan_in + fan_out))`); He and Xavier zero the biases, as their users do. Batch
//! norm's scale is 1 and shift 0, running mean 0 and variance 1, optimizer moments 0. Seeded,
//! so runs repeat, and computed here from a description of each tensor, so a standalone
//! executable draws the same values as `netc train`.

pub use crate::recipe::InitKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// What a parameter is, for the rules that treat kinds differently (weight decay, init).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamRole {
    /// A convolution's or dense layer's weight.
    Weight,
    /// A convolution's or dense layer's bias.
    Bias,
    /// Batch norm's scale (gamma).
    NormScale,
    /// Batch norm's shift (beta).
    NormShift,
}

/// A piece of state a graph updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateRole {
    RunningMean,
    RunningVar,
    /// Optimizer moments and accumulators, zero before the first step.
    OptimizerMoment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TensorRole {
    Param(ParamRole),
    State(StateRole),
}

/// A parameter or state input, as its initial value depends on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorInit {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: TensorRole,
    /// Inputs feeding each output of the owning layer (parameters only).
    pub fan_in: usize,
}

impl TensorInit {
    /// Whether trained weights hold it: parameters and batch norm's running statistics (not
    /// optimizer moments).
    pub fn is_weight(&self) -> bool {
        !matches!(self.role, TensorRole::State(StateRole::OptimizerMoment))
    }
}

/// Values for `tensors`, in their order (parameters drawn in sequence from one generator).
pub fn initial_values(
    tensors: &[TensorInit],
    kind: InitKind,
    seed: u64,
) -> Vec<(String, Vec<f64>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tensors
        .iter()
        .map(|tensor| {
            let n: usize = tensor.shape.iter().product();
            // PyTorch's `_calculate_fan_in_and_fan_out`: `[out, in, kernel...]`.
            let receptive: usize = tensor.shape.iter().skip(2).product();
            let fan_out = tensor.shape.first().copied().unwrap_or(1) * receptive;
            let fan_in = tensor.fan_in as f64;
            let values = match (tensor.role, kind) {
                (TensorRole::Param(ParamRole::Weight | ParamRole::Bias), InitKind::PyTorch) => {
                    uniform(&mut rng, n, 1.0 / fan_in.sqrt())
                }
                (TensorRole::Param(ParamRole::Weight), InitKind::He) => {
                    let normal = Normal::new(0.0, (2.0 / fan_in).sqrt())
                        .expect("a positive standard deviation");
                    (0..n).map(|_| normal.sample(&mut rng)).collect()
                }
                (TensorRole::Param(ParamRole::Weight), InitKind::Xavier) => {
                    uniform(&mut rng, n, (6.0 / (tensor.fan_in + fan_out) as f64).sqrt())
                }
                (TensorRole::Param(ParamRole::Bias), InitKind::He | InitKind::Xavier)
                | (TensorRole::Param(ParamRole::NormShift), _)
                | (TensorRole::State(StateRole::RunningMean | StateRole::OptimizerMoment), _) => {
                    vec![0.0; n]
                }
                (TensorRole::Param(ParamRole::NormScale), _)
                | (TensorRole::State(StateRole::RunningVar), _) => vec![1.0; n],
            };
            (tensor.name.clone(), values)
        })
        .collect()
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}
