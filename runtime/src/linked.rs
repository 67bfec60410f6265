//! Programs linked into a standalone executable (`netc compile`): the manifest the compiler
//! writes beside the code, saying what was compiled (the model, its recipe, every program's
//! memory layout, the CPU it targets), and the model and backend that serve the shared
//! `train` and `eval` commands from it.
//!
//! What the code fixes cannot change at run time: the batch size, the optimizer (all but its
//! learning rate, a run-time scalar), which layers are frozen, the network's parameters, and
//! (in a network with dropout) the seed its masks are keyed on. A recipe that changes one is
//! refused with the way out: compile again with that recipe.

use crate::driver::{Backend, ModelIdentity};
use crate::init::InitKind;
use crate::microkernel::MicrokernelKind;
use crate::program::{Layout, Program, StepFn};
use crate::recipe::Recipe;
use crate::session::{Configured, Model, ModelShape};
use codespan_reporting::term::termcolor::WriteColor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::rc::Rc;

/// What `netc compile` wrote into the executable.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub model: ModelIdentity,
    pub shape: ModelShape,
    /// The version of netc that compiled it.
    pub netc_version: String,
    /// The CPU the code was generated for (`x86-64-avx` or `native`), and the features it
    /// needs beyond x86-64's, by Cranelift's names.
    pub target_cpu: String,
    pub cpu_features: Vec<String>,
    /// The compiler's passes it was compiled without (`netc compile --unfused`,
    /// `--disable-pass`): none, as a rule.
    pub passes_off: Vec<String>,
    /// The recipe compiled in, resolved: the default of `train`.
    pub recipe: String,
    /// `netc summary`'s table of the network.
    pub summary: String,
    /// Forward multiply-accumulates per example, for `bench`'s arithmetic rate.
    pub macs_per_example: u64,
    /// Whether the network drops out (so its masks' seed is compiled in).
    pub dropout: bool,
    /// Training steps, one per set of frozen layers the recipe meets.
    pub training: Vec<LinkedProgram>,
    pub inference: LinkedProgram,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkedProgram {
    /// The layers it leaves frozen (none for inference).
    pub frozen: Vec<String>,
    pub layout: Layout,
}

impl Manifest {
    /// Programs in the order of their entry points: training steps, then inference.
    pub fn programs(&self) -> impl Iterator<Item = &LinkedProgram> {
        self.training.iter().chain(std::iter::once(&self.inference))
    }

    /// The CPU features the code needs that this CPU lacks.
    pub fn missing_cpu_features(&self) -> Vec<&str> {
        missing_cpu_features(&self.cpu_features)
    }

    /// The recipe compiled in.
    pub fn compiled_recipe(&self) -> Recipe {
        Recipe::parse(&self.recipe, &[]).expect("netc wrote a valid recipe")
    }
}

/// Those of `features` (Cranelift's names) this CPU lacks.
fn missing_cpu_features(features: &[String]) -> Vec<&str> {
    features
        .iter()
        .map(String::as_str)
        .filter(|&feature| !cpu_has(feature))
        .collect()
}

