//! The `netc` command line. It runs in-process with its output streams passed in, so tests
//! drive exactly what users run. Exit status: 0 success, 1 a user error (bad file, bad flag),
//! 101 an internal compiler error.

use crate::bench::{self, BenchOptions};
use crate::codegen::CodegenOptions;
use crate::front::layers::LayerKind;
use crate::front::value::Value;
use crate::optim::{Optimizer, OptimizerKind};
use crate::train::{match_weights, optimizer, prepare_data, JitBackend};
use crate::{front, ir, pipeline, summary};
use anyhow::Context;
use clap::{Parser, Subcommand};
use codespan_reporting::term::termcolor::WriteColor;
use netc_grammar::ast::Span;
use netc_grammar::diagnostic::Diagnostic;
use netc_grammar::diagnostic::{emit, SourceFile};
use netc_runtime::checkpoint::{sha256_hex, Checkpoint};
use netc_runtime::driver::{
    self, check_model, checkpoint_info, checkpoint_path, Backend, Finish, ModelIdentity,
};
use netc_runtime::microkernel::MicrokernelKind;
use netc_runtime::progress::Console;
use netc_runtime::recipe::{InitKind, Recipe, RecipeError};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
        /// Set a recipe key, as if written in the recipe: `--recipe-set data.limit=1000`.
        #[arg(long = "recipe-set", value_name = "KEY=VALUE", value_parser = split_setting)]
        recipe_set: Vec<(String, String)>,
        /// The recipe's `epochs`.
        #[arg(long)]
        epochs: Option<u64>,
        /// The recipe's `batch`.
        #[arg(long)]
        batch: Option<u64>,
        /// The recipe's `optimizer.lr`.
        #[arg(long)]
        lr: Option<f64>,
        /// The recipe's `seed`.
        #[arg(long)]
        seed: Option<u64>,
        /// The recipe's `data.train`: `fashion-mnist`, or a directory of IDX files, CIFAR-10
        /// binary batches, or images in one folder per class.
        #[arg(long)]
        data: Option<String>,
        /// Where the run's files go; by default `runs/NETWORK` (or the recipe's
        /// `checkpoint.dir`), numbered when taken.
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue the run that wrote this checkpoint, exactly where it stopped (`--epochs`
        /// may extend it).
        #[arg(long, value_name = "CHECKPOINT")]
        resume: Option<PathBuf>,
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
}

impl Machine {
    fn options(&self) -> CodegenOptions {
        let mut options = CodegenOptions::default();
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

fn split_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected NAME=VALUE, found `{text}`")),
    }
}

impl Settings {
    /// The values, evaluated; `None` when one is malformed (its diagnostic was printed).
    fn evaluate(&self, stderr: &mut dyn WriteColor) -> Option<Vec<(String, Value)>> {
        evaluate_settings(&self.set, stderr)
    }
}

