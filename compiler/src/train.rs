//! The compiler's side of `netc train` and `netc eval`: training steps and inference passes
//! compiled with the JIT for the runtime's training driver, with the optimizer and initial
//! values a recipe asks for, and the recipe's data made ready for the network's input.
//!
//! Weights from a safetensors file (`init.from`, `netc eval --weights`) are matched by name:
//! the names are PyTorch's `state_dict` names (`conv1.weight`, `stage1.0.bn1.running_mean`),
//! so a file saved from the same network in PyTorch loads here, and ours load there.

use crate::codegen::{compile, CodegenOptions, Program};
use crate::front::elaborate::NodeKind;
use crate::front::layers::{Layer, Loss};
use crate::front::Network;
use crate::init::initial_values;
use crate::ir::OutputRole;
use crate::lower::StateRole;
use crate::optim::{Optimizer, OptimizerKind};
use crate::pipeline::{self, Compiled, TrainingOptions};
use netc_runtime::checkpoint::Checkpoint;
use netc_runtime::data::{self, Dataset, Normalization};
use netc_runtime::driver::{Backend, RunData, StepProgram};
use netc_runtime::recipe::{InitKind, Normalize, OptimizerRecipe, Recipe};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A compiled graph with the names and shapes of its parameters and state.
pub struct JitProgram {
    program: Program,
    tensors: Vec<(String, Vec<usize>)>,
}

impl StepProgram for JitProgram {
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors.clone()
    }

    fn input_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        self.program.input_mut(name)
    }

    fn input(&self, name: &str) -> Option<&[f32]> {
        self.program.input(name)
    }

    fn run(&mut self) {
        self.program.run()
    }

    fn apply_updates(&mut self) {
        self.program.apply_updates()
    }

    fn loss(&self) -> f32 {
        self.program
            .output(OutputRole::Loss, "loss")
            .expect("graphs output their loss")[0]
    }

    fn prediction(&self) -> &[f32] {
        self.program
            .output(OutputRole::Prediction, "prediction")
            .expect("graphs output their prediction")
    }

    fn first_non_finite(&self) -> Option<String> {
        let graph = self.program.graph();
        graph
            .ops
            .iter()
            .find(|op| self.program.value(op.output).iter().any(|v| !v.is_finite()))
            .map(|op| {
                op.layer
                    .clone()
                    .unwrap_or_else(|| op.kind.name().to_string())
            })
    }
}

/// Compiles training steps and inference passes of one network for the driver.
pub struct JitBackend {
    pub network: Network,
    pub batch: usize,
    pub optimizer: Optimizer,
    pub init: InitKind,
    pub seed: u64,
    /// Parameters and running statistics from `init.from`, checked against the network.
    pub weights: BTreeMap<String, Vec<f32>>,
    pub codegen: CodegenOptions,
}

impl JitBackend {
    fn program(&self, compiled: &Compiled) -> Result<JitProgram, String> {
        let mut program = compile(&compiled.graph, &self.codegen).map_err(|e| e.to_string())?;
        for (name, tensor) in initial_values(compiled, self.init, self.seed) {
            let slot = program.input_mut(&name).expect("parameters are inputs");
            match self.weights.get(&name) {
                Some(values) => slot.copy_from_slice(values),
                None => slot
                    .iter_mut()
                    .zip(&tensor.data)
                    .for_each(|(to, &from)| *to = from as f32),
            }
        }
        let tensors = compiled
            .params
            .iter()
            .map(|p| p.name.as_str())
            .chain(compiled.states.iter().map(|s| s.name.as_str()))
            .map(|name| {
                let id = compiled.graph.find_input(name).expect("an input");
                (name.to_string(), compiled.graph.shape(id).clone())
            })
            .collect();
        Ok(JitProgram { program, tensors })
    }
}

impl Backend for JitBackend {
    type Program = JitProgram;

    fn training(&mut self, frozen: &[String]) -> Result<JitProgram, String> {
        let compiled = pipeline::training(
            &self.network,
            &TrainingOptions {
                batch: self.batch,
                optimizer: self.optimizer,
                frozen: frozen.to_vec(),
            },
        )?;
        self.program(&compiled)
    }

