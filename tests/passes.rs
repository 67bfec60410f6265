//! The passes keep meaning: on every zoo model, the interpreter computes the same outputs (loss,
//! prediction, gradients, updates) from the graph before and after each pass and after all of
//! them; every fused op computes in generated code what the interpreter says it does; and the
//! program built with every pass computes what the one built with none does. Snapshots of the
//! IR after the passes are in `ir.rs`.

use crate::codegen::check_graph;
use crate::golden::for_each_model;
use crate::training::{feed, network, options, small};
use netc::codegen::{compile, CodegenOptions, Program};
use netc::interp::{run, EvalContext, Tensor};
use netc::ir::ops::fused::{Arg, Chain};
use netc::ir::ops::MapFn;
use netc::ir::parse::parse;
use netc::ir::print::print;
use netc::ir::verify::verify;
use netc::ir::{Definition, Graph, InputKind, OpKind, OutputRole, ValueId};
use netc::optim::OptimizerKind;
use netc::passes::{self, memory, Pass, PassOptions};
use netc::pipeline::{self, Compiled};
use std::collections::HashMap;
use std::path::Path;

/// Generated code against the interpreter, relative to the largest magnitude (as the codegen
/// tests).
const OP_TOLERANCE: f64 = 1e-4;

/// A zoo model at the test's small sizes: its training step (momentum) and inference pass.
fn stages(path: &Path) -> (String, [Compiled; 2]) {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("UTF-8 name")
        .to_string();
    let net = network(path.to_str().expect("UTF-8 path"), &small(&stem));
    let options = options(2, OptimizerKind::Momentum { momentum: 0.9 });
    let training = pipeline::training(&net, &options).expect("lowers");
    let inference = pipeline::inference(&net, 2).expect("lowers");
    (stem, [training, inference])
}

fn outputs(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let result = run(graph, inputs, &EvalContext::default()).expect("fits");
    graph
        .outputs
        .iter()
        .map(|o| {
            (
                format!("{} {}", o.role.keyword(), o.name),
                result.value(o.value).clone(),
            )
        })
        .collect()
}

/// `graph` compiled with `passes` to run on two threads, its inputs set to `inputs`.
fn loaded(graph: &Graph, passes: PassOptions, inputs: &HashMap<String, Tensor>) -> Program {
    let options = CodegenOptions {
        threads: 2,
        passes,
        ..CodegenOptions::default()
    };
    let mut program = compile(graph, &options).expect("compiles");
    for (name, tensor) in inputs {
        let slot = program.input_mut(name).expect("an input");
        for (to, from) in slot.iter_mut().zip(&tensor.data) {
            *to = *from as f32;
        }
    }
    program
}

#[test]
fn every_pass_keeps_the_meaning_of_every_model() {
    for_each_model(|path| {
        let (stem, stages) = stages(path);
        for compiled in &stages {
            let graph = &compiled.graph;
            let inputs = feed(compiled, 5, 1e-3);
            let expected = outputs(graph, &inputs);
            let mut cases: Vec<(String, Graph)> = Pass::ALL
                .iter()
                .map(|&pass| (pass.name().to_string(), passes::apply(pass, graph)))
                .collect();
            cases.push((
                "every pass".into(),
                passes::run(graph, &PassOptions::default()),
            ));
            for (label, after) in cases {
                let at = format!("{stem} {} after {label}", graph.name);
                if let Err(problems) = verify(&after) {
                    panic!("{at}: {}", problems.join("\n"));
                }
                let parsed = parse(&print(&after)).unwrap_or_else(|e| panic!("{at}: {e}"));
                assert!(parsed == after, "{at}: parse(print(graph)) differs");
                for ((name, want), (_, got)) in expected.iter().zip(outputs(&after, &inputs)) {
                    assert_eq!(want.shape, got.shape, "{at}: {name}");
                    let scale = want.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    for (i, (w, g)) in want.data.iter().zip(&got.data).enumerate() {
                        assert!(
                            (w - g).abs() <= 1e-9 * (scale + 1.0),
                            "{at}: {name} element {i}: {g}, not {w}"
                        );
                    }
                }
            }
        }
    });
}

