//! Contractions at full width: a large 3x3 convolution (8 images of 64 channels, 56x56, into
//! 128 channels, stride 1, padding 1), forward and both gradients, and a dense layer's product
//! (a batch of 100, 2048 inputs, 1000 outputs: `x · wᵀ`), with each microkernel this CPU has and
//! with 1 and 2 threads. Throughput is in floating-point operations (2 per multiply-add), so
//! criterion's "elem/s" reads as FLOP/s.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use netc::codegen::{compile, CodegenOptions};
use netc::ir::ops::ConvAttrs;
use netc::ir::{Graph, InputKind, OpKind, OutputRole};
use netc_runtime::microkernel::MicrokernelKind;
use std::time::Duration;

const IMAGES: usize = 8;
const CHANNELS: usize = 64;
const SIDE: usize = 56;
const OUT_CHANNELS: usize = 128;
const KERNEL: usize = 3;
const BATCH: usize = 100;
const INPUTS: usize = 2048;
const OUTPUTS: usize = 1000;

/// A graph of one op on data inputs `x0, x1` of these shapes.
fn single_op(kind: OpKind, shapes: [Vec<usize>; 2]) -> Graph {
    let mut graph = Graph::new("contraction");
    let inputs: Vec<_> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, s)| graph.input(InputKind::Data, format!("x{i}"), s))
        .collect();
    let y = graph.op(kind, &inputs, None);
    graph.output(OutputRole::Prediction, "y", y);
    graph
}

fn contraction(c: &mut Criterion) {
    let attrs = ConvAttrs {
        stride: [1, 1],
        pad: [1; 4],
        dilation: [1, 1],
        groups: 1,
    };
    let x = vec![IMAGES, CHANNELS, SIDE, SIDE];
    let w = vec![OUT_CHANNELS, CHANNELS, KERNEL, KERNEL];
    let y = vec![IMAGES, OUT_CHANNELS, SIDE, SIDE];
    let conv = 2 * IMAGES * OUT_CHANNELS * SIDE * SIDE * CHANNELS * KERNEL * KERNEL;
    let dense = OpKind::MatMul {
        transpose_a: false,
        transpose_b: true,
    };
    // (name, op, input shapes, floating-point operations)
    let ops = [
        (
            "conv3x3",
            OpKind::Conv2d(attrs),
            [x.clone(), w.clone()],
            conv,
        ),
        (
            "conv3x3_input_grad",
            OpKind::Conv2dInputGrad(attrs, [SIDE, SIDE]),
            [y.clone(), w],
            conv,
        ),
        (
            "conv3x3_weight_grad",
            OpKind::Conv2dWeightGrad(attrs, [KERNEL, KERNEL]),
            [x, y],
            conv,
        ),
        (
            "dense",
            dense,
            [vec![BATCH, INPUTS], vec![OUTPUTS, INPUTS]],
            2 * BATCH * INPUTS * OUTPUTS,
        ),
    ];
    let mut group = c.benchmark_group("contraction");
    group
        .sample_size(10)
        // Equal samples: linear sampling would run the slowest kernels 55 times.
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for microkernel in MicrokernelKind::ALL.into_iter().filter(|k| k.available()) {
        for threads in [1, 2] {
            for (name, kind, shapes, flops) in &ops {
                let graph = single_op(kind.clone(), shapes.clone());
                let options = CodegenOptions {
                    threads,
                    microkernel,
                    ..CodegenOptions::default()
                };
                let mut program = compile(&graph, &options).expect("compiles");
                for (i, input) in ["x0", "x1"].into_iter().enumerate() {
                    let data = program.input_mut(input).expect("the graph has this input");
                    for (j, v) in data.iter_mut().enumerate() {
                        *v = ((j * 7 + i * 3) % 13) as f32 / 13.0 - 0.5;
                    }
                }
                let id = format!("{name}/{}/{threads}t", microkernel.name());
                group.throughput(Throughput::Elements(*flops as u64));
                group.bench_function(id, |b| b.iter(|| program.run()));
            }
        }
    }
    group.finish();
}

// Without plots: criterion's plotters backend panics where the machine has no fonts.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = contraction
}
criterion_main!(benches);
