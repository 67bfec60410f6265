//! The `train` and `eval` commands, shared by `netc` (whose programs come from the JIT) and
//! every executable `netc compile` writes (whose programs are linked in): the recipe and its
//! command-line overrides, the data made ready for the model's input, weights matched by name,
//! the run directory, resuming, Ctrl-C, and what the user reads. This is the command line's
//! edge, so errors here carry `anyhow` context.
//!
//! Weights from a safetensors file (`init.from`, `eval --weights`) are matched by name: the
//! names are PyTorch's `state_dict` names (`conv1.weight`, `stage1.0.bn1.running_mean`), so a
//! file saved from the same network in PyTorch loads here, and ours load there.

use crate::checkpoint::{Checkpoint, NamedTensor};
use crate::data::{self, Dataset, Normalization};
use crate::driver::{
    self, check_model, checkpoint_info, checkpoint_path, Backend, Finish, ModelIdentity, RunData,
};
use crate::init::TensorInit;
use crate::progress::Console;
use crate::recipe::{Normalize, Recipe, RecipeError};
use anyhow::Context;
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream, WriteColor};
use netc_grammar::ast::Span;
use netc_grammar::diagnostic::{emit, Diagnostic, SourceFile};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How a command ended, when it did not fail at the edge (I/O, flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Diagnostics or an error were printed.
    UserError,
    /// Ctrl-C stopped a run (after its checkpoint was written).
    Interrupted,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::UserError => 1,
            Outcome::Interrupted => 130,
        }
    }
}

/// Standard error for diagnostics: in colour on a terminal, plain otherwise.
pub fn stderr() -> StandardStream {
    StandardStream::stderr(if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    })
}

/// What a model takes and gives, as the data needs to know it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelShape {
    pub name: String,
    /// One example's shape (`[C, H, W]` for images).
    pub input: Vec<usize>,
    /// The scores a classifier outputs; `None` when its loss is not softmax cross-entropy.
    pub classes: Option<usize>,
}

/// A model the commands can train and evaluate.
pub trait Model {
    type Backend: Backend;
    fn identity(&self) -> &ModelIdentity;
    /// The model as `recipe` configures it (its `network` section), checked against what the
    /// recipe asks; `Ok(None)` when diagnostics were printed. `training` is false for `eval`,
    /// which needs no training step.
    fn configure(
        &mut self,
        recipe: &Recipe,
        training: bool,
        stderr: &mut dyn WriteColor,
    ) -> anyhow::Result<Option<Configured>>;
    /// Programs for the configured model: training steps as `recipe` says, and inference
    /// passes of `batch` examples (the recipe's when `None`); parameters from `weights` where
    /// named there, else initialised as the recipe says.
    fn backend(
        &self,
        recipe: &Recipe,
        batch: Option<usize>,
        weights: BTreeMap<String, Vec<f32>>,
    ) -> Self::Backend;
}

/// A configured model.
pub struct Configured {
    pub shape: ModelShape,
    /// Its parameters and state; those with `is_weight` are what weight files hold.
    pub tensors: Vec<TensorInit>,
}

/// The recipe's flags, the same for `netc train` and a compiled model's `train`.
#[derive(clap::Args, Debug, Default)]
pub struct RecipeFlags {
    /// Set a recipe key, as if written in the recipe: `--recipe-set data.limit=1000`.
    #[arg(long = "recipe-set", value_name = "KEY=VALUE", value_parser = split_setting)]
    pub recipe_set: Vec<(String, String)>,
    /// The recipe's `epochs`.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// The recipe's `batch`.
    #[arg(long)]
    pub batch: Option<u64>,
    /// The recipe's `optimizer.lr`.
    #[arg(long)]
    pub lr: Option<f64>,
    /// The recipe's `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The recipe's `data.train`: `fashion-mnist`, or a directory of IDX files, CIFAR-10
    /// binary batches, or images in one folder per class.
    #[arg(long)]
    pub data: Option<String>,
    /// Where the run's files go; by default `runs/NETWORK` (or the recipe's
    /// `checkpoint.dir`), numbered when taken.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run that wrote this checkpoint, exactly where it stopped (`--epochs`
    /// may extend it).
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,
}

impl RecipeFlags {
    /// The recipe keys the flags set, in order, `--recipe-set` last.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let flags = [
            ("epochs", self.epochs.map(|v| v.to_string())),
            ("batch", self.batch.map(|v| v.to_string())),
            ("optimizer.lr", self.lr.map(|v| v.to_string())),
            ("seed", self.seed.map(|v| v.to_string())),
            ("data.train", self.data.clone().map(yaml_string)),
        ];
        let mut overrides: Vec<(String, String)> = flags
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_string(), value?)))
            .collect();
        overrides.extend(self.recipe_set.iter().cloned());
        overrides
    }
}

/// `NAME=VALUE` as a pair.
pub fn split_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected NAME=VALUE, found `{text}`")),
    }
}