/// The outputs of `training`'s step compiled with `passes`, by name, after one step from
/// `inputs`.
fn step_outputs(
    training: &Compiled,
    passes: PassOptions,
    inputs: &HashMap<String, Tensor>,
) -> Vec<(String, Vec<f32>)> {
    let passes = PassOptions {
        keep_gradients: true,
        ..passes
    };
    let mut program = loaded(&training.graph, passes, inputs);
    program.run();
    training
        .graph
        .outputs
        .iter()
        .map(|o| {
            let values = program.output(o.role, &o.name).expect("an output");
            (o.name.clone(), values.to_vec())
        })
        .collect()
}

/// That two programs' outputs agree to 1e-5 of each output's largest magnitude.
#[track_caller]
fn assert_agree(label: &str, want: &[(String, Vec<f32>)], got: &[(String, Vec<f32>)]) {
    for ((name, want), (_, got)) in want.iter().zip(got) {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            assert!(
                (w - g).abs() <= 1e-5 * (scale + 1e-3),
                "{label}: `{name}` element {i}: {g}, not {w}"
            );
        }
    }
}

#[test]
fn fused_code_agrees_with_the_interpreter_and_with_unfused_code() {
    for_each_model(|path| {
        let (stem, [training, _]) = stages(path);
        let inputs = feed(&training, 5, 1e-3);
        let fused = passes::run(&training.graph, &PassOptions::default());
        // Every op of the fused graph, fused ones included, in context against the
        // interpreter.
        check_graph(&fused, &inputs, OP_TOLERANCE);
        // The whole step with every pass against none, output by output. `fuse_sums` adds
        // sums in another order (tile by tile as a convolution writes them out),
        // `factor_sums` multiplies in another order (batch norm's `γ`'s gradient is
        // `σ⁻¹ · Σ g · (x − μ)`, not `Σ g · x̂`) and `fold_channel_factors` too (batch norm's
        // apply is `x · a + b`), and batch norm over the few values of these small sizes makes
        // some gradients mostly rounding (over two values, `x̂ = ±1` and `dx` is nearly all
        // cancellation), so they are left out here: their ops are checked above, the meaning
        // of `factor_sums` and `fold_channel_factors` in
        // `every_pass_keeps_the_meaning_of_every_model`, and `fuse_sums`'s whole step on a
        // model without that below.
        let unfused = step_outputs(&training, PassOptions::none(), &inputs);
        let rounding = [Pass::FuseSums, Pass::FactorSums, Pass::FoldChannelFactors];
        let fused = step_outputs(&training, PassOptions::new(false, &rounding), &inputs);
        assert_agree(
            &format!("{stem} with every pass but fuse_sums, factor_sums and fold_channel_factors"),
            &unfused,
            &fused,
        );
    });
}