/// Whether this CPU has a feature, by Cranelift's name for it (`avx2`, `sse41`).
fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "sse3" => std::arch::is_x86_feature_detected!("sse3"),
            "ssse3" => std::arch::is_x86_feature_detected!("ssse3"),
            "sse41" => std::arch::is_x86_feature_detected!("sse4.1"),
            "sse42" => std::arch::is_x86_feature_detected!("sse4.2"),
            "popcnt" => std::arch::is_x86_feature_detected!("popcnt"),
            "cmpxchg16b" => std::arch::is_x86_feature_detected!("cmpxchg16b"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "bmi1" => std::arch::is_x86_feature_detected!("bmi1"),
            "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
            "lzcnt" => std::arch::is_x86_feature_detected!("lzcnt"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
            "avx512bitalg" => std::arch::is_x86_feature_detected!("avx512bitalg"),
            "avx512vbmi" => std::arch::is_x86_feature_detected!("avx512vbmi"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            "avx_vnni" => std::arch::is_x86_feature_detected!("avxvnni"),
            // A feature this runtime does not know of: assume the worst.
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

/// The code of one program: its step function and the generated microkernel.
#[derive(Clone, Copy)]
pub struct EntryPoints {
    pub step: StepFn,
    pub microkernel: *const u8,
}

/// A model whose programs are linked in.
#[derive(Clone)]
pub struct LinkedModel(Rc<Linked>);

struct Linked {
    manifest: Manifest,
    /// One per program, in the manifest's order.
    entry_points: Vec<EntryPoints>,
    threads: usize,
}

impl LinkedModel {
    /// # Safety
    /// `entry_points` must be the code of the manifest's programs, in its order.
    pub unsafe fn new(manifest: Manifest, entry_points: Vec<EntryPoints>, threads: usize) -> Self {
        LinkedModel(Rc::new(Linked {
            manifest,
            entry_points,
            threads,
        }))
    }

    pub fn manifest(&self) -> &Manifest {
        &self.0.manifest
    }

    /// Program `index` of the manifest, its memory allocated (zeroed).
    pub fn program(&self, index: usize) -> Program {
        let layout = self
            .manifest()
            .programs()
            .nth(index)
            .expect("a program of the manifest")
            .layout
            .clone();
        let code = self.0.entry_points[index];
        let microkernel = match MicrokernelKind::best().native() {
            Some(kernel) => kernel as *const u8,
            None => code.microkernel,
        };
        // SAFETY: `new`'s caller vouched that the code is this layout's; linked code lives as
        // long as the process.
        unsafe { Program::new(layout, code.step, microkernel, self.0.threads, None) }
    }

    /// What `recipe` changes that the code fixes, each as a message.
    fn fixed_differences(&self, recipe: &Recipe, training: bool) -> Vec<String> {
        let manifest = self.manifest();
        let compiled = manifest.compiled_recipe();
        let mut differences = Vec::new();
        if recipe.network != compiled.network {
            differences.push(format!(
                "the network's parameters (`network`) are {}, but this executable was compiled \
                 with {}",
                parameters(&recipe.network),
                parameters(&compiled.network)
            ));
        }
        if !training {
            return differences;
        }
        if recipe.batch != compiled.batch {
            differences.push(format!(
                "`batch` is {}, but this executable was compiled for batches of {}",
                recipe.batch, compiled.batch
            ));
        }
        let mut optimizer = compiled.optimizer.clone();
        optimizer.lr = recipe.optimizer.lr;
        if recipe.optimizer != optimizer {
            differences.push(
                "`optimizer` differs from the one compiled in (only its `lr` may change)".into(),
            );
        }
        if let Some(set) = recipe
            .frozen_sets()
            .into_iter()
            .find(|set| !manifest.training.iter().any(|p| &p.frozen == set))
        {
            differences.push(format!(
                "`freeze` asks for a training step with {} frozen, which was not compiled in",
                if set.is_empty() {
                    "nothing".to_string()
                } else {
                    set.join(", ")
                }
            ));
        }
        if manifest.dropout && recipe.seed != compiled.seed {
            differences.push(format!(
                "`seed` is {}, but this network's dropout masks were compiled for seed {}",
                recipe.seed, compiled.seed
            ));
        }
        differences
    }
}

fn parameters(network: &[(String, String)]) -> String {
    if network.is_empty() {
        return "the defaults".into();
    }
    let set: Vec<String> = network.iter().map(|(k, v)| format!("{k}={v}")).collect();
    set.join(", ")
}

impl Model for LinkedModel {
    type Backend = LinkedBackend;

    fn identity(&self) -> &ModelIdentity {
        &self.manifest().model
    }

    fn configure(
        &mut self,
        recipe: &Recipe,
        training: bool,
        _stderr: &mut dyn WriteColor,
    ) -> anyhow::Result<Option<Configured>> {
        let differences = self.fixed_differences(recipe, training);
        if !differences.is_empty() {
            anyhow::bail!(
                "the recipe changes what `{}` was compiled with:\n  - {}\nthese are part of the \
                 generated code; compile again with this recipe: `netc compile MODEL --config \
                 RECIPE`",
                self.manifest().model.name,
                differences.join("\n  - ")
            );
        }
        Ok(Some(Configured {
            shape: self.manifest().shape.clone(),
            tensors: self.manifest().inference.layout.initial.clone(),
        }))
    }

    fn backend(
        &self,
        recipe: &Recipe,
        _batch: Option<usize>,
        weights: BTreeMap<String, Vec<f32>>,
    ) -> LinkedBackend {
        LinkedBackend {
            model: self.clone(),
            init: recipe.init.kind,
            seed: recipe.seed,
            weights,
        }
    }
}

/// Serves the driver the linked programs, initialised as the recipe says.
pub struct LinkedBackend {
    model: LinkedModel,
    init: InitKind,
    seed: u64,
    weights: BTreeMap<String, Vec<f32>>,
}

impl LinkedBackend {
    fn initialized(&self, index: usize) -> Program {
        let mut program = self.model.program(index);
        program.initialize(self.init, self.seed, &self.weights);
        program
    }
}

impl Backend for LinkedBackend {
    fn training(&mut self, frozen: &[String]) -> Result<Program, String> {
        let index = self
            .model
            .manifest()
            .training
            .iter()
            .position(|p| p.frozen == frozen)
            .ok_or_else(|| {
                format!(
                    "no training step with {} frozen was compiled in",
                    frozen.join(", ")
                )
            })?;
        Ok(self.initialized(index))
    }

    fn inference(&mut self) -> Result<Program, String> {
        Ok(self.initialized(self.model.manifest().training.len()))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn features_this_cpu_lacks_or_nobody_knows_are_missing() {
        let features = ["sse3", "avx512f", "avx1024"].map(String::from);
        let mut expected = Vec::new();
        if !std::arch::is_x86_feature_detected!("avx512f") {
            expected.push("avx512f");
        }
        expected.push("avx1024");
        assert_eq!(missing_cpu_features(&features), expected);
    }
}
