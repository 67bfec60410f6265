//! The training driver: epochs of steps over a data set, the learning-rate schedule, evaluation
//! on the validation split after every epoch and on the test set at the end, early stopping,
//! freezing layers for the first epochs, and checkpoints that hold everything a resumed run
//! needs to continue bit for bit. It runs compiled programs ([`Program`]) from any [`Backend`], so the
//! in-process `netc train` and a standalone executable train the same way.
//!
//! Nothing random here has hidden state: the data order of an epoch is a function of the seed
//! and the epoch, an example's augmentation of the seed, the epoch and its position, and
//! dropout's masks of the seed and the step. A checkpoint therefore records positions (step,
//! epoch, batch), not generator states, and resuming from one replays exactly.

use crate::checkpoint::{Checkpoint, NamedTensor};
use crate::data::{batches_per_epoch, Batch, Dataset, Loader, LoaderOptions, Normalization};
use crate::metrics::{write_metrics, EpochRecord, TestRecord};
use crate::plot::plot_training;
use crate::program::Program;
use crate::recipe::Recipe;
use crate::schedule::{EarlyStopState, ScheduleState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where programs come from: the JIT in `netc train`, linked code in a standalone executable.
pub trait Backend {
    /// The training step with these layers (or blocks) frozen; its parameters hold their
    /// initial values and its state its initial state.
    fn training(&mut self, frozen: &[String]) -> Result<Program, String>;
    /// The forward pass in inference mode (running statistics, no dropout).
    fn inference(&mut self) -> Result<Program, String>;
}

/// What the driver tells whoever watches a run.
pub trait Observer {
    /// An epoch begins; `first_batch` is above zero when a resumed run continues it.
    fn epoch_started(&mut self, epoch: usize, epochs: usize, first_batch: usize, batches: usize);
    /// After each step: the epoch's running mean loss and accuracy. `Control::Stop` ends the
    /// run after writing a checkpoint (an interrupt).
    fn step(&mut self, progress: &StepProgress) -> Control;
    fn epoch_finished(&mut self, record: &EpochRecord);
    fn note(&mut self, text: &str);
}

pub struct StepProgress {
    pub epoch: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub images_per_s: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// The data of a run, ready to load.
pub struct RunData {
    pub train: Arc<Dataset>,
    /// The validation split; `None` when the recipe holds none out.
    pub validation: Option<Arc<Dataset>>,
    pub test: Arc<Dataset>,
    pub normalization: Normalization,
}

/// Which model a checkpoint belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    /// SHA-256 of the model file's bytes.
    pub sha256: String,
}

/// How a run ended.
#[derive(Debug)]
pub enum Finish {
    /// Every epoch ran, or early stopping ended the run; the test set was evaluated.
    Completed { test: TestRecord, epochs_run: usize },
    /// The observer asked to stop; the checkpoint holds the position.
    Interrupted { step: u64 },
}

#[derive(Debug)]
pub enum TrainError {
    /// The loss of a step was not finite.
    NonFinite {
        step: u64,
        epoch: usize,
        loss: f32,
        layer: Option<String>,
        checkpoint: Option<PathBuf>,
    },
    /// A checkpoint that cannot continue this run.
    Resume(String),
    /// Writing the run's files failed.
    Io(String),
    /// The backend could not build a program.
    Backend(String),
    /// The data cannot feed this network.
    Data(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            TrainError::NonFinite {
                step,
                epoch,
                loss,
                layer,
                checkpoint,
            } => {
                write!(
                    f,
                    "the loss became {loss} at step {step} (epoch {})",
                    epoch + 1
                )?;
                match layer {
                    Some(layer) => write!(
                        f,
                        "; the first layer whose output was not finite is `{layer}`"
                    )?,
                    None => write!(
                        f,
                        "; every layer's output was finite, so the loss itself overflowed"
                    )?,
                }
                match checkpoint {
                    Some(path) => write!(
                        f,
                        "\n  note: the last good checkpoint is `{}`",
                        path.display()
                    )?,
                    None => write!(f, "\n  note: no checkpoint had been written yet")?,
                }
                write!(
                    f,
                    "\n  help: lower the learning rate (optimizer.lr), or add a warm-up (schedule.warmup_epochs)"
                )
            }
            TrainError::Resume(message)
            | TrainError::Io(message)
            | TrainError::Backend(message)
            | TrainError::Data(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for TrainError {}

/// The checkpoint of a run, in its directory.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.safetensors")
}

/// The metadata keys of a training checkpoint.
const MODEL_KEY: &str = "netc.model";
const HASH_KEY: &str = "netc.model_sha256";
const RECIPE_KEY: &str = "netc.recipe";
const POSITION_KEY: &str = "netc.position";
const NORMALIZATION_KEY: &str = "netc.normalization";
const CLASSES_KEY: &str = "netc.classes";

/// Where a run is, and what it has seen: with the tensors, all a resumed run needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Position {
    /// Steps completed.
    step: u64,
    /// The epoch in progress (0-based), and its next batch.
    epoch: usize,
    batch: usize,
    schedule: ScheduleState,
    early_stop: EarlyStopState,
    /// The epoch so far: sum of batch losses (as f64 bits, to resume exactly), correct
    /// predictions, examples, and seconds spent in steps.
    loss_sum_bits: u64,
    correct: u64,
    seen: u64,
    step_seconds: f64,
    /// Seconds the run has taken before this session.
    wall_s: f64,
    history: Vec<EpochRecord>,
}

/// What a training checkpoint says about its run.
pub struct CheckpointInfo {
    /// The network's name and its file's hash, when netc wrote it.
    pub model: Option<ModelIdentity>,
    pub recipe: Option<String>,
    pub normalization: Option<Normalization>,
    /// The names of the classes it was trained on, in the order of its scores.
    pub class_names: Option<Vec<String>>,
}

pub fn checkpoint_info(checkpoint: &Checkpoint) -> Result<CheckpointInfo, String> {
    let normalization = match checkpoint.metadata.get(NORMALIZATION_KEY) {
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|e| format!("the checkpoint's normalisation is malformed: {e}"))?,
        ),
        None => None,
    };
    let model = match (
        checkpoint.metadata.get(MODEL_KEY),
        checkpoint.metadata.get(HASH_KEY),
    ) {
        (Some(name), Some(sha256)) => Some(ModelIdentity {
            name: name.clone(),
            sha256: sha256.clone(),
        }),
        _ => None,
    };
    let class_names = match checkpoint.metadata.get(CLASSES_KEY) {
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|e| format!("the checkpoint's class names are malformed: {e}"))?,
        ),
        None => None,
    };
    Ok(CheckpointInfo {
        model,
        recipe: checkpoint.metadata.get(RECIPE_KEY).cloned(),
        normalization,
        class_names,
    })
}

