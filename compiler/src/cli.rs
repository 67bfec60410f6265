//! The `netc` command line. It runs in-process with its output streams passed in, so tests
//! drive exactly what users run. Exit status: 0 success, 1 a user error (bad file, bad flag),
//! 101 an internal compiler error.

use crate::aot::{self, TargetCpu};
use crate::bench::{self, BenchOptions};
use crate::codegen::CodegenOptions;
use crate::front::layers::LayerKind;
use crate::front::value::Value;
use crate::optim::{Optimizer, OptimizerKind};
use crate::passes::{self, Pass, PassOptions};
use crate::train::JitModel;
use crate::{front, ir, link, pipeline, summary};
use clap::{Parser, Subcommand};
use codespan_reporting::term::termcolor::WriteColor;
use netc_grammar::diagnostic::{emit, SourceFile};
use netc_runtime::microkernel::MicrokernelKind;
use netc_runtime::recipe::Recipe;
use netc_runtime::session::Model;
use netc_runtime::session::{self, read_source, split_setting, Outcome, RecipeFlags, TrainRequest};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "netc",
    version,
    about = "An ahead-of-time compiler for neural networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and shape-check networks; silent when they are correct.
    Check {
        /// `.net` files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// One row per layer: output shape, parameters and multiply-accumulates, with totals.
    Summary {
        file: PathBuf,
        #[command(flatten)]
        settings: Settings,
        /// Show the layers inside blocks, branches and repeats.
        #[arg(long)]
        expand: bool,
        /// Print JSON, with a `totals` object.
        #[arg(long)]
        json: bool,
        /// Also print the memory plan of the training step (SGD with momentum): weights,
        /// optimizer state, activations kept for backward, other activations and gradients,
        /// workspace, and the peak. Compiles the step; runs nothing.
        #[arg(long)]
        memory: bool,
        /// Examples per batch, for `--memory`.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[command(flatten)]
        passes: PassFlags,
    },
    /// Print a file in canonical form: what the parser understood.
    Fmt { file: PathBuf },
    /// Print the IR of a stage of the compilation.
    Ir {
        file: PathBuf,
        /// `lowered`: the forward graph in training mode; `training`: forward, backward and
        /// optimizer update; `inference`: the forward graph with running statistics.
        #[arg(long, value_enum, default_value = "training")]
        stage: Stage,
        /// Examples per batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// The optimizer of the training stage.
        #[arg(long, default_value = "sgd", value_parser = clap::builder::PossibleValuesParser::new(OptimizerKind::NAMES))]
        optimizer: String,
        /// Freeze a layer (or every layer in a block) by name; repeatable.
        #[arg(long, value_name = "LAYER")]
        freeze: Vec<String>,
        /// Print the graph after the passes (fusion, batch-norm folding) that code generation
        /// runs; `--unfused` and `--disable-pass` choose which.
        #[arg(long)]
        optimized: bool,
        #[command(flatten)]
        passes: PassFlags,
        #[command(flatten)]
        settings: Settings,
    },
    /// Time the compiled training step on synthetic data: images/s, ms per step, compile
    /// time and GFLOP/s.
    Bench {
        file: PathBuf,
        /// Examples per batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Timed steps (after 3 untimed ones); the median is reported.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Print JSON, with every step's time.
        #[arg(long)]
        json: bool,
        /// Then time every kernel of as many more steps, and show where the time goes, by
        /// primitive and by layer.
        #[arg(long)]
        profile: bool,
        /// Compile the step with the fusion passes and without, and time the two in turn
        /// (`--rounds` rounds of `--steps` steps each): each one's step and the ratio, as
        /// medians.
        #[arg(long, group = "comparison", conflicts_with_all = ["profile", "unfused"])]
        compare_unfused: bool,
        /// Compile the step as the other flags say, and again with this pass off too
        /// (repeatable), and time the two in turn as `--compare-unfused` does: what the pass
        /// buys.
        #[arg(long, value_name = "PASS", value_parser = Pass::parse, group = "comparison", conflicts_with = "profile")]
        compare_without: Vec<Pass>,
        /// Rounds of `--compare-unfused` or `--compare-without`: more give steadier medians on
        /// a busy machine.
        #[arg(long, default_value_t = bench::DEFAULT_COMPARISON_ROUNDS, requires = "comparison")]
        rounds: usize,
        #[command(flatten)]
        machine: Machine,
        #[command(flatten)]
        settings: Settings,
    },
    /// Train a network on data as a recipe says: a progress bar and a line per epoch;
    /// checkpoints, `metrics.jsonl` and the training curves in a run directory; test accuracy
    /// at the end.
    Train {
        file: PathBuf,
        /// The recipe (YAML); by default the model's file with `.yaml` for `.net` if there is
        /// one, else the built-in defaults (Fashion-MNIST, 10 epochs).
        #[arg(long)]
        recipe: Option<PathBuf>,
        #[command(flatten)]
        flags: RecipeFlags,
        #[command(flatten)]
        machine: Machine,
        #[command(flatten)]
        settings: Settings,
    },
    /// Evaluate trained weights on a test set: accuracy and the confusion matrix.
    Eval {
        file: PathBuf,
        /// A checkpoint of `netc train`, or a safetensors file of weights named as PyTorch
        /// names them.
        #[arg(long)]
        weights: PathBuf,
        /// The data (as `netc train --data`); by default the checkpoint's, else Fashion-MNIST.
        #[arg(long)]
        data: Option<String>,
        /// Examples per batch.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        #[command(flatten)]
        machine: Machine,
        #[command(flatten)]
        settings: Settings,
    },
    /// Compile a network into a standalone executable that trains it (`./NAME train`),
    /// evaluates and predicts with its weights, and benchmarks it, without netc.
    Compile {
        file: PathBuf,
        /// The executable to write; by default the network's name, in this directory.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The recipe (YAML) the executable trains with by default; it fixes the batch size,
        /// the optimizer (but its learning rate) and the frozen layers. By default the
        /// model's file with `.yaml` for `.net` if there is one, else the built-in defaults.
        #[arg(long, alias = "recipe")]
        config: Option<PathBuf>,
        /// Set a recipe key, as if written in the recipe: `--recipe-set batch=64`.
        #[arg(long = "recipe-set", value_name = "KEY=VALUE", value_parser = split_setting)]
        recipe_set: Vec<(String, String)>,
        /// The CPU to generate code for: any x86-64 with AVX (contractions still pick the
        /// best microkernel at run time), or this one (`native`). The executable refuses a
        /// CPU that lacks what its code needs.
        #[arg(long, default_value = "x86-64-avx", value_parser = clap::builder::PossibleValuesParser::new(TargetCpu::NAMES))]
        target_cpu: String,
        #[command(flatten)]
        passes: PassFlags,
        #[command(flatten)]
        settings: Settings,
    },
    /// List the built-in layers with their arguments and defaults.
    Layers,
}

