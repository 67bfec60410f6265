//! Training end to end: the driver over compiled programs (resuming is bit-identical, a
//! non-finite loss is caught and located, frozen layers stay put), and `netc train` / `netc
//! eval` on a subset of Fashion-MNIST with their files and their errors.

use crate::golden::netc;
use netc::codegen::CodegenOptions;
use netc::train::JitBackend;
use netc_grammar::diagnostic::SourceFile;
use netc_runtime::checkpoint::Checkpoint;
use netc_runtime::data::{Dataset, Normalization};
use netc_runtime::driver::{
    self, checkpoint_path, Control, Finish, ModelIdentity, Observer, RunData, StepProgress,
    TrainError,
};
use netc_runtime::metrics::{read_metrics, EpochRecord};
use netc_runtime::recipe::Recipe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A small network with everything that carries randomness or state across steps: dropout,
/// batch norm's running statistics, and (with Adam) optimizer moments and the step count.
const NETWORK: &str = "
network tiny(classes = 3) {
  input 1x8x8
  conv 3x3 4 pad=1 as conv1
  batchnorm as bn1
  relu
  maxpool 2x2
  dropout 0.25
  dense classes as fc
  loss softmax_cross_entropy
}
";

fn network() -> netc::front::Network {
    netc::front::run(&SourceFile::new("tiny.net", NETWORK), &[]).expect("the network compiles")
}

/// Images whose class is the quadrant that is bright, with noise: learnable in a few steps.
fn dataset(count: usize, seed: u64) -> Dataset {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut pixels = Vec::with_capacity(count * 64);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let label = next() % 3;
        for y in 0..8 {
            for x in 0..8 {
                let quadrant = (y / 4) * 2 + x / 4;
                let base = if quadrant == label as usize { 180 } else { 40 };
                pixels.push((base + next() % 60) as u8);
            }
        }
        labels.push(label);
    }
    Dataset {
        shape: [1, 8, 8],
        pixels,
        labels,
        class_names: vec!["a".into(), "b".into(), "c".into()],
    }
}

fn run_data() -> RunData {
    let train = dataset(96, 1);
    RunData {
        normalization: train.normalization(),
        train: Arc::new(train),
        validation: Some(Arc::new(dataset(20, 2))),
        test: Arc::new(dataset(30, 3)),
    }
}

fn backend(recipe: &Recipe) -> JitBackend {
    JitBackend {
        network: network(),
        batch: recipe.batch,
        optimizer: netc::train::optimizer(&recipe.optimizer),
        init: recipe.init.kind,
        seed: recipe.seed,
        weights: Default::default(),
        codegen: CodegenOptions {
            threads: 2,
            seed: recipe.seed,
            ..CodegenOptions::default()
        },
    }
}

fn model() -> ModelIdentity {
    ModelIdentity {
        name: "tiny".into(),
        sha256: netc_runtime::checkpoint::sha256_hex(NETWORK.as_bytes()),
    }
}

/// A fresh directory for one test's run.
fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Counts steps and stops the run after `stop_after` of them, as Ctrl-C does.
struct Stopper {
    steps: usize,
    stop_after: Option<usize>,
}

impl Observer for Stopper {
    fn epoch_started(&mut self, _: usize, _: usize, _: usize, _: usize) {}
    fn step(&mut self, _: &StepProgress) -> Control {
        self.steps += 1;
        if Some(self.steps) == self.stop_after {
            Control::Stop
        } else {
            Control::Continue
        }
    }
    fn epoch_finished(&mut self, _: &EpochRecord) {}
    fn note(&mut self, _: &str) {}
}

fn train(
    recipe: &Recipe,
    dir: &Path,
    resume: Option<&Checkpoint>,
    stop_after: Option<usize>,
) -> Result<Finish, TrainError> {
    driver::train(
        &mut backend(recipe),
        recipe,
        &run_data(),
        &model(),
        dir,
        resume,
        &mut Stopper {
            steps: 0,
            stop_after,
        },
    )
}

fn recipe(text: &str) -> Recipe {
    Recipe::parse(text, &[]).expect("a valid recipe")
}