/// Refuses a checkpoint written for another model file (of SHA-256 `sha256`).
pub fn check_model(info: &CheckpointInfo, sha256: &str) -> Result<(), String> {
    match &info.model {
        Some(written) if written.sha256 != sha256 => Err(format!(
            "the checkpoint was written for `{}` from a model file with SHA-256 {}, not for this \
             model file (SHA-256 {}); a checkpoint only continues the model it was trained from",
            written.name,
            short(&written.sha256),
            short(sha256)
        )),
        Some(_) => Ok(()),
        None => Err(
            "the checkpoint holds weights but no training run (it was not written by `netc \
             train`), so it cannot resume one; to start a new run from its weights, set \
             `init.from` in the recipe"
                .into(),
        ),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Every parameter and state of a run by name: the values that outlive any one program (a
/// run compiles a new training step when a freeze ends, and evaluates with another program).
#[derive(Default)]
struct Tensors(BTreeMap<String, NamedTensor>);

impl Tensors {
    fn take_from(&mut self, program: &Program) {
        for (name, shape) in program.tensors() {
            let data = program
                .input(&name)
                .expect("a program's tensors are its inputs");
            self.0.insert(
                name.clone(),
                NamedTensor {
                    name,
                    shape,
                    data: data.to_vec(),
                },
            );
        }
    }

    /// Copies every tensor the program has into it; those missing keep the program's values.
    fn give_to(&self, program: &mut Program) -> Vec<String> {
        let mut missing = Vec::new();
        for (name, _) in program.tensors() {
            match self.0.get(&name) {
                Some(tensor) => program
                    .input_mut(&name)
                    .expect("a program's tensors are its inputs")
                    .copy_from_slice(&tensor.data),
                None => missing.push(name),
            }
        }
        missing
    }
}

/// Trains as `recipe` says, writing checkpoints, `metrics.jsonl` and the curves into `run_dir`.
/// With `resume`, continues the run that wrote that checkpoint from where it stopped.
pub fn train<B: Backend>(
    backend: &mut B,
    recipe: &Recipe,
    data: &RunData,
    model: &ModelIdentity,
    run_dir: &Path,
    resume: Option<&Checkpoint>,
    observer: &mut dyn Observer,
) -> Result<Finish, TrainError> {
    let batch = recipe.batch;
    let batches = batches_per_epoch(data.train.len(), batch, true);
    if batches == 0 {
        return Err(TrainError::Data(format!(
            "the training set has {} examples, fewer than one batch of {batch}; lower `batch` \
             or use more data",
            data.train.len()
        )));
    }
    std::fs::create_dir_all(run_dir).map_err(|e| {
        TrainError::Io(format!(
            "cannot create the run directory `{}`: {e}",
            run_dir.display()
        ))
    })?;
    let checkpoint_file = checkpoint_path(run_dir);
    let mut tensors = Tensors::default();
    let mut position = Position::default();
    if let Some(checkpoint) = resume {
        let info = checkpoint_info(checkpoint).map_err(TrainError::Resume)?;
        check_model(&info, &model.sha256).map_err(TrainError::Resume)?;
        let text = checkpoint.metadata.get(POSITION_KEY).ok_or_else(|| {
            TrainError::Resume("the checkpoint's metadata has no training position".into())
        })?;
        position = serde_json::from_str(text).map_err(|e| {
            TrainError::Resume(format!("the checkpoint's position is malformed: {e}"))
        })?;
        for tensor in &checkpoint.tensors {
            tensors.0.insert(tensor.name.clone(), tensor.clone());
        }
    }

    let mut frozen = recipe.frozen_at(position.epoch);
    let mut program = backend.training(&frozen).map_err(TrainError::Backend)?;
    let missing = tensors.give_to(&mut program);
    if resume.is_some() && !missing.is_empty() {
        return Err(TrainError::Resume(format!(
            "the checkpoint lacks `{}` ({} tensors in all) that this run's training step needs; \
             was it written by another version of the model?",
            missing[0],
            missing.len()
        )));
    }
    tensors.take_from(&program);
    let mut evaluator = backend.inference().map_err(TrainError::Backend)?;
    let started = Instant::now();
    let mut last_checkpoint = resume.map(|_| checkpoint_file.clone());
    let save = |tensors: &Tensors, position: &Position, elapsed: f64| -> Result<(), TrainError> {
        let mut position = position.clone();
        position.wall_s += elapsed;
        let mut metadata = BTreeMap::new();
        metadata.insert(MODEL_KEY.to_string(), model.name.clone());
        metadata.insert(HASH_KEY.to_string(), model.sha256.clone());
        metadata.insert(RECIPE_KEY.to_string(), recipe.to_yaml());
        metadata.insert(
            POSITION_KEY.to_string(),
            serde_json::to_string(&position).expect("positions serialise"),
        );
        metadata.insert(
            NORMALIZATION_KEY.to_string(),
            serde_json::to_string(&data.normalization).expect("normalisations serialise"),
        );
        metadata.insert(
            CLASSES_KEY.to_string(),
            serde_json::to_string(&data.train.class_names).expect("names serialise"),
        );
        Checkpoint {
            tensors: tensors.0.values().cloned().collect(),
            metadata,
        }
        .save(&checkpoint_file)
        .map_err(|e| TrainError::Io(e.to_string()))
    };

    while position.epoch < recipe.epochs {
        let epoch = position.epoch;
        if recipe.frozen_at(epoch) != frozen {
            tensors.take_from(&program);
            frozen = recipe.frozen_at(epoch);
            program = backend.training(&frozen).map_err(TrainError::Backend)?;
            tensors.give_to(&mut program);
            observer.note(&format!(
                "epoch {}: training {}",
                epoch + 1,
                if frozen.is_empty() {
                    "every layer".to_string()
                } else {
                    format!("all but {}", frozen.join(", "))
                }
            ));
        }
        observer.epoch_started(epoch, recipe.epochs, position.batch, batches);
        let loader = Loader::new(
            data.train.clone(),
            data.normalization.clone(),
            LoaderOptions {
                batch,
                shuffle: true,
                augment: recipe.data.augment.clone(),
                seed: recipe.seed,
                epoch: epoch as u64,
                first_batch: position.batch,
                drop_last: true,
            },
        );
        for examples in loader {
            let lr = recipe.schedule.lr(
                recipe.optimizer.lr,
                epoch,
                position.batch,
                batches,
                recipe.epochs,
                &position.schedule,
            );
            let step_started = Instant::now();
            feed(&mut program, &examples);
            set_scalar(&mut program, "lr", lr as f32);
            set_scalar(&mut program, "step", (position.step + 1) as f32);
            program.run();
            let loss = program.loss();
            if !loss.is_finite() {
                return Err(TrainError::NonFinite {
                    step: position.step + 1,
                    epoch,
                    loss,
                    layer: program.first_non_finite(),
                    checkpoint: last_checkpoint,
                });
            }
            program.apply_updates();
            position.step_seconds += step_started.elapsed().as_secs_f64();
            position.step += 1;
            position.batch += 1;
            position.loss_sum_bits =
                (f64::from_bits(position.loss_sum_bits) + loss as f64 * batch as f64).to_bits();
            position.correct += correct(program.prediction(), &examples);
            position.seen += examples.count as u64;
            let control = observer.step(&StepProgress {
                epoch,
                batch: position.batch,
                batches,
                loss: f64::from_bits(position.loss_sum_bits) / position.seen as f64,
                accuracy: position.correct as f64 / position.seen as f64,
                images_per_s: position.seen as f64 / position.step_seconds,
            });
            let due = recipe
                .checkpoint
                .every_steps
                .is_some_and(|every| position.step.is_multiple_of(every as u64));
            if due || control == Control::Stop {
                tensors.take_from(&program);
                save(&tensors, &position, started.elapsed().as_secs_f64())?;
                last_checkpoint = Some(checkpoint_file.clone());
            }
            if control == Control::Stop {
                return Ok(Finish::Interrupted {
                    step: position.step,
                });
            }
        }

        tensors.take_from(&program);
        let validation = match &data.validation {
            Some(set) => {
                tensors.give_to(&mut evaluator);
                Some(evaluate(&mut evaluator, set, &data.normalization, batch))
            }
            None => None,
        };
        let train_loss = f64::from_bits(position.loss_sum_bits) / position.seen as f64;
        let monitored = validation.as_ref().map_or(train_loss, |v| v.loss);
        recipe.schedule.end_epoch(&mut position.schedule, monitored);
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss,
            train_acc: position.correct as f64 / position.seen as f64,
            val_loss: validation.as_ref().map(|v| v.loss),
            val_acc: validation.as_ref().map(|v| v.accuracy),
            lr: recipe.schedule.lr(
                recipe.optimizer.lr,
                epoch,
                batches - 1,
                batches,
                recipe.epochs,
                &position.schedule,
            ),
            wall_s: position.wall_s + started.elapsed().as_secs_f64(),
            images_per_s: position.seen as f64 / position.step_seconds,
        };
        observer.epoch_finished(&record);
        position.history.push(record);
        let stop_early = recipe
            .early_stop
            .as_ref()
            .is_some_and(|rule| rule.end_epoch(&mut position.early_stop, monitored));
        position.epoch += 1;
        position.batch = 0;
        position.loss_sum_bits = 0;
        position.correct = 0;
        position.seen = 0;
        position.step_seconds = 0.0;
        write_run_files(run_dir, &model.name, &position.history, None)?;
        let due = position
            .epoch
            .is_multiple_of(recipe.checkpoint.every_epochs.max(1))
            || position.epoch == recipe.epochs
            || stop_early;
        if due {
            save(&tensors, &position, started.elapsed().as_secs_f64())?;
            last_checkpoint = Some(checkpoint_file.clone());
        }
        if stop_early {
            observer.note(&format!(
                "stopping early: the validation loss has not improved for {} epochs",
                recipe.early_stop.as_ref().map_or(0, |rule| rule.patience)
            ));
            break;
        }
    }

    tensors.give_to(&mut evaluator);
    let test = evaluate(&mut evaluator, &data.test, &data.normalization, batch);
    let test = TestRecord {
        test_loss: test.loss,
        test_acc: test.accuracy,
    };
    write_run_files(run_dir, &model.name, &position.history, Some(&test))?;
    Ok(Finish::Completed {
        test,
        epochs_run: position.history.len(),
    })
}

/// `metrics.jsonl` and the curves, rewritten after every epoch.
fn write_run_files(
    run_dir: &Path,
    title: &str,
    history: &[EpochRecord],
    test: Option<&TestRecord>,
) -> Result<(), TrainError> {
    let metrics = run_dir.join("metrics.jsonl");
    write_metrics(&metrics, history, test)
        .map_err(|e| TrainError::Io(format!("cannot write `{}`: {e}", metrics.display())))?;
    plot_training(
        history,
        title,
        &run_dir.join("curves.png"),
        &run_dir.join("curves.svg"),
    )
    .map_err(|e| TrainError::Io(e.to_string()))
}

/// Puts a batch into a program's inputs.
pub fn feed(program: &mut Program, examples: &Batch) {
    program
        .input_mut("x")
        .expect("networks take images `x`")
        .copy_from_slice(&examples.images);
    program
        .input_mut("labels")
        .expect("classifiers take `labels`")
        .copy_from_slice(&examples.labels);
}

/// Sets a scalar input, if the graph has it (`step` only exists where something uses it).
fn set_scalar(program: &mut Program, name: &str, value: f32) {
    if let Some(slot) = program.input_mut(name) {
        slot[0] = value;
    }
}

/// The index of each row's highest score, the first on ties (as `argmax` in PyTorch).
fn predicted_classes(scores: &[f32], rows: usize) -> impl Iterator<Item = usize> + '_ {
    let classes = scores.len() / rows.max(1);
    scores.chunks(classes).take(rows).map(|row| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &s)| {
                if s > best.1 {
                    (i, s)
                } else {
                    best
                }
            })
            .0
    })
}