    fn inference(&mut self) -> Result<JitProgram, String> {
        self.program(&pipeline::inference(&self.network, self.batch)?)
    }
}

/// The weights a file holds for a network, matched by name.
pub struct MatchedWeights {
    /// Parameters and batch-norm running statistics the network has, by name.
    pub weights: BTreeMap<String, Vec<f32>>,
    /// The network's tensors the file lacks.
    pub missing: Vec<String>,
    /// The file's tensors the network lacks.
    pub unknown: Vec<String>,
}

impl MatchedWeights {
    /// What did not match, for a note.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.unknown.is_empty() {
            notes.push(format!(
                "ignored {} tensors the network does not have: {}",
                self.unknown.len(),
                list(&self.unknown)
            ));
        }
        if !self.missing.is_empty() {
            notes.push(format!(
                "{} of the network's tensors are not in the file and keep their initial \
                 values: {}",
                self.missing.len(),
                list(&self.missing)
            ));
        }
        notes
    }
}

/// Matches `file`'s tensors with `network`'s parameters and batch-norm running statistics. A
/// tensor of a known name with another shape is an error.
pub fn match_weights(file: &Checkpoint, network: &Network) -> Result<MatchedWeights, String> {
    let compiled = pipeline::inference(network, 1)?;
    let mut wanted: BTreeMap<&str, &[usize]> = BTreeMap::new();
    for name in compiled.params.iter().map(|p| &p.name).chain(
        compiled
            .states
            .iter()
            .filter(|s| matches!(s.role, StateRole::RunningMean | StateRole::RunningVar))
            .map(|s| &s.name),
    ) {
        let id = compiled.graph.find_input(name).expect("an input");
        wanted.insert(name, compiled.graph.shape(id));
    }
    let mut weights = BTreeMap::new();
    let mut unknown = Vec::new();
    for tensor in &file.tensors {
        match wanted.get(tensor.name.as_str()) {
            Some(&shape) if shape == tensor.shape.as_slice() => {
                weights.insert(tensor.name.clone(), tensor.data.clone());
            }
            Some(shape) => {
                return Err(format!(
                    "tensor `{}` has shape {:?} in the file, but the network's has shape {shape:?}",
                    tensor.name, tensor.shape
                ))
            }
            // PyTorch's batch norm counts its batches; netc's momentum needs no count.
            None if tensor.name.ends_with("num_batches_tracked") => {}
            // Optimizer moments of a training checkpoint.
            None if tensor
                .name
                .rsplit_once('.')
                .is_some_and(|(param, _)| wanted.contains_key(param)) => {}
            None => unknown.push(tensor.name.clone()),
        }
    }
    let missing = wanted
        .keys()
        .filter(|name| !weights.contains_key(**name))
        .map(|name| name.to_string())
        .collect();
    Ok(MatchedWeights {
        weights,
        missing,
        unknown,
    })
}

/// The first few names of a list.
fn list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    let more = names.len() - shown.len();
    let mut text = shown.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// The optimizer a recipe describes, with PyTorch's defaults for what it leaves out. (The
/// recipe has resolved `sgd` with momentum or `nesterov: true` to its kind.)
pub fn optimizer(recipe: &OptimizerRecipe) -> Optimizer {
    let kind = OptimizerKind::from_name(&recipe.kind).expect("the recipe checked the name");
    let kind = match kind {
        OptimizerKind::Sgd => OptimizerKind::Sgd,
        OptimizerKind::Momentum { momentum } => OptimizerKind::Momentum {
            momentum: recipe.momentum.unwrap_or(momentum),
        },
        OptimizerKind::Nesterov { momentum } => OptimizerKind::Nesterov {
            momentum: recipe.momentum.unwrap_or(momentum),
        },
        OptimizerKind::AdaGrad { eps } => OptimizerKind::AdaGrad {
            eps: recipe.eps.unwrap_or(eps),
        },
        OptimizerKind::RmsProp { alpha, eps } => OptimizerKind::RmsProp {
            alpha: recipe.alpha.unwrap_or(alpha),
            eps: recipe.eps.unwrap_or(eps),
        },
        OptimizerKind::Adam { beta1, beta2, eps } => OptimizerKind::Adam {
            beta1: recipe.beta1.unwrap_or(beta1),
            beta2: recipe.beta2.unwrap_or(beta2),
            eps: recipe.eps.unwrap_or(eps),
        },
        OptimizerKind::AdamW { beta1, beta2, eps } => OptimizerKind::AdamW {
            beta1: recipe.beta1.unwrap_or(beta1),
            beta2: recipe.beta2.unwrap_or(beta2),
            eps: recipe.eps.unwrap_or(eps),
        },
    };
    Optimizer {
        kind,
        weight_decay: recipe.weight_decay,
        l1: recipe.l1,
        decay_all: recipe.decay_all,
    }
}