/// How generated code uses the machine.
#[derive(clap::Args)]
struct Machine {
    /// Threads to run on (default: every core); results are identical for any count.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// The contraction microkernel: the best this CPU has, unless forced.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["avx512", "avx2", "generic"]))]
    microkernel: Option<String>,
    #[command(flatten)]
    passes: PassFlags,
}

/// Which of the compiler's passes run.
#[derive(clap::Args)]
struct PassFlags {
    /// Run with every fusion pass off (to compare with the fused code).
    #[arg(long)]
    unfused: bool,
    /// Switch a pass off by name; repeatable. The passes: factor_sums, merge_duplicates,
    /// pool_weight_grads, fold_batch_norm, fuse_elementwise, fuse_epilogue, fuse_sums,
    /// fuse_prologue, store_prologue, fold_channel_factors, schedule_updates, reuse_buffers,
    /// update_in_place, group_launches (a wrong name lists them with what each does).
    #[arg(long, value_name = "PASS", value_parser = Pass::parse)]
    disable_pass: Vec<Pass>,
}

impl PassFlags {
    fn options(&self) -> PassOptions {
        PassOptions::new(self.unfused, &self.disable_pass)
    }
}

impl Machine {
    fn options(&self) -> CodegenOptions {
        let mut options = CodegenOptions {
            passes: self.passes.options(),
            ..CodegenOptions::default()
        };
        if let Some(threads) = self.threads {
            options.threads = threads as usize;
        }
        if let Some(name) = &self.microkernel {
            options.microkernel = MicrokernelKind::from_name(name).expect("clap checked the name");
        }
        options
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Stage {
    Lowered,
    Training,
    Inference,
}

#[derive(clap::Args)]
struct Settings {
    /// Set a network parameter, overriding its default: `--set classes=100 --set size=64`.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = split_setting)]
    set: Vec<(String, String)>,
}

impl Settings {
    /// The values, evaluated; `None` when one is malformed (its diagnostic was printed).
    fn evaluate(&self, stderr: &mut dyn WriteColor) -> Option<Vec<(String, Value)>> {
        evaluate_settings(&self.set, stderr)
    }
}

/// Network parameter values given as text (`--set`, a recipe's `network`), evaluated; `None`
/// when one is malformed (its diagnostic was printed).
pub(crate) fn evaluate_settings(
    settings: &[(String, String)],
    stderr: &mut dyn WriteColor,
) -> Option<Vec<(String, Value)>> {
    let mut values = Vec::new();
    for (name, text) in settings {
        let source = SourceFile::new(format!("--set {name}"), text.as_str());
        let value = netc_grammar::parse_value(&source)
            .and_then(|expr| front::value::eval(&expr, &front::value::Scope::default()));
        match value {
            Ok(value) => values.push((name.clone(), value)),
            Err(diagnostic) => {
                emit(&[diagnostic], &source, stderr);
                return None;
            }
        }
    }
    Some(values)
}

pub fn run(args: Vec<OsString>, stdout: &mut dyn Write, stderr: &mut dyn WriteColor) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            if e.use_stderr() {
                let _ = write!(stderr, "{text}");
                return 1;
            }
            let _ = write!(stdout, "{text}");
            return 0;
        }
    };
    match execute(cli.command, stdout, stderr) {
        Ok(outcome) => outcome.exit_code(),
        // A reader that stopped reading (`netc summary ... | head`) is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            0
        }
        Err(e) => {
            let _ = writeln!(stderr, "error: {e:#}");
            1
        }
    }
}

