//! Fused against unfused code (every fusion pass on, or off: `--unfused`), per pattern and for
//! the whole training step of each zoo model:
//!
//! - `conv_bn_relu`: a 3x3 convolution, batch norm and ReLU, forward and backward (the training
//!   step of a network of just that, 8 images of 32 channels on 32x32);
//! - `bn_relu_depthwise`: a 1x1 convolution, batch norm and ReLU, then a 3x3 depthwise
//!   convolution, forward and backward (8 images of 64 channels on 56x56, MobileNet's): batch
//!   norm's apply and ReLU computed by the depthwise convolution and its weight gradient
//!   (`fuse_prologue`) against a pass of their own;
//! - `elementwise_chain`: `relu(x * scale + shift)` on 8x64x56x56 with per-channel scale and
//!   shift, batch norm's apply and activation;
//! - `pooled_weight_grad`: mnist_cnn's 3x3 max pool and the weight gradient of its first
//!   convolution (5x5, 32 channels) through it at batch 64: the pool storing where its maxima
//!   are and the gradient taken there, against a plain pool, the pool's gradient and a dense
//!   weight gradient;
//! - `optimizer_update`: Adam's update of one million parameters;
//! - `optimizer_update_many`: momentum's update of 57 parameters shaped as a CIFAR ResNet-20's
//!   (16 to 36,864 floats each), one launch against two kernels per parameter;
//! - `softmax_cross_entropy`: the loss and its gradient on 256 rows of 1,000 classes, one pass
//!   over the rows against two;
//! - `step/MODEL`: each zoo model's training step (SGD with momentum) at batch 8 (`mlp` and
//!   `mnist_cnn` at 64).
//!
//! Both sides plan memory the same way; only fusion differs.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use netc::codegen::{compile, compile_network, CodegenOptions};
use netc::ir::ops::{ConvAttrs, MapFn, PoolAttrs};
use netc::ir::{Graph, InputKind, OpKind, OutputRole};
use netc::lower::Param;
use netc::optim::{apply, Optimizer, OptimizerKind};
use netc::passes::PassOptions;
use netc::pipeline::{self, TrainingOptions};
use netc_grammar::diagnostic::SourceFile;
use netc_runtime::init::{InitKind, ParamRole};
use std::collections::BTreeMap;
use std::time::Duration;

const SIDES: [(&str, bool); 2] = [("fused", false), ("unfused", true)];

fn options(unfused: bool) -> CodegenOptions {
    CodegenOptions {
        passes: PassOptions::new(unfused, &[]),
        ..CodegenOptions::default()
    }
}

fn network(
    name: &str,
    text: &str,
    settings: &[(String, netc::front::value::Value)],
) -> netc::front::Network {
    netc::front::run(&SourceFile::new(name, text.to_string()), settings)
        .expect("the network checks")
}

fn training_step(net: &netc::front::Network, batch: usize) -> pipeline::Compiled {
    pipeline::training(
        net,
        &TrainingOptions {
            batch,
            optimizer: Optimizer::new(OptimizerKind::Momentum { momentum: 0.9 }),
            frozen: Vec::new(),
        },
    )
    .expect("lowers")
}

/// Fills every input with small deterministic values, and targets with classes below 10.
fn fill(program: &mut netc::codegen::Program, graph: &Graph) {
    for (i, (_, input)) in graph.inputs().enumerate() {
        let data = program.input_mut(&input.name).expect("an input");
        for (j, v) in data.iter_mut().enumerate() {
            *v = match input.kind {
                InputKind::Target => (j * 7 % 10) as f32,
                _ => ((j * 7 + i * 3) % 13) as f32 / 13.0 - 0.5,
            };
        }
    }
}

/// Ten equal samples per benchmark: whole training steps are too slow for criterion's
/// defaults.
fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
    measurement: Duration,
) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(measurement);
    group
}

fn elementwise_chain() -> Graph {
    let mut g = Graph::new("chain");
    let x = g.input(InputKind::Data, "x", vec![8, 64, 56, 56]);
    let scale = g.input(InputKind::Param, "scale", vec![1, 64, 1, 1]);
    let shift = g.input(InputKind::Param, "shift", vec![1, 64, 1, 1]);
    let scaled = g.op(OpKind::Mul, &[x, scale], None);
    let shifted = g.op(OpKind::Add, &[scaled, shift], None);
    let y = g.op(OpKind::Map(MapFn::Relu), &[shifted], None);
    g.output(OutputRole::Prediction, "y", y);
    g
}

/// mnist_cnn's pool1 over conv1's output z, and conv1's weight gradient through it:
/// `maxpool(z)` and `conv2d_weight_grad(x, maxpool_grad(z, dy))`.
fn pooled_weight_grad() -> Graph {
    let mut g = Graph::new("pooled_weight_grad");
    let x = g.input(InputKind::Data, "x", vec![64, 1, 28, 28]);
    let z = g.input(InputKind::Data, "z", vec![64, 32, 24, 24]);
    let dy = g.input(InputKind::Data, "dy", vec![64, 32, 8, 8]);
    let pool = PoolAttrs {
        kernel: [3, 3],
        stride: [3, 3],
        pad: [0; 4],
        ceil: false,
        include_pad: false,
    };
    let conv = ConvAttrs {
        stride: [1, 1],
        pad: [0; 4],
        dilation: [1, 1],
        groups: 1,
    };
    let y = g.op(OpKind::MaxPool(pool), &[z], None);
    let dz = g.op(OpKind::MaxPoolGrad(pool), &[z, dy], None);
    let dw = g.op(OpKind::Conv2dWeightGrad(conv, [5, 5]), &[x, dz], None);
    g.output(OutputRole::Prediction, "y", y);
    g.output(OutputRole::Prediction, "dw", dw);
    g
}