#[test]
fn batch_norm_gradients_sum_twice_once_factored() {
    let net = network("../models/resnet_small.net", &small("resnet_small"));
    let options = options(4, OptimizerKind::Sgd);
    let training = pipeline::training(&net, &options).expect("lowers");
    // Full-size sums (batch norm's, not the dense layer's bias gradient) per layer.
    let sums = |graph: &Graph| {
        let mut per_layer: HashMap<String, usize> = HashMap::new();
        for op in &graph.ops {
            if matches!(op.kind, OpKind::SumTo(_)) && graph.shape(op.inputs[0]).len() == 4 {
                *per_layer
                    .entry(op.layer.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
        per_layer
    };
    let merged = passes::apply(Pass::MergeDuplicates, &training.graph);
    let factored = passes::apply(Pass::FactorSums, &training.graph);
    let factored = passes::apply(Pass::MergeDuplicates, &factored);
    let (before, after) = (sums(&merged), sums(&factored));
    assert_eq!(before.len(), 9, "{before:?}");
    // Each batch norm's mean, and its gradient's sums of g, g · x̂, g · γ · (x − μ) and
    // -g · γ · σ⁻¹ (one fewer where a shortcut's batch norm sums the same g as the residual
    // branch's last one): factored, g · (x − μ) and g, two fewer.
    for (layer, &count) in &before {
        assert!((4..=5).contains(&count), "{layer}: {count} sums before");
        assert_eq!(after[layer], count - 2, "{layer}: sums after");
    }
}

#[test]
fn a_sum_of_max_pooling_gradient_sums_dy_where_every_window_holds_a_cell() {
    // A 2x2 pool over 3x3 planes padded by `pad` on each side.
    let graph = |pad: usize| {
        let out = (3 + 2 * pad - 2) / 2 + 1;
        let attrs = format!(
            "kernel=2x2 stride=2x2 pad={pad},{pad},{pad},{pad} ceil=false include_pad=false"
        );
        parse(&format!(
            "graph step {{
              %0 = data x : [2,3,3,3]
              %1 = data dy : [2,3,{out},{out}]
              %2 = maxpool_grad(%0, %1) {attrs} : [2,3,3,3]
              %3 = sum_to(%2) shape=[1,3,1,1] : [1,3,1,1]
              output prediction db = %3
              output prediction dx = %2
            }}"
        ))
        .expect("parses")
    };
    let sum_input = |graph: &Graph| {
        let sum = graph
            .ops
            .iter()
            .find(|op| matches!(op.kind, OpKind::SumTo(_)));
        graph.shape(sum.expect("a sum").inputs[0]).clone()
    };
    for (pad, summed) in [(1, vec![2, 3, 2, 2]), (2, vec![2, 3, 3, 3])] {
        let before = graph(pad);
        let after = passes::apply(Pass::FactorSums, &before);
        verify(&after).expect("verifies");
        // With padding as wide as the kernel, a window holds no cell and drops its dy.
        assert_eq!(sum_input(&after), summed, "pad {pad}");
        let dy_len: usize = before.shape(ValueId(1)).iter().product();
        let inputs = HashMap::from([
            (
                "x".to_string(),
                Tensor::new(
                    vec![2, 3, 3, 3],
                    (0..54).map(|i| ((i * 7) % 11) as f64).collect(),
                ),
            ),
            (
                "dy".to_string(),
                Tensor::new(
                    before.shape(ValueId(1)).clone(),
                    (1..=dy_len).map(|i| i as f64).collect(),
                ),
            ),
        ]);
        assert_eq!(
            outputs(&before, &inputs),
            outputs(&after, &inputs),
            "pad {pad}"
        );
    }
}

#[test]
fn a_first_convolution_takes_its_weight_gradient_at_the_pooled_maxima() {
    // mnist_cnn's conv1 (no input gradient) reads its pool's gradient only for its weight
    // gradient, which becomes the pooled op; conv2's unpooled gradient also feeds its input
    // gradient, so its weight gradient stays a contraction.
    let net = network("../models/mnist_cnn.net", &small("mnist_cnn"));
    let training = pipeline::training(&net, &options(2, OptimizerKind::Sgd)).expect("lowers");
    let fused = passes::run(&training.graph, &PassOptions::default());
    let layers = |name: &str| -> Vec<&str> {
        let ops = fused.ops.iter().filter(|op| op.kind.name() == name);
        ops.map(|op| op.layer.as_deref().unwrap_or_default())
            .collect()
    };
    assert_eq!(layers("pooled_conv2d_weight_grad"), ["conv1"]);
    assert_eq!(layers("conv2d_weight_grad"), ["conv2"]);
    assert_eq!(layers("maxpool_grad"), ["pool2"]);
    // pool1 stores where its maxima are for that gradient; pool2 needs no indices.
    assert_eq!(layers("maxpool_with_indices"), ["pool1"]);
    assert_eq!(layers("maxpool"), ["pool2"]);

    // By hand: the rewrite, and what keeps it off: another reader of the unpooled gradient, a
    // padded convolution, a pool that steps over too few outputs, no forward pool to store the
    // indices.
    let graph = |conv_pad: usize, pool: usize, stride: usize, read_dx: bool, forward: bool| {
        let out = 10 + 2 * conv_pad - 2;
        let pooled = (out - pool) / stride + 1;
        let attrs =
            format!("kernel={pool}x{pool} stride={stride}x{stride} pad=0,0,0,0 ceil=false include_pad=false");
        let dx = if read_dx {
            "output prediction dx = %4"
        } else {
            ""
        };
        let y = if forward {
            format!("%3 = maxpool(%1) {attrs} : [2,4,{pooled},{pooled}]")
        } else {
            format!("%3 = avgpool(%1) {attrs} : [2,4,{pooled},{pooled}]")
        };
        parse(&format!(
            "graph step {{
              %0 = data x : [2,2,10,10]
              %1 = data z : [2,4,{out},{out}]
              %2 = data dy : [2,4,{pooled},{pooled}]
              {y}
              %4 = maxpool_grad(%1, %2) {attrs} : [2,4,{out},{out}]
              %5 = conv2d_weight_grad(%0, %4) stride=1x1 pad={conv_pad},{conv_pad},{conv_pad},{conv_pad} dilation=1x1 groups=2 kernel=3x3 : [4,1,3,3]
              output prediction y = %3
              output prediction dw = %5
              {dx}
            }}"
        ))
        .expect("parses")
    };
    let cases = [
        ((0, 3, 3, false, true), true),
        ((0, 2, 2, false, true), true),
        ((0, 3, 3, true, true), false),
        ((1, 3, 3, false, true), false),
        ((0, 3, 1, false, true), false),
        ((0, 3, 3, false, false), false),
    ];
    for ((conv_pad, pool, stride, read_dx, forward), pooled) in cases {
        let before = graph(conv_pad, pool, stride, read_dx, forward);
        let after = passes::apply(Pass::PoolWeightGrads, &before);
        verify(&after).expect("verifies");
        let rewritten = after
            .ops
            .iter()
            .any(|op| op.kind.name() == "pooled_conv2d_weight_grad");
        assert_eq!(
            rewritten, pooled,
            "{conv_pad} {pool} {stride} {read_dx} {forward}"
        );
        let inputs: HashMap<String, Tensor> = before
            .inputs()
            .map(|(value, input)| {
                let shape = before.shape(value).clone();
                let len: usize = shape.iter().product();
                // Few distinct values, so that windows hold equal maxima.
                let data = (0..len).map(|i| ((i * 7 + len) % 5) as f64 - 2.0).collect();
                (input.name.clone(), Tensor::new(shape, data))
            })
            .collect();
        assert_eq!(outputs(&before, &inputs), outputs(&after, &inputs));
    }
}

