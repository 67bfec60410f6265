//! The compiler's side of `netc train` and `netc eval` (whose flow is the runtime's
//! `session`): a model file whose network the recipe's `network` section configures, and
//! training steps and inference passes JIT-compiled for the driver with the optimizer and
//! initial values the recipe asks for.

use crate::cli::{evaluate_settings, load};
use crate::codegen::{compile_network, CodegenOptions};
use crate::front::elaborate::NodeKind;
use crate::front::layers::{Layer, Loss};
use crate::front::Network;
use crate::init::tensor_inits;
use crate::optim::{Optimizer, OptimizerKind};
use crate::pipeline::{self, Compiled, TrainingOptions};
use codespan_reporting::term::termcolor::WriteColor;
use netc_grammar::diagnostic::SourceFile;
use netc_runtime::checkpoint::sha256_hex;
use netc_runtime::driver::{Backend, ModelIdentity};
use netc_runtime::program::Program;
use netc_runtime::recipe::{InitKind, OptimizerRecipe, Recipe};
use netc_runtime::session::{Configured, Model, ModelShape};
use std::collections::BTreeMap;

/// A model file, trained and evaluated through the JIT.
pub struct JitModel {
    file: SourceFile,
    identity: ModelIdentity,
    /// Network parameters set on the command line, after the recipe's.
    settings: Vec<(String, String)>,
    codegen: CodegenOptions,
    /// The network as the last recipe configured it.
    network: Option<Network>,
}

impl JitModel {
    pub fn new(
        file: SourceFile,
        settings: Vec<(String, String)>,
        codegen: CodegenOptions,
    ) -> JitModel {
        let identity = ModelIdentity {
            name: file.name.clone(),
            sha256: sha256_hex(file.text.as_bytes()),
        };
        JitModel {
            file,
            identity,
            settings,
            codegen,
            network: None,
        }
    }

    /// The network as the last recipe configured it.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }
}

impl Model for JitModel {
    type Backend = JitBackend;

    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn configure(
        &mut self,
        recipe: &Recipe,
        _training: bool,
        stderr: &mut dyn WriteColor,
    ) -> anyhow::Result<Option<Configured>> {
        let settings: Vec<_> = recipe
            .network
            .iter()
            .chain(&self.settings)
            .cloned()
            .collect();
        let Some(settings) = evaluate_settings(&settings, stderr) else {
            return Ok(None);
        };
        let Some(network) = load(&self.file, &settings, stderr) else {
            return Ok(None);
        };
        let inference = pipeline::inference(&network, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
        let configured = Configured {
            shape: model_shape(&network),
            tensors: tensor_inits(&inference),
        };
        self.identity.name = network.name.clone();
        self.network = Some(network);
        Ok(Some(configured))
    }

    fn backend(
        &self,
        recipe: &Recipe,
        batch: Option<usize>,
        weights: BTreeMap<String, Vec<f32>>,
    ) -> JitBackend {
        let mut codegen = self.codegen.clone();
        codegen.seed = recipe.seed;
        JitBackend {
            network: self.network.clone().expect("a configured model"),
            batch: batch.unwrap_or(recipe.batch),
            optimizer: optimizer(&recipe.optimizer),
            init: recipe.init.kind,
            seed: recipe.seed,
            weights,
            codegen,
        }
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
    fn program(&self, compiled: &Compiled) -> Result<Program, String> {
        let mut program = compile_network(compiled, &self.codegen)
            .map_err(|e| e.to_string())?
            .into_host();
        program.initialize(self.init, self.seed, &self.weights);
        Ok(program)
    }
}

impl Backend for JitBackend {
    fn training(&mut self, frozen: &[String]) -> Result<Program, String> {
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

    fn inference(&mut self) -> Result<Program, String> {
        self.program(&pipeline::inference(&self.network, self.batch)?)
    }
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

/// What `network` takes and, if it is a classifier, how many classes it scores.
pub fn model_shape(network: &Network) -> ModelShape {
    let loss = network.nodes.last().expect("networks close with a loss");
    let scores = &network.nodes[network.nodes.len() - 2].output;
    ModelShape {
        name: network.name.clone(),
        input: network
            .input_shape()
            .0
            .iter()
            .map(|&d| d as usize)
            .collect(),
        classes: matches!(
            loss.kind,
            NodeKind::Layer(Layer::Loss(Loss::SoftmaxCrossEntropy))
        )
        .then(|| scores.0.iter().product::<u64>() as usize),
    }
}
