//! `netc bench`: times the compiled training step of a network on synthetic data. It reports
//! what a practitioner compares across frameworks: images per second and milliseconds per step
//! (the median of the timed steps, after warm-up steps), the time to compile, and the
//! arithmetic rate achieved.
//!
//! The rate counts a training step as three times the forward pass's multiply-accumulates
//! (forward, input gradient, weight gradient; the summary's count), two flops each. It leaves
//! out elementwise work, and counts the first layer's input gradient that netc never computes,
//! so it is the conventional figure rather than an exact one.

use crate::codegen::{compile, CodegenOptions};
use crate::front::Network;
use crate::init::initial_values;
use crate::ir::{InputKind, OutputRole};
use crate::optim::{Optimizer, OptimizerKind};
use crate::pipeline::{self, TrainingOptions};
use netc_runtime::recipe::InitKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first: the first touches every page of every buffer.
    pub warmup: usize,
    pub codegen: CodegenOptions,
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub network: String,
    pub batch: usize,
    pub threads: usize,
    pub microkernel: &'static str,
    /// From the network to runnable code: lowering, differentiation and code generation.
    pub compile_time: Duration,
    pub kernels: usize,
    /// Every timed step, in order.
    pub step_times: Vec<Duration>,
    /// Forward multiply-accumulates per example.
    pub macs_per_example: u64,
}

impl BenchReport {
    pub fn median_step(&self) -> Duration {
        let mut sorted = self.step_times.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    }

    pub fn images_per_second(&self) -> f64 {
        self.batch as f64 / self.median_step().as_secs_f64()
    }

    pub fn gflops(&self) -> f64 {
        let flops = 2.0 * 3.0 * self.macs_per_example as f64 * self.batch as f64;
        flops / self.median_step().as_secs_f64() / 1e9
    }

    pub fn text(&self) -> String {
        format!(
            "{}: batch {}, {} threads, {} microkernel\n\
             compile     {:>10.1} ms ({} kernels)\n\
             step        {:>10.3} ms (median of {} steps)\n\
             throughput  {:>10.1} images/s\n\
             arithmetic  {:>10.1} GFLOP/s\n",
            self.network,
            self.batch,
            self.threads,
            self.microkernel,
            self.compile_time.as_secs_f64() * 1e3,
            self.kernels,
            self.median_step().as_secs_f64() * 1e3,
            self.step_times.len(),
            self.images_per_second(),
            self.gflops(),
        )
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "network": self.network,
            "batch": self.batch,
            "threads": self.threads,
            "microkernel": self.microkernel,
            "compile_ms": self.compile_time.as_secs_f64() * 1e3,
            "kernels": self.kernels,
            "step_ms_median": self.median_step().as_secs_f64() * 1e3,
            "step_ms": self.step_times.iter().map(|t| t.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "images_per_s": self.images_per_second(),
            "gflops": self.gflops(),
        })
    }
}

/// Compiles `network`'s training step (SGD with momentum) and times it.
pub fn bench(network: &Network, options: &BenchOptions) -> Result<BenchReport, String> {
    if options.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    let started = Instant::now();
    let training = pipeline::training(
        network,
        &TrainingOptions {
            batch: options.batch,
            optimizer: Optimizer::new(OptimizerKind::Momentum { momentum: 0.9 }),
            frozen: Vec::new(),
        },
    )?;
    let mut program = compile(&training.graph, &options.codegen).map_err(|e| e.to_string())?;
    let compile_time = started.elapsed();

    for (name, tensor) in initial_values(&training, InitKind::PyTorch, 1) {
        let slot = program.input_mut(&name).expect("parameters are inputs");
        for (to, from) in slot.iter_mut().zip(&tensor.data) {
            *to = *from as f32;
        }
    }
    let classes = training
        .graph
        .find_output(OutputRole::Prediction, "prediction")
        .and_then(|p| training.graph.shape(p).get(1).copied())
        .unwrap_or(1);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let inputs: Vec<(String, InputKind)> = training
        .graph
        .inputs()
        .map(|(_, input)| (input.name.clone(), input.kind))
        .collect();
    for (name, kind) in inputs {
        let slot = program.input_mut(&name).expect("an input");
        match (kind, name.as_str()) {
            (InputKind::Data, _) => slot
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-1.0..1.0)),
            (InputKind::Target, "labels") => slot
                .iter_mut()
                .for_each(|v| *v = rng.random_range(0..classes) as f32),
            (InputKind::Target, _) => slot
                .iter_mut()
                .for_each(|v| *v = rng.random_range(0.0..1.0)),
            (InputKind::Scalar, "lr") => slot[0] = 0.01,
            (InputKind::Scalar, _) | (InputKind::Param | InputKind::State, _) => {}
        }
    }
    let mut step_times = Vec::with_capacity(options.steps);
    for step in 0..options.warmup + options.steps {
        if let Some(slot) = program.input_mut("step") {
            slot[0] = (step + 1) as f32;
        }
        let started = Instant::now();
        program.run();
        program.apply_updates();
        if step >= options.warmup {
            step_times.push(started.elapsed());
        }
    }
    Ok(BenchReport {
        network: network.name.clone(),
        batch: options.batch,
        threads: program.threads(),
        microkernel: program.microkernel.name(),
        compile_time,
        kernels: program.kernel_count,
        step_times,
        macs_per_example: network.cost().macs,
    })
}
