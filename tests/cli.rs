//! The command line at its edges: exit statuses, unreadable files, bad flags, and the README's
//! layer reference staying the same as `netc layers`.

use crate::golden::{netc, root};

#[test]
fn check_is_silent_on_success() {
    assert_eq!(
        netc(&["check", "../models/mnist_cnn.net"]),
        (0, String::new(), String::new())
    );
}

#[test]
fn a_missing_file_is_a_user_error() {
    let (status, stdout, stderr) = netc(&["check", "no/such/file.net"]);
    assert_eq!((status, stdout.as_str()), (1, ""));
    assert!(
        stderr.starts_with("error: cannot read `no/such/file.net`: "),
        "{stderr}"
    );
}

#[test]
fn a_binary_file_is_a_user_error() {
    let path = std::env::temp_dir().join(format!("netc-binary-{}.net", std::process::id()));
    std::fs::write(&path, [b'i', b'n', 0xff, 0xfe, b'\n']).expect("temp file writable");
    let (status, _, stderr) = netc(&["check", path.to_str().expect("UTF-8 temp path")]);
    std::fs::remove_file(&path).ok();
    assert_eq!(status, 1);
    assert!(
        stderr.contains("is not a text file: byte 2 is not UTF-8"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_user_errors_and_help_is_not() {
    let (status, _, stderr) = netc(&["summary", "--frobnicate", "x.net"]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("unexpected argument '--frobnicate'"),
        "{stderr}"
    );
    let (status, stdout, _) = netc(&["--help"]);
    assert_eq!(status, 0);
    assert!(stdout.contains("summary"), "{stdout}");
}

#[test]
fn check_reports_every_bad_file_and_fails() {
    let (status, _, stderr) = netc(&["check", "../models/mlp.net", "invalid/unknown_layer.net"]);
    assert_eq!(status, 1);
    assert!(stderr.contains("unknown layer or block `cnov`"), "{stderr}");
}

#[test]
fn readme_layer_reference_is_netc_layers() {
    let readme = std::fs::read_to_string(root().join("../README.md")).expect("README.md");
    let (_, reference, _) = netc(&["layers"]);
    assert!(
        readme.contains(&reference),
        "README.md's layer list differs from `netc layers`; paste its output into the README:\n{reference}"
    );
}

#[test]
fn set_overrides_network_parameters() {
    let (status, stdout, stderr) = netc(&[
        "summary",
        "../models/vgg_small.net",
        "--set",
        "size=64",
        "--set",
        "classes=7",
    ]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.starts_with("network vgg_small(classes = 7, channels = 3, size = 64)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("input 3x64x64"), "{stdout}");
    assert!(stdout.contains("dense 7 "), "{stdout}");
}

#[test]
fn set_reports_unknown_parameters_and_bad_values() {
    let (status, _, stderr) = netc(&["check", "../models/vgg_small.net", "--set", "sise=64"]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("network `vgg_small` has no parameter `sise` to set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean `--set size=...`?"),
        "{stderr}"
    );

    let (status, _, stderr) = netc(&["check", "../models/vgg_small.net", "--set", "size=6x"]);
    assert_eq!(status, 1);
    assert!(stderr.contains("--> --set size:1:3"), "{stderr}");

    let (status, _, stderr) = netc(&["check", "../models/vgg_small.net", "--set", "size=16"]);
    assert_eq!(status, 1);
    assert!(stderr.contains("larger than its input 512x1x1"), "{stderr}");
}

#[test]
fn ir_prints_each_stage_and_rejects_bad_flags() {
    let (status, stdout, _) = netc(&["ir", "../models/mlp.net", "--stage", "training"]);
    assert_eq!(status, 0);
    assert!(stdout.starts_with("graph mlp.training {"), "{stdout}");
    assert!(stdout.contains("output update fc1.weight"), "{stdout}");

    let (status, help, _) = netc(&["ir", "--help"]);
    assert_eq!(status, 0);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for pass in netc::passes::Pass::ALL {
        assert!(help.contains(pass.name()), "`--help` lacks {pass}: {help}");
    }

    let (status, _, stderr) = netc(&["ir", "../models/mlp.net", "--freeze", "fc4"]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains(
            "cannot freeze `fc4`: no layer of that name has parameters; did you mean `fc1`?"
        ),
        "{stderr}"
    );
    let (status, _, stderr) = netc(&["ir", "../models/mlp.net", "--batch", "0"]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("the batch size must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn bench_times_the_compiled_step() {
    let (status, stdout, stderr) = netc(&[
        "bench",
        "../models/mlp.net",
        "--batch",
        "4",
        "--steps",
        "3",
        "--threads",
        "2",
        "--json",
    ]);
    assert_eq!(status, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["network"], "mlp");
    assert_eq!(report["batch"], 4);
    assert_eq!(report["threads"], 2);
    assert_eq!(report["step_ms"].as_array().map(Vec::len), Some(3));
    for key in ["compile_ms", "step_ms_median", "images_per_s", "gflops"] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }

    let (status, _, stderr) = netc(&["bench", "../models/mlp.net", "--steps", "0"]);
    assert_eq!(status, 1);
    assert!(stderr.contains("--steps must be at least 1"), "{stderr}");
}

#[test]
fn bench_compares_the_fused_step_with_the_unfused_one_round_by_round() {
    let args = [
        "bench",
        "../models/mnist_cnn.net",
        "--batch",
        "2",
        "--steps",
        "2",
    ];
    let (status, stdout, stderr) = netc(&[&args[..], &["--compare-unfused", "--json"]].concat());
    assert_eq!(status, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["network"], "mnist_cnn");
    assert_eq!(report["steps_per_round"], 2);
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), netc::bench::DEFAULT_COMPARISON_ROUNDS);
    let ms = |v: &serde_json::Value| v.as_f64().filter(|&ms| ms > 0.0).expect("a time");
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|r| ms(&r["unfused_ms"]) / ms(&r["fused_ms"]))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let (ratio, median) = (ms(&report["ratio"]), ratios[ratios.len() / 2]);
    assert!((ratio - median).abs() <= 1e-9 * median, "{ratio} {median}");
    ms(&report["fused_step_ms"]);
    ms(&report["unfused_step_ms"]);

    let (status, stdout, stderr) = netc(&[&args[..], &["--compare-unfused"]].concat());
    assert_eq!(status, 0, "{stderr}");
    for line in ["fused ", "unfused ", "unfused/fused "] {
        assert!(stdout.lines().any(|l| l.starts_with(line)), "{stdout}");
    }

    for other in ["--unfused", "--profile"] {
        let (status, _, stderr) = netc(&[&args[..], &["--compare-unfused", other]].concat());
        assert_eq!(status, 1, "{stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
}

#[test]
fn bench_compares_as_many_rounds_as_asked() {
    let args = ["bench", "../models/mlp.net", "--batch", "2", "--steps", "1"];
    let (status, stdout, stderr) =
        netc(&[&args[..], &["--compare-unfused", "--rounds", "3", "--json"]].concat());
    assert_eq!(status, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["rounds"].as_array().expect("rounds").len(), 3);

    let (status, _, stderr) = netc(&[&args[..], &["--compare-unfused", "--rounds", "0"]].concat());
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("--rounds must be at least 1"), "{stderr}");

    let (status, _, stderr) = netc(&[&args[..], &["--rounds", "3"]].concat());
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("--compare-unfused"), "{stderr}");
}

#[test]
fn bench_compares_the_step_with_and_without_a_pass() {
    let args = ["bench", "../models/mlp.net", "--batch", "2", "--steps", "1"];
    let without = ["--compare-without", "fuse_elementwise", "--rounds", "2"];
    let (status, stdout, stderr) = netc(&[&args[..], &without[..]].concat());
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.contains("with and without fuse_elementwise in turn"),
        "{stdout}"
    );
    for line in ["with ", "without ", "without/with "] {
        assert!(stdout.lines().any(|l| l.starts_with(line)), "{stdout}");
    }
    let (status, stdout, stderr) = netc(&[&args[..], &without[..], &["--json"]].concat());
    assert_eq!(status, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["without"], "fuse_elementwise");
    assert_eq!(report["rounds"].as_array().expect("rounds").len(), 2);
    for key in ["with_step_ms", "without_step_ms", "ratio"] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }

    let (status, _, stderr) =
        netc(&[&args[..], &["--compare-without", "fuse_elementwize"]].concat());
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("did you mean `fuse_elementwise`"),
        "{stderr}"
    );
    let both = ["--compare-without", "fuse_sums", "--compare-unfused"];
    let (status, _, stderr) = netc(&[&args[..], &both[..]].concat());
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