/// The image shape a network takes, `[C, H, W]`.
fn image_shape(network: &Network) -> Result<[usize; 3], String> {
    match network.input_shape().0.as_slice() {
        &[c, h, w] => Ok([c as usize, h as usize, w as usize]),
        other => Err(format!(
            "`{}` takes a vector of {} values, but the data sets are images; give the network an \
             image input (`input 1x28x28`) and let `dense` flatten it",
            network.name,
            other.iter().product::<u64>()
        )),
    }
}

/// The number of classes a network scores, if it is a classifier.
fn classifier_outputs(network: &Network) -> Result<usize, String> {
    let loss = network.nodes.last().expect("networks close with a loss");
    let scores = &network.nodes[network.nodes.len() - 2].output;
    match loss.kind {
        NodeKind::Layer(Layer::Loss(Loss::SoftmaxCrossEntropy)) => {
            Ok(scores.0.iter().product::<u64>() as usize)
        }
        _ => Err(format!(
            "`netc train` trains classifiers, whose loss is `softmax_cross_entropy`; `{}` ends \
             with another loss",
            network.name
        )),
    }
}

/// The recipe's data for `network`, a classifier of images: the training set (limited, less
/// the validation split), the validation split, the test set and the normalisation (`given`,
/// from a checkpoint, wins over the recipe's). Notes say what was adapted.
pub fn prepare_data(
    recipe: &Recipe,
    network: &Network,
    given: Option<Normalization>,
) -> Result<(RunData, Vec<String>), String> {
    let shape = image_shape(network)?;
    let classes = classifier_outputs(network)?;
    let splits = data::open(&recipe.data.train, shape).map_err(|e| e.to_string())?;
    let mut notes = Vec::new();
    if splits.original_shape != shape {
        let [c, h, w] = splits.original_shape;
        notes.push(format!(
            "the data's {c}x{h}x{w} images are converted to the network's {}x{}x{} input",
            shape[0], shape[1], shape[2]
        ));
    }
    if splits.train.classes() != classes {
        return Err(format!(
            "`{}` has {} classes but the network outputs {classes} scores; set the network's \
             class count (`network: {{ classes: {} }}` in the recipe, or --set classes={})",
            recipe.data.train,
            splits.train.classes(),
            splits.train.classes(),
            splits.train.classes()
        ));
    }
    let limit = |set: Dataset, limit: Option<usize>| match limit {
        Some(count) => set.take(count),
        None => set,
    };
    let train = limit(splits.train, recipe.data.limit);
    let test = limit(splits.test, recipe.data.test_limit);
    let (train, validation) = train.split(recipe.data.validation_split, recipe.seed);
    let normalization = match (given, &recipe.data.normalize) {
        (Some(given), _) => given,
        (None, Normalize::Auto) => train.normalization(),
        (None, Normalize::None) => Normalization::identity(shape[0]),
        (None, Normalize::Given { mean, std }) => {
            if mean.len() != shape[0] || std.len() != shape[0] {
                return Err(format!(
                    "`data.normalize` gives {} means and {} standard deviations, but the \
                     network's input has {} channels",
                    mean.len(),
                    std.len(),
                    shape[0]
                ));
            }
            Normalization {
                mean: mean.clone(),
                std: std.clone(),
            }
        }
    };
    Ok((
        RunData {
            train: Arc::new(train),
            validation: (!validation.is_empty()).then(|| Arc::new(validation)),
            test: Arc::new(test),
            normalization,
        },
        notes,
    ))
}
