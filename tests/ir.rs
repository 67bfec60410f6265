//! The IR's stages for the zoo: every stage of every model verifies and its text form parses
//! back to the same graph; `mnist_cnn`'s stages, an inception block's and a residual block's
//! are kept as snapshots (`snapshots/*.ir`), printed by `netc ir`.

use crate::golden::{files, netc, Golden};
use crate::training::network;
use netc::ir::{parse::parse, print::print, verify::verify};
use netc::optim::{Optimizer, OptimizerKind};
use netc::passes::Pass;
use netc::pipeline::{self, TrainingOptions};

#[test]
fn every_stage_of_every_model_verifies_and_round_trips() {
    for path in files("../models", "net") {
        let path = path.to_str().expect("UTF-8 path").to_string();
        let net = network(&path, &[]);
        let options = TrainingOptions {
            batch: 2,
            optimizer: Optimizer::new(OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            }),
            frozen: Vec::new(),
        };
        let stages = [
            pipeline::forward(&net, 2),
            pipeline::training(&net, &options),
            pipeline::inference(&net, 2),
        ];
        for stage in stages {
            let graph = stage.expect("lowers").graph;
            if let Err(problems) = verify(&graph) {
                panic!("{path} {}: {}", graph.name, problems.join("\n"));
            }
            let text = print(&graph);
            let parsed = parse(&text).unwrap_or_else(|e| panic!("{path} {}: {e}", graph.name));
            assert!(
                parsed == graph,
                "{path} {}: parse(print(graph)) differs",
                graph.name
            );
        }
    }
}

#[test]
fn stage_snapshots() {
    let mut golden = Golden::default();
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "mnist_cnn.lowered",
            "../models/mnist_cnn.net",
            &["--stage", "lowered"],
        ),
        (
            "mnist_cnn.training",
            "../models/mnist_cnn.net",
            &["--stage", "training", "--optimizer", "momentum"],
        ),
        (
            "mnist_cnn.inference",
            "../models/mnist_cnn.net",
            &["--stage", "inference"],
        ),
        (
            "inception.training",
            "ir/inception.net",
            &["--stage", "training"],
        ),
        (
            "residual.training",
            "ir/residual.net",
            &["--stage", "training", "--optimizer", "adam"],
        ),
    ];
    for (name, path, stage) in cases {
        let mut args = vec!["ir", path, "--batch", "2"];
        args.extend_from_slice(stage);
        snapshot(&mut golden, &format!("snapshots/{name}.ir"), &args);
    }
    golden.finish();
}

/// The IR after each pass (and those before it), for `mnist_cnn`'s training step and inference
/// pass, an inception block's, a residual block's and a depthwise separable block's training
/// step.
#[test]
fn pass_snapshots() {
    let mut golden = Golden::default();
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "mnist_cnn.training",
            "../models/mnist_cnn.net",
            &["--stage", "training", "--optimizer", "momentum"],
        ),
        (
            "mnist_cnn.inference",
            "../models/mnist_cnn.net",
            &["--stage", "inference"],
        ),
        (
            "inception.training",
            "ir/inception.net",
            &["--stage", "training"],
        ),
        (
            "residual.training",
            "ir/residual.net",
            &["--stage", "training", "--optimizer", "adam"],
        ),
        (
            "separable.training",
            "ir/separable.net",
            &["--stage", "training"],
        ),
    ];
    for (name, path, stage) in cases {
        // The memory passes plan buffers and leave the graph as it is: no snapshot of theirs.
        for (index, pass) in Pass::ALL
            .iter()
            .enumerate()
            .filter(|(_, p)| p.rewrites_graph())
        {
            let mut args = vec!["ir", path, "--batch", "2", "--optimized"];
            args.extend_from_slice(stage);
            for later in &Pass::ALL[index + 1..] {
                args.extend(["--disable-pass", later.name()]);
            }
            let file = format!("snapshots/passes/{name}.{}.ir", pass.name());
            snapshot(&mut golden, &file, &args);
        }
    }
    golden.finish();
}

/// `netc ARGS`'s output against the snapshot `file`.
fn snapshot(golden: &mut Golden, file: &str, args: &[&str]) {
    let (status, stdout, stderr) = netc(args);
    if status != 0 {
        golden.fail(format!("netc {}: {stderr}", args.join(" ")));
    }
    golden.check(file.as_ref(), &stdout);
}