/// Runs the front end, printing diagnostics on failure.
pub(crate) fn load(
    file: &SourceFile,
    settings: &[(String, Value)],
    stderr: &mut dyn WriteColor,
) -> Option<front::Network> {
    match front::run(file, settings) {
        Ok(network) => Some(network),
        Err(diagnostics) => {
            emit(&diagnostics, file, stderr);
            let n = diagnostics.len();
            let _ = writeln!(
                stderr,
                "error: could not compile `{}` ({n} error{})",
                file.name,
                if n == 1 { "" } else { "s" }
            );
            None
        }
    }
}

/// `load` with the `--set` values evaluated first; `None` when either printed diagnostics.
fn load_with(
    path: &Path,
    settings: &Settings,
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Option<front::Network>> {
    let Some(settings) = settings.evaluate(stderr) else {
        return Ok(None);
    };
    Ok(load(&read_source(path)?, &settings, stderr))
}

fn execute(
    command: Command,
    stdout: &mut dyn Write,
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Outcome> {
    match command {
        Command::Check { files, settings } => {
            let Some(settings) = settings.evaluate(stderr) else {
                return Ok(Outcome::UserError);
            };
            let mut outcome = Outcome::Ok;
            for file in files {
                if load(&read_source(&file)?, &settings, stderr).is_none() {
                    outcome = Outcome::UserError;
                }
            }
            Ok(outcome)
        }
        Command::Summary {
            file,
            settings,
            expand,
            json,
            memory,
            batch,
            passes: pass_flags,
        } => {
            let Some(network) = load_with(&file, &settings, stderr)? else {
                return Ok(Outcome::UserError);
            };
            if json {
                writeln!(stdout, "{:#}", summary::json(&network, expand))?;
            } else {
                write!(stdout, "{}", summary::table(&network, expand))?;
            }
            if memory {
                let codegen = CodegenOptions {
                    passes: pass_flags.options(),
                    ..CodegenOptions::default()
                };
                let report = summary::memory(&network, batch, &codegen)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                writeln!(
                    stdout,
                    "\nmemory of the training step (batch {batch}, SGD with momentum, {} threads):",
                    codegen.threads
                )?;
                write!(stdout, "{}", report.text())?;
            }
            Ok(Outcome::Ok)
        }
        Command::Fmt { file } => {
            let source = read_source(&file)?;
            match netc_grammar::parse(&source) {
                Ok(module) => {
                    write!(stdout, "{}", netc_grammar::print::print_module(&module))?;
                    Ok(Outcome::Ok)
                }
                Err(diagnostics) => {
                    emit(&diagnostics, &source, stderr);
                    Ok(Outcome::UserError)
                }
            }
        }
        Command::Ir {
            file,
            stage,
            batch,
            optimizer,
            freeze,
            optimized,
            passes: pass_flags,
            settings,
        } => {
            let Some(network) = load_with(&file, &settings, stderr)? else {
                return Ok(Outcome::UserError);
            };
            let kind = OptimizerKind::from_name(&optimizer).expect("clap checked the name");
            let compiled = match stage {
                Stage::Lowered => pipeline::forward(&network, batch),
                Stage::Inference => pipeline::inference(&network, batch),
                Stage::Training => pipeline::training(
                    &network,
                    &pipeline::TrainingOptions {
                        batch,
                        optimizer: Optimizer::new(kind),
                        frozen: freeze,
                    },
                ),
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let graph = if optimized {
                passes::run(&compiled.graph, &pass_flags.options())
            } else {
                compiled.graph
            };
            write!(stdout, "{}", ir::print::print(&graph))?;
            Ok(Outcome::Ok)
        }
        Command::Bench {
            file,
            batch,
            steps,
            json,
            profile,
            compare_unfused,
            compare_without,
            rounds,
            machine,
            settings,
        } => {
            let Some(network) = load_with(&file, &settings, stderr)? else {
                return Ok(Outcome::UserError);
            };
            let options = BenchOptions {
                batch,
                steps,
                warmup: 3,
                profile,
                codegen: machine.options(),
            };
            let comparison = if compare_unfused {
                Some(bench::compare_unfused(&network, &options, rounds))
            } else if !compare_without.is_empty() {
                Some(bench::compare_without(
                    &network,
                    &options,
                    &compare_without,
                    rounds,
                ))
            } else {
                None
            };
            let (text, json_value) = if let Some(comparison) = comparison {
                let comparison = comparison.map_err(|e| anyhow::anyhow!("{e}"))?;
                (comparison.text(), comparison.json())
            } else {
                let report =
                    bench::bench(&network, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
                (report.text(), report.json())
            };
            if json {
                writeln!(stdout, "{json_value:#}")?;
            } else {
                write!(stdout, "{text}")?;
            }
            Ok(Outcome::Ok)
        }
        Command::Train {
            file,
            recipe,
            flags,
            machine,
            settings,
        } => {
            let mut overrides = flags.overrides();
            // Network parameters join the recipe, so the run's recipe records them.
            for (name, value) in settings.set {
                overrides.push((format!("network.{name}"), value));
            }
            let recipe = recipe_source(&file, recipe)?;
            let mut model = JitModel::new(read_source(&file)?, Vec::new(), machine.options());
            let request = TrainRequest {
                recipe,
                overrides,
                run_dir: flags.run_dir,
                resume: flags.resume,
                command: format!("netc train {}", file.display()),
            };
            session::train(&mut model, request, stdout, stderr)
        }
        Command::Eval {
            file,
            weights,
            data,
            batch,
            machine,
            settings,
        } => {
            let mut model = JitModel::new(read_source(&file)?, settings.set, machine.options());
            session::eval(
                &mut model,
                &weights,
                data,
                Some(batch as usize),
                stdout,
                stderr,
            )
        }
        Command::Compile {
            file,
            output,
            config,
            recipe_set,
            target_cpu,
            passes,
            settings,
        } => {
            let started = Instant::now();
            let mut overrides = recipe_set;
            for (name, value) in settings.set {
                overrides.push((format!("network.{name}"), value));
            }
            let recipe_file = recipe_source(&file, config)?;
            let recipe = match Recipe::parse(&recipe_file.text, &overrides) {
                Ok(recipe) => recipe,
                Err(error) => {
                    session::report_recipe_error(&error, &recipe_file, stderr)?;
                    return Ok(Outcome::UserError);
                }
            };
            let mut model =
                JitModel::new(read_source(&file)?, Vec::new(), CodegenOptions::default());
            if model.configure(&recipe, true, stderr)?.is_none() {
                return Ok(Outcome::UserError);
            }
            let network = model.network().expect("a configured model");
            let target = TargetCpu::from_name(&target_cpu).expect("clap checked the name");
            let identity = model.identity().clone();
            let (object, manifest) =
                aot::compile_object(network, &recipe, identity, target, &passes.options())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            let output = output.unwrap_or_else(|| PathBuf::from(&network.name));
            link::link(&object, &output)?;
            let size = std::fs::metadata(&output).map_or(0, |m| m.len());
            writeln!(
                stdout,
                "compiled `{}` into `{}` ({} training step{} and an inference pass, for {} CPUs{}; \
                 {:.1} MiB) in {:.0} ms",
                network.name,
                output.display(),
                manifest.training.len(),
                if manifest.training.len() == 1 {
                    ""
                } else {
                    "s"
                },
                manifest.target_cpu,
                match manifest.passes_off.len() {
                    0 => String::new(),
                    n => format!(", without {n} of the compiler's passes (`info` names them)"),
                },
                size as f64 / (1 << 20) as f64,
                started.elapsed().as_secs_f64() * 1e3
            )?;
            Ok(Outcome::Ok)
        }
        Command::Layers => {
            write!(stdout, "{}", layer_reference())?;
            Ok(Outcome::Ok)
        }
    }
}

/// The recipe to train with: `given`, else the model's `.yaml` beside it, else the defaults.
fn recipe_source(model: &Path, given: Option<PathBuf>) -> anyhow::Result<SourceFile> {
    let beside = model.with_extension("yaml");
    match given {
        Some(path) => read_source(&path),
        None if beside.exists() => read_source(&beside),
        None => Ok(SourceFile::new("the default recipe", "")),
    }
}

/// The built-in layers as a Markdown list, from the same table argument checking uses.
pub fn layer_reference() -> String {
    let mut out = String::new();
    for kind in LayerKind::ALL {
        let doc = kind.doc();
        let usage: Vec<String> = doc
            .params
            .iter()
            .map(|p| match (p.positional, p.default) {
                (true, None) => p.name.to_uppercase(),
                (true, Some(_)) => format!("[{}]", p.name.to_uppercase()),
                (false, Some(d)) => format!("[{}={d}]", p.name),
                (false, None) => format!("{}=..", p.name),
            })
            .collect();
        let signature = std::iter::once(kind.name().to_string())
            .chain(usage)
            .collect::<Vec<_>>();
        out.push_str(&format!("- `{}`", signature.join(" ")));
        out.push_str(&format!(": {}\n", doc.doc));
        for p in doc.params {
            let default = p
                .default
                .map_or("required".to_string(), |d| format!("default {d}"));
            out.push_str(&format!("  - `{}` ({default}): {}\n", p.name, p.doc));
        }
    }
    out
}