fn optimizer_update() -> Graph {
    let mut g = Graph::new("adam");
    g.input(InputKind::Param, "w", vec![1000, 1000]);
    let grad = g.input(InputKind::Data, "grad", vec![1000, 1000]);
    let param = Param {
        name: "w".into(),
        role: ParamRole::Weight,
        layer: "dense".into(),
        fan_in: 1000,
    };
    let adam = OptimizerKind::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    apply(
        &mut g,
        &Optimizer::new(adam),
        &[(&param, grad)],
        &mut Vec::new(),
    );
    netc::autodiff::prune(&g)
}

/// Momentum's update of parameters shaped as a CIFAR ResNet-20's (each block's two 3x3
/// convolutions and two batch norms), their gradients given.
fn optimizer_update_many() -> Graph {
    let mut g = Graph::new("momentum");
    let mut shapes: Vec<Vec<usize>> = vec![vec![16, 3, 3, 3]];
    for (channels, blocks) in [(16, 3), (32, 3), (64, 3)] {
        for block in 0..blocks {
            let fan_in = if block == 0 && channels > 16 {
                channels / 2
            } else {
                channels
            };
            shapes.push(vec![channels, fan_in, 3, 3]);
            shapes.push(vec![channels, channels, 3, 3]);
            shapes.extend(std::iter::repeat_n(vec![channels], 4));
        }
    }
    shapes.push(vec![10, 64]);
    shapes.push(vec![10]);
    let params: Vec<(Param, _)> = shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let name = format!("p{i}");
            g.input(InputKind::Param, name.clone(), shape.clone());
            let grad = g.input(InputKind::Data, format!("grad{i}"), shape.clone());
            let param = Param {
                name,
                role: ParamRole::Weight,
                layer: format!("layer{i}"),
                fan_in: shape[1..].iter().product::<usize>().max(1),
            };
            (param, grad)
        })
        .collect();
    let params: Vec<(&Param, _)> = params.iter().map(|(p, g)| (p, *g)).collect();
    let momentum = OptimizerKind::Momentum { momentum: 0.9 };
    apply(&mut g, &Optimizer::new(momentum), &params, &mut Vec::new());
    netc::autodiff::prune(&g)
}

/// The mean softmax cross-entropy of 256 rows of 1,000 logits, and its gradient.
fn softmax_cross_entropy() -> Graph {
    let mut g = Graph::new("softmax_cross_entropy");
    let logits = g.input(InputKind::Param, "logits", vec![256, 1000]);
    let labels = g.input(InputKind::Target, "labels", vec![256]);
    let loss = g.op(OpKind::SoftmaxCrossEntropy, &[logits, labels], None);
    let seed = g.op(
        OpKind::Fill {
            value: 1.0,
            shape: vec![],
        },
        &[],
        None,
    );
    let grad = g.op(
        OpKind::SoftmaxCrossEntropyGrad,
        &[logits, labels, seed],
        None,
    );
    g.output(OutputRole::Loss, "loss", loss);
    g.output(OutputRole::Gradient, "logits", grad);
    g
}

fn patterns(c: &mut Criterion) {
    let mut group = group(c, "fusion", Duration::from_secs(1));
    let conv_bn_relu = network(
        "conv_bn_relu",
        "network conv_bn_relu {\n  input 32x32x32\n  conv 3x3 32 pad=1 bias=false; batchnorm; relu\n  avgpool global; dense 10\n  loss softmax_cross_entropy\n}\n",
        &[],
    );
    let bn_relu_depthwise = network(
        "bn_relu_depthwise",
        "network bn_relu_depthwise {\n  input 64x56x56\n  conv 1x1 64 bias=false; batchnorm; relu\n  depthwise 3x3 pad=1 bias=false; batchnorm; relu\n  avgpool global; dense 10\n  loss softmax_cross_entropy\n}\n",
        &[],
    );
    let graphs = [
        ("conv_bn_relu", training_step(&conv_bn_relu, 8).graph),
        (
            "bn_relu_depthwise",
            training_step(&bn_relu_depthwise, 8).graph,
        ),
        ("elementwise_chain", elementwise_chain()),
        ("pooled_weight_grad", pooled_weight_grad()),
        ("optimizer_update", optimizer_update()),
        ("optimizer_update_many", optimizer_update_many()),
        ("softmax_cross_entropy", softmax_cross_entropy()),
    ];
    for (name, graph) in &graphs {
        for (side, unfused) in SIDES {
            let mut program = compile(graph, &options(unfused)).expect("compiles");
            fill(&mut program, graph);
            group.bench_function(format!("{name}/{side}"), |b| b.iter(|| program.run()));
        }
    }
    group.finish();
}

fn zoo(c: &mut Criterion) {
    let mut group = group(c, "step", Duration::from_secs(2));
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    let mut paths: Vec<_> = std::fs::read_dir(root)
        .expect("the zoo")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8")
            .to_string();
        let text = std::fs::read_to_string(&path).expect("readable");
        let net = network(&name, &text, &[]);
        let batch = if matches!(name.as_str(), "mlp" | "mnist_cnn") {
            64
        } else {
            8
        };
        let training = training_step(&net, batch);
        for (side, unfused) in SIDES {
            let mut program = compile_network(&training, &options(unfused)).expect("compiles");
            program.initialize(InitKind::PyTorch, 0, &BTreeMap::new());
            group.bench_function(format!("{name}/{side}"), |b| b.iter(|| program.run()));
        }
    }
    group.finish();
}

// Without plots: criterion's plotters backend panics where the machine has no fonts.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = patterns, zoo
}
criterion_main!(benches);