#[test]
fn relu_masks_after_batch_norm_come_from_the_convolution_output() {
    // MobileNet's every ReLU follows a batch norm: each gradient mask is computed in its chain
    // from the convolution's output, which the chain reads for batch norm's gradient anyway,
    // not from the ReLU's output. Where a bias is all that comes between (AlexNet), the
    // convolution's output is never written, so each mask is the ReLU's output's.
    let relu = OpKind::Map(MapFn::Relu);
    for (model, from_relu) in [("mobilenet_v1", false), ("alexnet", true)] {
        let net = network(&format!("../models/{model}.net"), &small(model));
        let training = pipeline::training(&net, &options(2, OptimizerKind::Sgd)).expect("lowers");
        let fused = passes::run(&training.graph, &PassOptions::default());
        // Whether the result of a chain's last step is a relu's.
        let computes_relu = |value: ValueId| match fused.values[value.0].definition {
            Definition::Op(op) => match &fused.ops[op].kind {
                OpKind::Fused(chain) => chain.steps.last().is_some_and(|s| s.kind == relu),
                kind => *kind == relu,
            },
            Definition::Input(_) => false,
        };
        let mut masks = Vec::new();
        for op in &fused.ops {
            let OpKind::Fused(chain) = &op.kind else {
                continue;
            };
            for step in chain
                .steps
                .iter()
                .filter(|s| s.kind == OpKind::Map(MapFn::Step))
            {
                masks.push(match step.args[0] {
                    Arg::Step(i) => chain.steps[i].kind == relu,
                    Arg::Input(i) => computes_relu(op.inputs[i]),
                });
            }
        }
        assert!(!masks.is_empty(), "{model}");
        assert!(masks.iter().all(|&m| m == from_relu), "{model}: {masks:?}");
    }
}

