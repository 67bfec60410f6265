//! `netc compile`: standalone executables that train, evaluate, predict and benchmark, run as
//! a user runs them (a separate process, in a directory of its own), checked against
//! `netc train` on the same recipe and seed.

use crate::golden::netc;
use netc_runtime::checkpoint::Checkpoint;
use netc_runtime::driver::checkpoint_path;
use netc_runtime::metrics::read_metrics;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory for one test's files.
fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-compile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir writable");
    dir
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// `netc compile MODEL -o DIR/NAME ARGS...`, which must succeed; the executable's path.
fn compile(model: &str, dir: &Path, args: &[&str]) -> PathBuf {
    let name = Path::new(model).file_stem().expect("a model file");
    let output = dir.join(name);
    let mut argv = vec!["compile", model, "-o", text(&output)];
    argv.extend(args);
    let (status, stdout, stderr) = netc(&argv);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("compiled `"), "{stdout}");
    output
}

/// Runs an executable in `dir`: status, stdout, stderr.
fn run(executable: &Path, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(executable)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the executable runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    )
}

const SUBSET: [&str; 6] = [
    "--recipe-set",
    "data.limit=1000",
    "--recipe-set",
    "data.test_limit=300",
    "--epochs",
    "2",
];

#[test]
fn a_compiled_mnist_cnn_trains_evaluates_and_predicts_as_netc_train_does() {
    let dir = work_dir("mnist");
    let executable = compile("../models/mnist_cnn.net", &dir, &[]);

    let (status, stdout, stderr) = run(&executable, &dir, &["--help"]);
    assert_eq!(status, 0, "{stderr}");
    for command in ["train", "eval", "predict", "bench", "info"] {
        assert!(stdout.contains(command), "{stdout}");
    }

    // Training on a subset: the loss falls, a checkpoint is written.
    let mut args = vec!["train", "--run-dir", "run"];
    args.extend(SUBSET);
    let (status, stdout, stderr) = run(&executable, &dir, &args);
    assert_eq!(status, 0, "{stdout}{stderr}");
    let run_dir = dir.join("run");
    let (epochs, test) = read_metrics(&run_dir.join("metrics.jsonl")).expect("metrics");
    assert_eq!(epochs.len(), 2);
    assert!(epochs[1].train_loss < epochs[0].train_loss, "{epochs:?}");
    let test_acc = test.expect("a test record").test_acc;
    assert!(checkpoint_path(&run_dir).is_file());

    // `eval` loads the checkpoint and reports the run's test accuracy.
    let (status, stdout, stderr) = run(
        &executable,
        &dir,
        &["eval", "--weights", "run/checkpoint.safetensors"],
    );
    assert_eq!(status, 0, "{stderr}");
    let expected = format!("test accuracy {:.2}%", test_acc * 100.0);
    assert!(stdout.contains(&expected), "{expected} not in:\n{stdout}");
    assert!(stdout.contains("Ankle boot"), "{stdout}");

    // `netc train`, same recipe and seed: the same weights, bit for bit, and the same metrics.
    let jit_dir = dir.join("jit");
    let mut args = vec![
        "train",
        "../models/mnist_cnn.net",
        "--run-dir",
        text(&jit_dir),
    ];
    args.extend(SUBSET);
    let (status, stdout, stderr) = netc(&args);
    assert_eq!(status, 0, "{stdout}{stderr}");
    let linked = Checkpoint::load(&checkpoint_path(&run_dir)).expect("a checkpoint");
    let jit = Checkpoint::load(&checkpoint_path(&jit_dir)).expect("a checkpoint");
    assert_eq!(linked.tensors, jit.tensors);
    let (jit_epochs, jit_test) = read_metrics(&jit_dir.join("metrics.jsonl")).expect("metrics");
    let losses = |e: &[netc_runtime::metrics::EpochRecord]| -> Vec<(f64, Option<f64>)> {
        e.iter().map(|e| (e.train_loss, e.val_loss)).collect()
    };
    assert_eq!(losses(&epochs), losses(&jit_epochs));
    assert_eq!(test_acc, jit_test.expect("a test record").test_acc);

    // `predict`: the five likeliest classes of an image, by name.
    let image = dir.join("shoe.png");
    let pixels = (0..28 * 28)
        .map(|i| if i % 28 > 14 { 200 } else { 30 })
        .collect();
    image::GrayImage::from_raw(28, 28, pixels)
        .expect("a 28x28 image")
        .save(&image)
        .expect("a PNG");
    let (status, stdout, stderr) = run(
        &executable,
        &dir,
        &[
            "predict",
            "--weights",
            "run/checkpoint.safetensors",
            "shoe.png",
        ],
    );
    assert_eq!(status, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines[0].ends_with("shoe.png"), "{stdout}");
    let percents: Vec<f64> = lines[1..]
        .iter()
        .map(|l| {
            l.trim()
                .split('%')
                .next()
                .unwrap()
                .trim()
                .parse()
                .expect("a percentage")
        })
        .collect();
    assert!(percents.windows(2).all(|w| w[0] >= w[1]), "{stdout}");
    assert!(percents.iter().sum::<f64>() <= 100.01, "{stdout}");

    let (status, stdout, stderr) = run(&executable, &dir, &["info"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("compiled by netc"), "{stdout}");
    assert!(stdout.contains("conv1"), "{stdout}");
    assert!(stdout.contains("training step (batch 100)"), "{stdout}");

    let (status, stdout, stderr) = run(&executable, &dir, &["bench", "--steps", "2"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("images/s"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn what_the_code_fixes_cannot_change_at_run_time() {
    let dir = work_dir("fixed");
    let executable = compile(
        "../models/mnist_cnn.net",
        &dir,
        &["--recipe-set", "batch=20"],
    );
    let (status, _, stderr) = run(
        &executable,
        &dir,
        &[
            "train",
            "--batch",
            "32",
            "--recipe-set",
            "optimizer.kind=sgd",
        ],
    );
    assert_eq!(status, 1);
    assert!(
        stderr.contains("`batch` is 32, but this executable was compiled for batches of 20"),
        "{stderr}"
    );
    assert!(stderr.contains("`optimizer` differs"), "{stderr}");
    assert!(
        stderr.contains("netc compile MODEL --config RECIPE"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_native_executable_records_the_features_it_needs() {
    let dir = work_dir("native");
    let executable = compile("../models/mlp.net", &dir, &["--target-cpu", "native"]);
    let (status, stdout, stderr) = run(&executable, &dir, &["info"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("for native CPUs with "), "{stdout}");
    assert!(stdout.contains("avx"), "{stdout}");
    assert_info_memory_is_summarys(&stdout, "../models/mlp.net", &[]);
    std::fs::remove_dir_all(&dir).ok();
}

/// `--unfused` and `--disable-pass` reach the programs compiled in, and `info` names the
/// passes left out.
#[test]
fn an_executable_compiled_without_passes_runs_and_says_so() {
    let dir = work_dir("unfused");
    let passes = ["--unfused", "--disable-pass", "reuse_buffers"];
    let executable = compile("../models/mlp.net", &dir, &passes);
    let (status, stdout, stderr) = run(&executable, &dir, &["info"]);
    assert_eq!(status, 0, "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("without the passes "))
        .unwrap_or_else(|| panic!("{stdout}"));
    for pass in ["fuse_elementwise", "fuse_epilogue", "reuse_buffers"] {
        assert!(line.contains(pass), "{line}");
    }
    assert!(!line.contains("schedule_updates"), "{line}");
    assert_info_memory_is_summarys(&stdout, "../models/mlp.net", &passes);
    let (status, stdout, stderr) = run(&executable, &dir, &["bench", "--steps", "2"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("images/s"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The memory that `info`, an executable's `info` output, reports for the training step, with
/// each thread's scratch, is what `summary --memory` plans for the same passes (the built-in
/// recipe is summary's: batch 64, SGD with momentum): the memory plan's arena once, not also
/// each value inside it.
fn assert_info_memory_is_summarys(info: &str, model: &str, passes: &[&str]) {
    let mut args = vec!["summary", model, "--memory", "--batch", "64"];
    args.extend(passes);
    let (status, summary, stderr) = netc(&args);
    assert_eq!(status, 0, "{stderr}");
    // The number just before `after`, on the line that has `before`, after that.
    let number = |text: &str, before: &str, after: &str| -> f64 {
        let rest = text
            .lines()
            .find_map(|l| l.split_once(before))
            .map(|(_, r)| r);
        let word = rest.and_then(|r| r.split(after).next()?.split_whitespace().last());
        word.and_then(|n| n.parse().ok()).expect(before)
    };
    let peak = number(&summary, "peak (all of it, allocated once)", " MiB");
    let threads = number(&summary, "SGD with momentum, ", " threads");
    let in_all = number(info, "training step (batch 64):", " MiB in all");
    let scratch = number(info, "in all, and", " MiB of scratch per thread");
    let allocated = in_all + threads * scratch;
    assert!((allocated - peak).abs() <= 0.02, "{info}\n{summary}");
}

/// Four 64x48 colour images in two classes, for training, and two for testing.
fn image_folder(root: &Path) {
    for (set, per_class) in [("train", 2), ("val", 1)] {
        for (class, colour) in [("red", [200, 20, 20]), ("blue", [20, 20, 200])] {
            let folder = root.join(set).join(class);
            std::fs::create_dir_all(&folder).expect("writable");
            for index in 0..per_class {
                let image = image::RgbImage::from_fn(64, 48, |x, y| {
                    image::Rgb(colour.map(|c: u8| c.wrapping_add((x + y + index) as u8)))
                });
                image
                    .save(folder.join(format!("{index}.png")))
                    .expect("a PNG");
            }
        }
    }
}

#[test]
fn a_compiled_googlenet_trains_two_steps_on_an_image_folder_at_224() {
    let dir = work_dir("googlenet");
    image_folder(&dir.join("images"));
    let recipe = dir.join("recipe.yaml");
    std::fs::write(
        &recipe,
        "network: { classes: 2 }\nbatch: 2\nepochs: 1\ndata: { train: images, validation_split: 0 }\n",
    )
    .expect("writable");
    let executable = compile(
        "../models/googlenet.net",
        &dir,
        &["--config", text(&recipe)],
    );
    let (status, stdout, stderr) = run(&executable, &dir, &["train", "--run-dir", "run"]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(
        stdout
            .contains("training `googlenet` on images: 4 training, 0 validation and 2 test images"),
        "{stdout}"
    );
    let checkpoint = Checkpoint::load(&checkpoint_path(&dir.join("run"))).expect("a checkpoint");
    let position = checkpoint
        .metadata
        .get("netc.position")
        .expect("a position");
    assert!(position.contains("\"step\":2"), "{position}");
    std::fs::remove_dir_all(&dir).ok();
}