/// The tensors of a checkpoint, without its metadata (which holds wall-clock times).
fn tensors(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let checkpoint = Checkpoint::load(&checkpoint_path(dir)).expect("a checkpoint");
    checkpoint
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

const RESUMABLE: &str = "
batch: 16
epochs: 3
optimizer: { kind: adam, lr: 0.01 }
schedule: { kind: plateau, patience: 0, factor: 0.5 }
data: { augment: { flip_horizontal: true, translate: 1, noise: 0.1 } }
freeze: [{ layer: conv1, epochs: 1 }]
";

#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let recipe = recipe(RESUMABLE);
    let whole = run_dir("whole");
    assert!(matches!(
        train(&recipe, &whole, None, None),
        Ok(Finish::Completed { epochs_run: 3, .. })
    ));
    // 6 steps an epoch: stop in the first epoch (conv1 frozen), mid-way through the second
    // (after the freeze ended) and at an epoch's end.
    for stop in [4, 9, 12] {
        let parted = run_dir(&format!("parted-{stop}"));
        assert!(matches!(
            train(&recipe, &parted, None, Some(stop)),
            Ok(Finish::Interrupted { step }) if step == stop as u64
        ));
        let checkpoint = Checkpoint::load(&checkpoint_path(&parted)).expect("a checkpoint");
        let finish = train(&recipe, &parted, Some(&checkpoint), None);
        assert!(
            matches!(finish, Ok(Finish::Completed { epochs_run: 3, .. })),
            "{finish:?}"
        );
        assert_eq!(
            tensors(&whole),
            tensors(&parted),
            "stopped after step {stop}"
        );
        let (whole_epochs, whole_test) =
            read_metrics(&whole.join("metrics.jsonl")).expect("metrics");
        let (parted_epochs, parted_test) =
            read_metrics(&parted.join("metrics.jsonl")).expect("metrics");
        let losses = |records: &[EpochRecord]| {
            records
                .iter()
                .map(|r| {
                    (
                        r.train_loss.to_bits(),
                        r.val_loss.map(f64::to_bits),
                        r.lr.to_bits(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(losses(&whole_epochs), losses(&parted_epochs));
        assert_eq!(whole_test, parted_test);
        std::fs::remove_dir_all(&parted).ok();
    }
    std::fs::remove_dir_all(&whole).ok();
}

#[test]
fn a_checkpoint_of_another_model_is_refused() {
    let recipe = recipe("batch: 16\nepochs: 1");
    let dir = run_dir("other-model");
    train(&recipe, &dir, None, Some(2)).expect("a run");
    let checkpoint = Checkpoint::load(&checkpoint_path(&dir)).expect("a checkpoint");
    let other = ModelIdentity {
        name: "tiny".into(),
        sha256: netc_runtime::checkpoint::sha256_hex(b"another file"),
    };
    let error = driver::train(
        &mut backend(&recipe),
        &recipe,
        &run_data(),
        &other,
        &dir,
        Some(&checkpoint),
        &mut Stopper {
            steps: 0,
            stop_after: None,
        },
    )
    .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("the checkpoint was written for `tiny` from a model file with SHA-256"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_diverging_run_stops_at_the_step_and_layer_and_keeps_its_checkpoint() {
    let recipe = recipe("batch: 16\nepochs: 2\noptimizer: { kind: sgd, lr: 1.0e30 }\ncheckpoint: { every_steps: 1 }");
    let dir = run_dir("diverging");
    let error = train(&recipe, &dir, None, None).expect_err("diverges");
    let TrainError::NonFinite {
        step,
        layer,
        checkpoint,
        ..
    } = &error
    else {
        panic!("not a non-finite loss: {error}");
    };
    assert!(*step >= 2, "the first step starts from finite weights");
    assert!(layer.is_some(), "{error}");
    assert_eq!(checkpoint.as_deref(), Some(checkpoint_path(&dir).as_path()));
    let message = error.to_string();
    assert!(
        message.contains("help: lower the learning rate"),
        "{message}"
    );
    // The checkpoint is the last good step's: finite everywhere.
    let saved = Checkpoint::load(&checkpoint_path(&dir)).expect("a checkpoint");
    assert!(saved
        .tensors
        .iter()
        .all(|t| t.data.iter().all(|v| v.is_finite())));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn frozen_layers_keep_their_weights() {
    let recipe = recipe("batch: 16\nepochs: 1\ninit: { kind: he }\nfreeze: [conv1]");
    let dir = run_dir("frozen");
    let mut backend = backend(&recipe);
    let initial = {
        use netc_runtime::driver::Backend;
        let program = backend.training(&[]).expect("compiles");
        (
            program.input("conv1.weight").expect("a weight").to_vec(),
            program.input("fc.weight").expect("a weight").to_vec(),
        )
    };
    train(&recipe, &dir, None, None).expect("a run");
    let saved = Checkpoint::load(&checkpoint_path(&dir)).expect("a checkpoint");
    assert_eq!(saved.tensor("conv1.weight").expect("saved").data, initial.0);
    assert_ne!(saved.tensor("fc.weight").expect("saved").data, initial.1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_driver_learns_the_synthetic_task() {
    let recipe = recipe("batch: 16\nepochs: 4\noptimizer: { kind: momentum, lr: 0.05 }");
    let dir = run_dir("learns");
    let Ok(Finish::Completed { test, .. }) = train(&recipe, &dir, None, None) else {
        panic!("the run did not complete");
    };
    assert!(test.test_acc > 0.9, "test accuracy {}", test.test_acc);
    std::fs::remove_dir_all(&dir).ok();
}

/// `netc train` on the first 500 Fashion-MNIST images: its output, files and errors.
#[test]
fn netc_train_and_eval_on_a_fashion_mnist_subset() {
    let dir = run_dir("cli");
    let dir_text = dir.to_str().expect("UTF-8 temp path");
    let (status, stdout, stderr) = netc(&[
        "train",
        "../models/mnist_cnn.net",
        "--recipe-set",
        "data.limit=500",
        "--recipe-set",
        "data.test_limit=200",
        "--epochs",
        "2",
        "--batch",
        "50",
        "--run-dir",
        dir_text,
    ]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(stdout.contains("training `mnist_cnn` on fashion-mnist: 450 training, 50 validation and 200 test images"), "{stdout}");
    assert!(stdout.contains("epoch   2  loss"), "{stdout}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    for file in [
        "checkpoint.safetensors",
        "metrics.jsonl",
        "curves.png",
        "curves.svg",
        "recipe.yaml",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let (epochs, test) = read_metrics(&dir.join("metrics.jsonl")).expect("metrics");
    assert_eq!(epochs.len(), 2);
    assert!(epochs
        .iter()
        .all(|e| e.val_acc.is_some() && e.images_per_s > 0.0));
    assert!(
        test.expect("a test record").test_acc > 0.5,
        "two epochs on 450 images learn something"
    );

    // A second run into the same directory would overwrite it.
    let (status, _, stderr) = netc(&["train", "../models/mnist_cnn.net", "--run-dir", dir_text]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("already holds a run; continue it with --resume"),
        "{stderr}"
    );

    let checkpoint = checkpoint_path(&dir);
    let checkpoint_text = checkpoint.to_str().expect("UTF-8 temp path");
    let (status, stdout, stderr) = netc(&[
        "eval",
        "../models/mnist_cnn.net",
        "--weights",
        checkpoint_text,
    ]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    assert!(
        stdout.contains("confusion matrix (rows: true class, columns: predicted class)"),
        "{stdout}"
    );
    assert!(stdout.contains("Ankle boot"), "{stdout}");

    // Another model's checkpoint.
    let (status, _, stderr) = netc(&["train", "../models/mlp.net", "--resume", checkpoint_text]);
    assert_eq!(status, 1);
    assert!(stderr.contains("was written for `mnist_cnn`"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn recipe_errors_point_into_the_recipe() {
    let recipe = std::env::temp_dir().join(format!("netc-recipe-{}.yaml", std::process::id()));
    std::fs::write(&recipe, "epochs: 3\ndata:\n  augment: { flip: true }\n").expect("writable");
    let path = recipe.to_str().expect("UTF-8 temp path");
    let (status, _, stderr) = netc(&["train", "../models/mnist_cnn.net", "--recipe", path]);
    std::fs::remove_file(&recipe).ok();
    assert_eq!(status, 1);
    assert!(stderr.contains(&format!("{path}:3:")), "{stderr}");
    assert!(stderr.contains("flip_horizontal"), "{stderr}");

    let (status, _, stderr) = netc(&[
        "train",
        "../models/mnist_cnn.net",
        "--recipe-set",
        "optimizer.kind=adamm",
    ]);
    assert_eq!(status, 1);
    assert!(stderr.contains("optimizer.kind=adamm"), "{stderr}");
    assert!(stderr.contains("adam"), "{stderr}");
}

#[test]
fn a_missing_data_directory_says_what_was_expected() {
    let (status, _, stderr) = netc(&[
        "train",
        "../models/mnist_cnn.net",
        "--data",
        "/no/such/data",
    ]);
    assert_eq!(status, 1);
    assert!(stderr.contains("/no/such/data"), "{stderr}");
}

#[test]
fn normalization_of_a_run_is_recorded_for_eval() {
    let recipe = recipe("batch: 16\nepochs: 1");
    let dir = run_dir("normalization");
    train(&recipe, &dir, None, None).expect("a run");
    let checkpoint = Checkpoint::load(&checkpoint_path(&dir)).expect("a checkpoint");
    let info = driver::checkpoint_info(&checkpoint).expect("netc metadata");
    let expected: Normalization = run_data().normalization;
    assert_eq!(info.normalization, Some(expected));
    assert_eq!(info.model, Some(model()));
    std::fs::remove_dir_all(&dir).ok();
}