#[test]
fn batch_norm_masked_gradients_are_summed_but_not_written() {
    // In MobileNet, the ReLU-masked gradient `dy · step(z)` that batch norm's gradient sums is
    // computed from `dy` and `x` by the sums and by the input gradient's chain alike: a chain
    // that sums it on its own (not in a contraction's write-out) writes nothing else.
    let net = network("../models/mobilenet_v1.net", &small("mobilenet_v1"));
    let training = pipeline::training(&net, &options(2, OptimizerKind::Sgd)).expect("lowers");
    let fused = passes::run(&training.graph, &PassOptions::default());
    let mut masked_sums = 0;
    for op in &fused.ops {
        let OpKind::Fused(chain) = &op.kind else {
            continue;
        };
        let masks = chain
            .steps
            .iter()
            .any(|s| s.kind == OpKind::Map(MapFn::Step));
        if !masks || chain.contraction().is_some() {
            continue;
        }
        let sums = |&result: &usize| matches!(chain.steps[result].kind, OpKind::SumTo(_));
        if chain.results.iter().any(sums) {
            masked_sums += 1;
            assert!(chain.results.iter().all(sums), "{:?}", op.layer);
        }
    }
    // Every batch norm's masked gradient sums in the write-out of the input gradient that
    // gives it dy (a pointwise or a depthwise convolution's), but the last one's, whose dy
    // comes from the average pooling's gradient.
    assert_eq!(masked_sums, 1);
}

#[test]
fn convolutions_compute_their_input_and_it_is_not_kept() {
    // In MobileNet, batch norm's apply and ReLU before each of the 13 depthwise convolutions
    // and each of the 13 pointwise ones become the prologue of the convolution and of its
    // weight gradient: nothing writes their result, so the memory plan's peak (224x224
    // images, batch 8) falls by more than a third.
    let net = network("../models/mobilenet_v1.net", &[]);
    let training = pipeline::training(&net, &options(8, OptimizerKind::Sgd)).expect("lowers");
    let with_prologues = |on: bool| {
        let off = if on { vec![] } else { vec![Pass::FusePrologue] };
        passes::run(&training.graph, &PassOptions::new(false, &off))
    };
    let fused = with_prologues(true);
    let mut prologues: HashMap<&str, usize> = HashMap::new();
    for op in &fused.ops {
        let OpKind::Fused(chain) = &op.kind else {
            continue;
        };
        let Some(around) = chain.contraction().filter(|a| !a.prologue.is_empty()) else {
            continue;
        };
        let relu = OpKind::Map(MapFn::Relu);
        assert_eq!(around.prologue.last().map(|s| &s.kind), Some(&relu));
        *prologues.entry(around.contraction.kind.name()).or_default() += 1;
    }
    let counts = HashMap::from([("conv2d", 26), ("conv2d_weight_grad", 26)]);
    assert_eq!(prologues, counts);
    let (on, off) = (allocated(&fused), allocated(&with_prologues(false)));
    assert!(
        3 * on < 2 * off,
        "{on} floats with prologues, {off} without"
    );
}

#[test]
fn prologues_change_no_bit_of_the_step() {
    // A prologue computes x with the ops of the op it replaces, in their order, so the whole
    // step (every gradient, update and statistic) is the same to the bit with it and without
    // it: batch norm over the few values of these small sizes would turn any other difference
    // into a large one.
    for stem in ["mobilenet_v1", "mobilenet_v2"] {
        let path = format!("../models/{stem}.net");
        let (_, [training, _]) = stages(Path::new(&path));
        let inputs = feed(&training, 5, 1e-3);
        let with = step_outputs(&training, PassOptions::default(), &inputs);
        let off = PassOptions::new(false, &[Pass::FusePrologue]);
        let without = step_outputs(&training, off, &inputs);
        for ((name, with), (_, without)) in with.iter().zip(&without) {
            let differ = with.iter().zip(without);
            let differ = differ.filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{stem}: {differ} elements of `{name}` differ");
        }
    }
}