/// A text file, for diagnostics.
pub fn read_source(path: &Path) -> anyhow::Result<SourceFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("byte {} is not UTF-8", e.utf8_error().valid_up_to()))
        .with_context(|| format!("`{}` is not a text file", path.display()))?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// What `train` was asked to do.
pub struct TrainRequest {
    /// The recipe to start from (ignored when resuming: the run keeps its own).
    pub recipe: SourceFile,
    /// Recipe keys set on the command line, in order.
    pub overrides: Vec<(String, String)>,
    pub run_dir: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    /// The command that trains this model (`netc train models/m.net`, `./m train`), for the
    /// hint on resuming.
    pub command: String,
}

/// Set by Ctrl-C: the run stops at the next step, after writing a checkpoint.
static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Trains `model` as the request says.
pub fn train(
    model: &mut impl Model,
    request: TrainRequest,
    stdout: &mut dyn Write,
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Outcome> {
    let (recipe_file, checkpoint) = match &request.resume {
        Some(path) => {
            let checkpoint = Checkpoint::load(path)?;
            let info = checkpoint_info(&checkpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
            check_model(&info, &model.identity().sha256)
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
        None => (request.recipe, None),
    };
    let recipe = match Recipe::parse(&recipe_file.text, &request.overrides) {
        Ok(recipe) => recipe,
        Err(error) => {
            report_recipe_error(&error, &recipe_file, stderr)?;
            return Ok(Outcome::UserError);
        }
    };
    let Some(configured) = model.configure(&recipe, true, stderr)? else {
        return Ok(Outcome::UserError);
    };
    let (normalization, checkpoint) = match checkpoint {
        Some((checkpoint, normalization)) => (normalization, Some(checkpoint)),
        None => (None, None),
    };
    let (data, notes) = prepare_data(&recipe, &configured.shape, normalization)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in notes {
        writeln!(stdout, "note: {note}")?;
    }
    let weights = match &recipe.init.from {
        Some(path) => {
            let matched = match_weights(&Checkpoint::load(path)?, &configured.tensors)
                .map_err(|e| anyhow::anyhow!("`init.from` `{}`: {e}", path.display()))?;
            for note in matched.notes() {
                writeln!(stdout, "note: `init.from`: {note}")?;
            }
            matched.weights
        }
        None => Default::default(),
    };
    let name = &configured.shape.name;
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
                .unwrap_or_else(|| Path::new("runs").join(name));
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
        "training `{name}` on {}: {} training, {} validation and {} test images; batch {}, {} \
         epochs; files in `{}`",
        recipe.data.train,
        data.train.len(),
        data.validation.as_ref().map_or(0, |v| v.len()),
        data.test.len(),
        recipe.batch,
        recipe.epochs,
        run_dir.display()
    )?;
    let mut backend = model.backend(&recipe, None, weights);
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
        model.identity(),
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
                "interrupted after step {step}; continue with `{} --resume {}`",
                request.command,
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

/// Evaluates `weights` (a checkpoint, or weights named as PyTorch names them) on the test set
/// of `data` (by default the checkpoint's recipe's) in batches of `batch` (by default the
/// model's): accuracy and the confusion matrix.
pub fn eval(
    model: &mut impl Model,
    weights: &Path,
    data: Option<String>,
    batch: Option<usize>,
    stdout: &mut dyn Write,
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Outcome> {
    let checkpoint = Checkpoint::load(weights)?;
    let info = checkpoint_info(&checkpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
    let overrides: Vec<_> = data
        .map(|data| ("data.train".to_string(), yaml_string(data)))
        .into_iter()
        .collect();
    let recipe = Recipe::parse(info.recipe.as_deref().unwrap_or(""), &overrides)
        .map_err(|e| anyhow::anyhow!("the checkpoint's recipe: {e}"))?;
    let Some(configured) = model.configure(&recipe, false, stderr)? else {
        return Ok(Outcome::UserError);
    };
    let matched = match_weights(&checkpoint, &configured.tensors)
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", weights.display()))?;
    if let Some(name) = matched.missing.first() {
        anyhow::bail!(
            "`{}` has no `{name}` ({} of the network's tensors are missing); are these weights \
             of another network?",
            weights.display(),
            matched.missing.len()
        );
    }
    let (data, notes) = prepare_data(&recipe, &configured.shape, info.normalization)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in notes.into_iter().chain(matched.notes()) {
        writeln!(stdout, "note: {note}")?;
    }
    let mut program = model
        .backend(&recipe, batch, matched.weights)
        .inference()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let batch = program.prediction().len() / configured.shape.classes.unwrap_or(1).max(1);
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

/// Classifies `images` with `weights` (a checkpoint of the model) and prints each image's
/// `top` classes with their probabilities.
pub fn predict(
    model: &mut impl Model,
    weights: &Path,
    images: &[PathBuf],
    top: usize,
    stdout: &mut dyn Write,
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Outcome> {
    let checkpoint = Checkpoint::load(weights)?;
    let info = checkpoint_info(&checkpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
    let recipe = Recipe::parse(info.recipe.as_deref().unwrap_or(""), &[])
        .map_err(|e| anyhow::anyhow!("the checkpoint's recipe: {e}"))?;
    let Some(configured) = model.configure(&recipe, false, stderr)? else {
        return Ok(Outcome::UserError);
    };
    let shape = match configured.shape.input.as_slice() {
        &[c, h, w] => [c, h, w],
        _ => anyhow::bail!("`{}` does not take images", configured.shape.name),
    };
    let matched = match_weights(&checkpoint, &configured.tensors)
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", weights.display()))?;
    if let Some(name) = matched.missing.first() {
        anyhow::bail!(
            "`{}` has no `{name}`; are these weights of another network?",
            weights.display()
        );
    }
    let normalization = match (info.normalization, &recipe.data.normalize) {
        (Some(given), _) => given,
        (None, Normalize::Given { mean, std }) => Normalization {
            mean: mean.clone(),
            std: std.clone(),
        },
        (None, _) => {
            writeln!(
                stdout,
                "note: `{}` records no normalisation; pixels are only scaled to [0, 1]",
                weights.display()
            )?;
            Normalization::identity(shape[0])
        }
    };
    let data = Arc::new(data::folder::read_images(images, shape)?);
    let mut program = model
        .backend(&recipe, None, matched.weights)
        .inference()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let classes = configured.shape.classes.unwrap_or(1).max(1);
    let batch = program.prediction().len() / classes;
    let names = info.class_names.filter(|names| names.len() == classes);
    let loader = data::Loader::new(data, normalization, data::LoaderOptions::in_order(batch));
    let mut paths = images.iter();
    for examples in loader {
        driver::feed(&mut program, &examples);
        program.run();
        for scores in program.prediction().chunks(classes).take(examples.count) {
            let path = paths.next().expect("one row per image");
            writeln!(stdout, "{}", path.display())?;
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            let mut ranked: Vec<usize> = (0..classes).collect();
            ranked.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]).then(a.cmp(&b)));
            for class in ranked.into_iter().take(top) {
                let name = names
                    .as_ref()
                    .map_or_else(|| format!("class {class}"), |n| n[class].clone());
                writeln!(stdout, "  {:>6.2}%  {name}", 100.0 * exps[class] / total)?;
            }
        }
    }
    Ok(Outcome::Ok)
}

/// The weights a file holds for a model, matched by name.
pub struct MatchedWeights {
    /// Parameters and batch-norm running statistics the model has, by name.
    pub weights: BTreeMap<String, Vec<f32>>,
    /// The model's tensors the file lacks.
    pub missing: Vec<String>,
    /// The file's tensors the model lacks.
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

/// Matches `file`'s tensors with the model's weights (parameters and batch-norm running
/// statistics, from `tensors`). A tensor of a known name with another shape is an error.
pub fn match_weights(file: &Checkpoint, tensors: &[TensorInit]) -> Result<MatchedWeights, String> {
    let wanted: BTreeMap<&str, &[usize]> = tensors
        .iter()
        .filter(|t| t.is_weight())
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    let mut weights = BTreeMap::new();
    let mut unknown = Vec::new();
    for NamedTensor { name, shape, data } in &file.tensors {
        match wanted.get(name.as_str()) {
            Some(&wanted_shape) if wanted_shape == shape.as_slice() => {
                weights.insert(name.clone(), data.clone());
            }
            Some(wanted_shape) => {
                return Err(format!(
                    "tensor `{name}` has shape {shape:?} in the file, but the network's has \
                     shape {wanted_shape:?}"
                ))
            }
            // PyTorch's batch norm counts its batches; netc's momentum needs no count.
            None if name.ends_with("num_batches_tracked") => {}
            // Optimizer moments of a training checkpoint.
            None if name
                .rsplit_once('.')
                .is_some_and(|(param, _)| wanted.contains_key(param)) => {}
            None => unknown.push(name.clone()),
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

/// The recipe's data for a model that classifies images: the training set (limited, less the
/// validation split), the validation split, the test set and the normalisation (`given`, from
/// a checkpoint, wins over the recipe's). Notes say what was adapted.
pub fn prepare_data(
    recipe: &Recipe,
    model: &ModelShape,
    given: Option<Normalization>,
) -> Result<(RunData, Vec<String>), String> {
    let shape = match model.input.as_slice() {
        &[c, h, w] => [c, h, w],
        other => {
            return Err(format!(
                "`{}` takes a vector of {} values, but the data sets are images; give the \
                 network an image input (`input 1x28x28`) and let `dense` flatten it",
                model.name,
                other.iter().product::<usize>()
            ))
        }
    };
    let Some(classes) = model.classes else {
        return Err(format!(
            "training on data sets is for classifiers, whose loss is `softmax_cross_entropy`; \
             `{}` ends with another loss",
            model.name
        ));
    };
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
pub fn report_recipe_error(
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