/// Network parameter values given as text (`--set`, a recipe's `network`), evaluated; `None`
/// when one is malformed (its diagnostic was printed).
fn evaluate_settings(
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

/// Outcome of a command that did not fail at the edge (I/O, flags).
enum Outcome {
    Ok,
    /// Diagnostics were printed.
    UserError,
    /// Ctrl-C stopped a run (after its checkpoint was written).
    Interrupted,
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
        Ok(Outcome::Ok) => 0,
        Ok(Outcome::UserError) => 1,
        Ok(Outcome::Interrupted) => 130,
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

fn read(path: &Path) -> anyhow::Result<SourceFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("byte {} is not UTF-8", e.utf8_error().valid_up_to()))
        .with_context(|| format!("`{}` is not a text file", path.display()))?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// Runs the front end, printing diagnostics on failure.
fn load(
    path: &Path,
    settings: &[(String, Value)],
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Option<front::Network>> {
    let file = read(path)?;
    match front::run(&file, settings) {
        Ok(network) => Ok(Some(network)),
        Err(diagnostics) => {
            emit(&diagnostics, &file, stderr);
            let n = diagnostics.len();
            let _ = writeln!(
                stderr,
                "error: could not compile `{}` ({n} error{})",
                file.name,
                if n == 1 { "" } else { "s" }
            );
            Ok(None)
        }
    }
}

/// `load` with the `--set` values evaluated first; `None` when either printed diagnostics.
fn load_with(
    path: &Path,
    settings: &Settings,
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Option<front::Network>> {
    match settings.evaluate(stderr) {
        Some(settings) => load(path, &settings, stderr),
        None => Ok(None),
    }
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
                if load(&file, &settings, stderr)?.is_none() {
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
        } => {
            let Some(network) = load_with(&file, &settings, stderr)? else {
                return Ok(Outcome::UserError);
            };
            if json {
                writeln!(stdout, "{:#}", summary::json(&network, expand))?;
            } else {
                write!(stdout, "{}", summary::table(&network, expand))?;
            }
            Ok(Outcome::Ok)
        }
        Command::Fmt { file } => {
            let source = read(&file)?;
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
            write!(stdout, "{}", ir::print::print(&compiled.graph))?;
            Ok(Outcome::Ok)
        }
        Command::Bench {
            file,
            batch,
            steps,
            json,
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
                codegen: machine.options(),
            };
            let report = bench::bench(&network, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                writeln!(stdout, "{:#}", report.json())?;
            } else {
                write!(stdout, "{}", report.text())?;
            }
            Ok(Outcome::Ok)
        }
        Command::Train {
            file,
            recipe,
            recipe_set,
            epochs,
            batch,
            lr,
            seed,
            data,
            run_dir,
            resume,
            machine,
            settings,
        } => {
            let mut overrides = Vec::new();
            let flags = [
                ("epochs", epochs.map(|v| v.to_string())),
                ("batch", batch.map(|v| v.to_string())),
                ("optimizer.lr", lr.map(|v| v.to_string())),
                ("seed", seed.map(|v| v.to_string())),
                (
                    "data.train",
                    data.map(|v| serde_json::Value::String(v).to_string()),
                ),
            ];
            for (key, value) in flags {
                if let Some(value) = value {
                    overrides.push((key.to_string(), value));
                }
            }
            overrides.extend(recipe_set);
            // Network parameters join the recipe, so the run's recipe records them.
            for (name, value) in settings.set {
                overrides.push((format!("network.{name}"), value));
            }
            let request = TrainRequest {
                file,
                recipe,
                overrides,
                run_dir,
                resume,
                codegen: machine.options(),
            };
            train_command(request, stdout, stderr)
        }
        Command::Eval {
            file,
            weights,
            data,
            batch,
            machine,
            settings,
        } => {
            let Some(network) = load_with(&file, &settings, stderr)? else {
                return Ok(Outcome::UserError);
            };
            eval_command(
                &network,
                &weights,
                data,
                batch as usize,
                machine.options(),
                stdout,
            )
        }
        Command::Layers => {
            write!(stdout, "{}", layer_reference())?;
            Ok(Outcome::Ok)
        }
    }
}

/// What `netc train` was asked to do.
struct TrainRequest {
    file: PathBuf,
    recipe: Option<PathBuf>,
    /// Recipe keys set on the command line, in order.
    overrides: Vec<(String, String)>,
    run_dir: Option<PathBuf>,
    resume: Option<PathBuf>,
    codegen: CodegenOptions,
}

/// Set by Ctrl-C: the run stops at the next step, after writing a checkpoint.
static INTERRUPT: AtomicBool = AtomicBool::new(false);

fn train_command(
    request: TrainRequest,
    stdout: &mut dyn Write,
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Outcome> {
    let model_file = read(&request.file)?;
    let sha256 = sha256_hex(model_file.text.as_bytes());
    let (recipe_file, checkpoint) = match &request.resume {
        Some(path) => {
            let checkpoint = Checkpoint::load(path)?;
            let info = checkpoint_info(&checkpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
            check_model(&info, &sha256)
                .map_err(|e| anyhow::anyhow!("cannot resume from `{}`: {e}", path.display()))?;
            if let Some((key, _)) = request.overrides.iter().find(|(key, _)| key != "epochs") {
                anyhow::bail!(
                    "a resumed run continues its own recipe, so `{key}` cannot change; only \
                     --epochs may (to train longer)"
                );
            }
            let text = info.recipe.unwrap_or_default();
            let source = SourceFile::new(format!("the recipe in `{}`", path.display()), text);
            (source, Some((checkpoint, info.normalization)))
        }
        None => (recipe_source(&request)?, None),
    };
    let recipe = match Recipe::parse(&recipe_file.text, &request.overrides) {
        Ok(recipe) => recipe,
        Err(error) => {
            report_recipe_error(&error, &recipe_file, stderr)?;
            return Ok(Outcome::UserError);
        }
    };
    let Some(settings) = evaluate_settings(&recipe.network, stderr) else {
        return Ok(Outcome::UserError);
    };
    let Some(network) = load(&request.file, &settings, stderr)? else {
        return Ok(Outcome::UserError);
    };
    let model = ModelIdentity {
        name: network.name.clone(),
        sha256,
    };
    let (normalization, checkpoint) = match checkpoint {
        Some((checkpoint, normalization)) => (normalization, Some(checkpoint)),
        None => (None, None),
    };
    let (data, notes) =
        prepare_data(&recipe, &network, normalization).map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in notes {
        writeln!(stdout, "note: {note}")?;
    }
    let weights = match &recipe.init.from {
        Some(path) => {
            let matched = match_weights(&Checkpoint::load(path)?, &network)
                .map_err(|e| anyhow::anyhow!("`init.from` `{}`: {e}", path.display()))?;
            for note in matched.notes() {
                writeln!(stdout, "note: `init.from`: {note}")?;
            }
            matched.weights
        }
        None => Default::default(),
    };
    let run_dir = match (&request.resume, &request.run_dir) {
        (Some(path), _) => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        (None, Some(dir)) => {
            if checkpoint_path(dir).exists() {
                anyhow::bail!(
                    "`{}` already holds a run; continue it with --resume {}, or choose another \
                     --run-dir",
                    dir.display(),
                    checkpoint_path(dir).display()
                );
            }
            dir.clone()
        }
        (None, None) => {
            let base = recipe
                .checkpoint
                .dir
                .clone()
                .unwrap_or_else(|| Path::new("runs").join(&network.name));
            fresh_run_dir(&base)
        }
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create `{}`", run_dir.display()))?;
    let recipe_copy = run_dir.join("recipe.yaml");
    std::fs::write(&recipe_copy, recipe.to_yaml())
        .with_context(|| format!("cannot write `{}`", recipe_copy.display()))?;
    writeln!(
        stdout,
        "training `{}` on {}: {} training, {} validation and {} test images; batch {}, {} \
         epochs; files in `{}`",
        network.name,
        recipe.data.train,
        data.train.len(),
        data.validation.as_ref().map_or(0, |v| v.len()),
        data.test.len(),
        recipe.batch,
        recipe.epochs,
        run_dir.display()
    )?;
    let mut codegen = request.codegen;
    codegen.seed = recipe.seed;
    let mut backend = JitBackend {
        network,
        batch: recipe.batch,
        optimizer: optimizer(&recipe.optimizer),
        init: recipe.init.kind,
        seed: recipe.seed,
        weights,
        codegen,
    };
    INTERRUPT.store(false, Ordering::Relaxed);
    // The first Ctrl-C stops at the next step, with a checkpoint; a second one (while
    // compiling or evaluating, say) exits at once. A second handler cannot be installed (a
    // test running `netc train` twice in-process); the first one serves.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPT.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    });
    let finish = driver::train(
        &mut backend,
        &recipe,
        &data,
        &model,
        &run_dir,
        checkpoint.as_ref(),
        &mut Console::new(stdout, &INTERRUPT),
    );
    let checkpoint_file = checkpoint_path(&run_dir);
    match finish {
        Ok(Finish::Completed { test, epochs_run }) => {
            writeln!(
                stdout,
                "test accuracy {:.2}% (loss {:.4}) after {epochs_run} epochs; weights in `{}`",
                test.test_acc * 100.0,
                test.test_loss,
                checkpoint_file.display()
            )?;
            Ok(Outcome::Ok)
        }
        Ok(Finish::Interrupted { step }) => {
            writeln!(
                stderr,
                "interrupted after step {step}; continue with `netc train {} --resume {}`",
                request.file.display(),
                checkpoint_file.display()
            )?;
            Ok(Outcome::Interrupted)
        }
        Err(error) => {
            writeln!(stderr, "error: {error}")?;
            Ok(Outcome::UserError)
        }
    }
}

/// The recipe to train with: `--recipe`, else the model's `.yaml` beside it, else defaults.
fn recipe_source(request: &TrainRequest) -> anyhow::Result<SourceFile> {
    let beside = request.file.with_extension("yaml");
    match &request.recipe {
        Some(path) => read(path),
        None if beside.exists() => read(&beside),
        None => Ok(SourceFile::new("the default recipe", "")),
    }
}

/// `base`, or `base-2`, `base-3`, ... : the first that holds no run, so no run is overwritten.
fn fresh_run_dir(base: &Path) -> PathBuf {
    (1..)
        .map(|n| match n {
            1 => base.to_path_buf(),
            n => PathBuf::from(format!("{}-{n}", base.display())),
        })
        .find(|dir| !checkpoint_path(dir).exists() && !dir.join("metrics.jsonl").exists())
        .expect("some numbered directory is free")
}

/// A string as a recipe value: quoted, so a path such as `yes` or `1e3` stays a string.
fn yaml_string(text: String) -> String {
    serde_json::Value::String(text).to_string()
}

/// Prints a recipe error: in the recipe file at its line and column, as a diagnostic, or as a
/// line when a command-line override caused it (its message names the override).
fn report_recipe_error(
    error: &RecipeError,
    file: &SourceFile,
    stderr: &mut dyn WriteColor,
) -> std::io::Result<()> {
    let (Some(line), Some(column), None) = (error.line, error.column, error.override_index) else {
        return writeln!(stderr, "error: {error}");
    };
    let start = file.offset(line, column);
    let end = file.text[start..]
        .find(|c: char| c.is_whitespace() || ",:}]".contains(c))
        .map_or(file.text.len(), |n| start + n.max(1));
    let mut diagnostic = Diagnostic::error(error.message.clone(), Span { start, end }, "");
    if let Some(hint) = &error.hint {
        diagnostic = diagnostic.with_help(hint.clone());
    }
    emit(&[diagnostic], file, stderr);
    Ok(())
}

fn eval_command(
    network: &front::Network,
    weights: &Path,
    data: Option<String>,
    batch: usize,
    codegen: CodegenOptions,
    stdout: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let checkpoint = Checkpoint::load(weights)?;
    let info = checkpoint_info(&checkpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
    let overrides: Vec<_> = data
        .map(|data| ("data.train".to_string(), yaml_string(data)))
        .into_iter()
        .collect();
    let recipe = Recipe::parse(info.recipe.as_deref().unwrap_or(""), &overrides)
        .map_err(|e| anyhow::anyhow!("the checkpoint's recipe: {e}"))?;
    let matched = match_weights(&checkpoint, network)
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", weights.display()))?;
    if let Some(name) = matched.missing.first() {
        anyhow::bail!(
            "`{}` has no `{name}` ({} of the network's tensors are missing); are these weights \
             of another network?",
            weights.display(),
            matched.missing.len()
        );
    }
    let (data, notes) =
        prepare_data(&recipe, network, info.normalization).map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in notes.into_iter().chain(matched.notes()) {
        writeln!(stdout, "note: {note}")?;
    }
    let mut backend = JitBackend {
        network: network.clone(),
        batch,
        optimizer: Optimizer::new(OptimizerKind::Sgd),
        init: InitKind::PyTorch,
        seed: recipe.seed,
        weights: matched.weights,
        codegen,
    };
    let mut program = backend.inference().map_err(|e| anyhow::anyhow!("{e}"))?;
    let evaluation = driver::evaluate(&mut program, &data.test, &data.normalization, batch);
    writeln!(
        stdout,
        "test accuracy {:.2}% (loss {:.4}) on {} images of {}",
        evaluation.accuracy * 100.0,
        evaluation.loss,
        data.test.len(),
        recipe.data.train
    )?;
    write!(
        stdout,
        "{}",
        confusion_table(&evaluation.confusion, &data.test.class_names)
    )?;
    Ok(Outcome::Ok)
}

/// The confusion matrix as text: a row per true class, a column per predicted class.
fn confusion_table(confusion: &[Vec<u64>], names: &[String]) -> String {
    let width = confusion
        .iter()
        .flatten()
        .map(|n| n.to_string().len())
        .max()
        .unwrap_or(1)
        .max(names.len().to_string().len())
        + 1;
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut out = format!(
        "confusion matrix (rows: true class, columns: predicted class)\n{:>w$}",
        "",
        w = name_width + 4
    );
    for column in 0..confusion.len() {
        out.push_str(&format!("{column:>width$}"));
    }
    out.push('\n');
    for (class, row) in confusion.iter().enumerate() {
        out.push_str(&format!("{class:>2} {:<name_width$} ", names[class]));
        for count in row {
            out.push_str(&format!("{count:>width$}"));
        }
        out.push('\n');
    }
    out
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