#[test]
fn convolutions_store_what_they_compute_for_other_readers() {
    // In resnet_small (16x16 images, a block per stage) at batch 16, where one task stages
    // each image's x whole, the first convolution of stage 1's block computes the stem's
    // output (batch norm's apply and ReLU) and that of stage 2's the block output before it (the
    // residual sum too) and store them for the residual sums and the backward pass; and the
    // input gradients of stride-1 convolutions compute batch norm's gradient (their dy) and
    // store it for the weight gradient. Each means what the ops it replaces did, to the bit.
    let net = network("../models/resnet_small.net", &[("size", 16), ("n", 1)]);
    let momentum = OptimizerKind::Momentum { momentum: 0.9 };
    let training = pipeline::training(&net, &options(16, momentum)).expect("lowers");
    let without = PassOptions::new(false, &[Pass::StorePrologue]);
    let graph = passes::run(&training.graph, &PassOptions::default());
    let mut stored: HashMap<&str, usize> = HashMap::new();
    for op in &graph.ops {
        if let OpKind::Fused(chain) = &op.kind {
            if chain.stored_prologue().is_some() {
                let around = chain.contraction().expect("a contraction");
                *stored.entry(around.contraction.kind.name()).or_default() += 1;
            }
        }
    }
    let counts = HashMap::from([("conv2d", 2), ("conv2d_input_grad", 3)]);
    assert_eq!(stored, counts);
    let inputs = feed(&training, 5, 1e-3);
    let before = passes::run(&training.graph, &without);
    for ((name, want), (_, got)) in outputs(&before, &inputs)
        .iter()
        .zip(outputs(&graph, &inputs))
    {
        let scale = want.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = want
            .data
            .iter()
            .zip(&got.data)
            .map(|(w, g)| (w - g).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-9 * (scale + 1.0), "{name}: off by {worst}");
    }
    let with = step_outputs(&training, PassOptions::default(), &inputs);
    let without = step_outputs(&training, without, &inputs);
    for ((name, with), (_, without)) in with.iter().zip(&without) {
        let differ = with.iter().zip(without);
        let differ = differ.filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{differ} elements of `{name}` differ");
    }
}

#[test]
fn an_update_in_place_waits_for_the_readers_of_views_of_the_old_value() {
    // A parameter's gradient is ready at once, and a reshape of the parameter is read last:
    // the update, computed in the parameter's buffer, must wait for that reader as for the
    // parameter's own (a prologue reads batch norm's scale through such a reshape).
    let mut graph = Graph::new("view_of_a_parameter");
    let p = graph.input(InputKind::Param, "p", vec![4]);
    let x = graph.input(InputKind::Data, "x", vec![4]);
    let gradient = graph.op(OpKind::Mul, &[x, x], None);
    let view = graph.op(OpKind::Reshape(vec![1, 4]), &[p], None);
    let late = graph.op(OpKind::Map(MapFn::Exp), &[x], None);
    let late = graph.op(OpKind::Reshape(vec![1, 4]), &[late], None);
    let prediction = graph.op(OpKind::Mul, &[view, late], None);
    let update = graph.op(OpKind::Sub, &[p, gradient], None);
    graph.output(OutputRole::Prediction, "y", prediction);
    graph.output(OutputRole::Gradient, "p", gradient);
    graph.output(OutputRole::Update, "p", update);
    verify(&graph).expect("a valid graph");
    let inputs = HashMap::from([
        (
            "p".to_string(),
            Tensor::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]),
        ),
        (
            "x".to_string(),
            Tensor::new(vec![4], vec![0.5, -0.5, 1.5, -1.5]),
        ),
    ]);
    let want = outputs(&graph, &inputs);
    let mut program = loaded(&graph, PassOptions::default(), &inputs);
    program.run();
    for (name, want) in &want {
        let (role, name) = name.split_once(' ').expect("a role and a name");
        let role = graph.outputs.iter().find(|o| o.role.keyword() == role);
        let got = program.output(role.expect("an output").role, name);
        for (got, want) in got.expect("an output").iter().zip(&want.data) {
            let close = (*got as f64 - want).abs() <= 1e-6 * want.abs();
            assert!(close, "{name}: {got}, not {want}");
        }
    }
}

#[test]
fn sums_in_one_pass_train_as_separate_sums_do() {
    let net = network("../models/resnet_small.net", &small("resnet_small"));
    let options = options(4, OptimizerKind::Momentum { momentum: 0.9 });
    let training = pipeline::training(&net, &options).expect("lowers");
    let inputs = feed(&training, 5, 1e-3);
    let fused = passes::run(&training.graph, &PassOptions::default());
    let merged: Vec<&Chain> = fused
        .ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Fused(chain) if !chain.results.is_empty() => Some(chain),
            _ => None,
        })
        .collect();
    // Per batch norm (9): its mean and variance in the convolution's write-out, and its
    // gradient's sums in the next one's input gradient or with the activation's gradient.
    assert_eq!(merged.len(), 2 * 9, "sums fused");
    let statistics = merged.iter().filter(|chain| {
        chain
            .steps
            .iter()
            .any(|step| matches!(step.kind, OpKind::SumSquaredDeviationsTo(_)))
    });
    assert_eq!(statistics.count(), 9, "variances in a write-out");
    let separate = step_outputs(
        &training,
        PassOptions::new(false, &[Pass::FuseSums]),
        &inputs,
    );
    let together = step_outputs(&training, PassOptions::default(), &inputs);
    assert_agree("resnet_small with fuse_sums", &separate, &together);
}