fn correct(scores: &[f32], examples: &Batch) -> u64 {
    predicted_classes(scores, examples.labels.len())
        .zip(&examples.labels)
        .take(examples.count)
        .filter(|&(predicted, &label)| predicted == label as usize)
        .count() as u64
}

/// A network's quality on a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy of the softmax of the scores.
    pub loss: f64,
    pub accuracy: f64,
    /// `confusion[true class][predicted class]` counts.
    pub confusion: Vec<Vec<u64>>,
}

/// Runs `program` (inference mode, its parameters set) over `data` in batches of `batch`.
pub fn evaluate(
    program: &mut Program,
    data: &Arc<Dataset>,
    normalization: &Normalization,
    batch: usize,
) -> Evaluation {
    let classes = data.classes();
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut loss_sum = 0.0;
    let loader = Loader::new(
        data.clone(),
        normalization.clone(),
        LoaderOptions::in_order(batch),
    );
    for examples in loader {
        feed(program, &examples);
        program.run();
        let scores = program.prediction();
        let width = scores.len() / batch;
        for (row, (predicted, &label)) in predicted_classes(scores, batch)
            .zip(&examples.labels)
            .take(examples.count)
            .enumerate()
        {
            loss_sum += cross_entropy(&scores[row * width..(row + 1) * width], label as usize);
            if let Some(count) = confusion
                .get_mut(label as usize)
                .and_then(|r| r.get_mut(predicted))
            {
                *count += 1;
            }
        }
    }
    let total = data.len().max(1) as f64;
    let right: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    Evaluation {
        loss: loss_sum / total,
        accuracy: right as f64 / total,
        confusion,
    }
}

/// `-log softmax(scores)[label]`, in f64 and shifted by the maximum so it cannot overflow.
fn cross_entropy(scores: &[f32], label: usize) -> f64 {
    let max = scores
        .iter()
        .fold(f64::NEG_INFINITY, |m, &s| m.max(s as f64));
    let sum: f64 = scores.iter().map(|&s| (s as f64 - max).exp()).sum();
    max + sum.ln() - scores[label] as f64
}