#[test]
fn grouped_launches_compute_what_a_launch_each_does() {
    // mlp's first weight is 200,704 floats, so its update spans many tasks, and Adam updates
    // three tensors per parameter, each reading the ones before at the same positions.
    let net = network("../models/mlp.net", &[]);
    let options = options(4, OptimizerKind::from_name("adam").expect("known"));
    let training = pipeline::training(&net, &options).expect("lowers");
    let inputs = feed(&training, 7, 1e-3);
    let run = |passes: PassOptions| {
        let mut program = loaded(&training.graph, passes, &inputs);
        let kernels = program.layout().kernels.len();
        for step in 1..=3 {
            program.input_mut("step").expect("Adam's step")[0] = step as f32;
            program.run();
            program.apply_updates();
        }
        let updates: Vec<Vec<f32>> = training
            .graph
            .outputs
            .iter()
            .filter(|o| memory::host_reads(o.role, false))
            .map(|o| program.output(o.role, &o.name).expect("an output").to_vec())
            .collect();
        (kernels, updates)
    };
    // Every update at the end of the step, as differentiation leaves them.
    let (grouped_kernels, grouped) = run(PassOptions::new(false, &[Pass::ScheduleUpdates]));
    let (separate_kernels, separate) = run(PassOptions::new(
        false,
        &[Pass::ScheduleUpdates, Pass::GroupLaunches],
    ));
    // Six parameters, each with two moments: 18 update kernels become one launch, and the two
    // bias corrections, which every update reads whole, a launch before it; the loss and its
    // gradient share their pass over the rows (three kernels become two).
    assert_eq!(separate_kernels - grouped_kernels, 19);
    // Each element is computed by the same instructions either way: equal to the bit.
    assert!(grouped == separate, "grouped launches changed the results");
}

#[test]
fn no_two_values_live_at_once_share_memory() {
    for_each_model(|path| {
        let (stem, stages) = stages(path);
        for compiled in &stages {
            let graph = passes::run(&compiled.graph, &PassOptions::default());
            let plan = memory::plan(&graph, true, true, false);
            let values = graph.values.len();
            // Each value's storage (a view's, such as a reshape's, is its input's), and the
            // ops it lives over: from the op that defines it to its last reader through any
            // name; inputs and the outputs the host reads the whole step.
            let mut storage: Vec<usize> = (0..values).collect();
            let mut life: Vec<(usize, usize)> = vec![(0, 0); values];
            let everything = (0, graph.ops.len());
            for (index, op) in graph.ops.iter().enumerate() {
                if memory::view_of(&graph, op).is_some() {
                    storage[op.output.0] = storage[op.inputs[0].0];
                }
                life[storage[op.output.0]].1 = index;
                if storage[op.output.0] == op.output.0 {
                    life[op.output.0] = (index, index);
                }
                for input in &op.inputs {
                    let owner = storage[input.0];
                    life[owner].1 = life[owner].1.max(index);
                }
            }
            for (id, _) in graph.inputs() {
                life[storage[id.0]] = everything;
            }
            for output in graph
                .outputs
                .iter()
                .filter(|o| memory::host_reads(o.role, false))
            {
                life[storage[output.value.0]] = everything;
            }
            // An update computed in place is written over the input it replaces, which it
            // is the last to read.
            let in_place: Vec<(usize, usize)> = graph
                .outputs
                .iter()
                .filter_map(|o| Some((o.value.0, graph.find_input(&o.name)?.0)))
                .filter(|&(update, input)| plan.buffer_of[update] == plan.buffer_of[input])
                .collect();
            for a in 0..values {
                for b in a + 1..values {
                    let (sa, sb) = (storage[a], storage[b]);
                    let meet = life[sa].0 <= life[sb].1 && life[sb].0 <= life[sa].1;
                    let replaces = in_place.contains(&(sb, sa)) || in_place.contains(&(sa, sb));
                    assert!(
                        sa == sb
                            || !meet
                            || replaces
                            || !plan.overlap(plan.buffer_of[a], plan.buffer_of[b]),
                        "{stem} {}: %{a} and %{b} are live together in the same memory",
                        graph.name
                    );
                }
            }
        }
    });
}

/// `schedule_updates` runs each optimizer update as soon as it can: after the last op it must
/// follow (those computing its inputs, and the other readers of the parameter or state it
/// replaces, so that it is still computed in place) only other updates and what they alone
/// read run before it. Then no gradient lives to the end of the step: on resnet18 (full size,
/// momentum, batch 8) the memory plan is smaller by more than half the weights.
/// The floats a graph's memory plan allocates (the arena and the buffers outside it).
fn allocated(graph: &Graph) -> usize {
    let plan = memory::plan(graph, true, true, false);
    let allocations = plan.buffer_floats.iter().zip(&plan.inside);
    allocations
        .filter(|(_, inside)| inside.is_none())
        .map(|(floats, _)| floats)
        .sum()
}

#[test]
fn updates_run_as_soon_as_they_can_and_lower_the_peak() {
    for_each_model(|path| {
        let (stem, [training, _]) = stages(path);
        let graph = passes::run(&training.graph, &PassOptions::default());
        let producer = |value: ValueId| match graph.values[value.0].definition {
            Definition::Op(op) => Some(op),
            Definition::Input(_) => None,
        };
        let updates: Vec<usize> = graph
            .outputs
            .iter()
            .filter(|o| o.role == OutputRole::Update)
            .filter_map(|o| producer(o.value))
            .collect();
        let readers = |value: ValueId| {
            let ops = graph.ops.iter().enumerate();
            ops.filter(move |(_, op)| op.inputs.contains(&value))
                .map(|(index, _)| index)
        };
        // The readers of a value's storage: its own, and those of its views (a reshape of a
        // batch norm parameter that a prologue reads, say), which an update in place follows.
        let storage_readers = |value: ValueId| {
            let (mut found, mut values) = (Vec::new(), vec![value]);
            while let Some(value) = values.pop() {
                for reader in readers(value) {
                    found.push(reader);
                    if memory::view_of(&graph, &graph.ops[reader]).is_some() {
                        values.push(graph.ops[reader].output);
                    }
                }
            }
            found
        };
        let optimizer = |index: usize| {
            updates.contains(&index)
                || readers(graph.ops[index].output).all(|r| updates.contains(&r))
        };
        for output in graph
            .outputs
            .iter()
            .filter(|o| o.role == OutputRole::Update)
        {
            let update = producer(output.value).expect("an update is computed");
            let op = &graph.ops[update];
            let mut before: Vec<usize> = op.inputs.iter().filter_map(|&v| producer(v)).collect();
            if let Some(old) = graph.find_input(&output.name) {
                before.extend(storage_readers(old).into_iter().filter(|&r| r != update));
            }
            let last = before.into_iter().max().map_or(0, |m| m + 1);
            for between in last..update {
                assert!(
                    optimizer(between),
                    "{stem}: the update of {} waits behind op {between} ({})",
                    output.name,
                    graph.ops[between].kind.name()
                );
            }
        }
    });
    let net = network("../models/resnet18.net", &[]);
    let training = pipeline::training(&net, &options(8, OptimizerKind::Momentum { momentum: 0.9 }))
        .expect("lowers");
    let floats = |passes: PassOptions| allocated(&passes::run(&training.graph, &passes));
    let weights: usize = training
        .params
        .iter()
        .map(|p| {
            training
                .graph
                .shape(training.graph.find_input(&p.name).unwrap())
                .iter()
                .product::<usize>()
        })
        .sum();
    let scheduled = floats(PassOptions::default());
    let at_the_end = floats(PassOptions::new(false, &[Pass::ScheduleUpdates]));
    assert!(
        scheduled + weights / 2 < at_the_end,
        "resnet18: {scheduled} floats with the updates scheduled, {at_the_end} without"
    );
}
