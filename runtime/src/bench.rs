//! Timing a compiled training step on synthetic data, for `netc bench` and a compiled
//! model's `bench`. It reports what a practitioner compares across frameworks: images per
//! second and milliseconds per step (the median of the timed steps, after warm-up steps), and
//! the arithmetic rate achieved.
//!
//! The rate counts a training step as three times the forward pass's multiply-accumulates
//! (forward, input gradient, weight gradient; the summary's count), two flops each. It leaves
//! out elementwise work, and counts the first layer's input gradient that netc never computes,
//! so it is the conventional figure rather than an exact one.

use crate::init::InitKind;
use crate::program::{InputKind, OutputRole, Program};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::time::{Duration, Instant};

/// What was measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub network: String,
    pub batch: usize,
    pub threads: usize,
    pub microkernel: &'static str,
    /// From the network to runnable code: lowering, differentiation and code generation
    /// (none for linked code).
    pub compile_time: Option<Duration>,
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
             {}\
             step        {:>10.3} ms (median of {} steps)\n\
             throughput  {:>10.1} images/s\n\
             arithmetic  {:>10.1} GFLOP/s\n",
            self.network,
            self.batch,
            self.threads,
            self.microkernel,
            match self.compile_time {
                Some(time) => format!(
                    "compile     {:>10.1} ms ({} kernels)\n",
                    time.as_secs_f64() * 1e3,
                    self.kernels
                ),
                None => format!("kernels     {:>10}\n", self.kernels),
            },
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
            "compile_ms": self.compile_time.map(|t| t.as_secs_f64() * 1e3),
            "kernels": self.kernels,
            "step_ms_median": self.median_step().as_secs_f64() * 1e3,
            "step_ms": self.step_times.iter().map(|t| t.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "images_per_s": self.images_per_second(),
            "gflops": self.gflops(),
        })
    }
}

/// Times `steps` steps of `program` (a training step) after `warmup` untimed ones (the first
/// touches every page of every buffer), on random data and labels from fixed seeds.
pub fn time_steps(program: &mut Program, warmup: usize, steps: usize) -> Vec<Duration> {
    program.initialize(InitKind::PyTorch, 1, &Default::default());
    let layout = program.layout().clone();
    let classes = layout
        .output(OutputRole::Prediction, "prediction")
        .and_then(|p| p.shape.get(1).copied())
        .unwrap_or(1);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for input in &layout.inputs {
        let slot = program.input_mut(&input.name).expect("an input");
        match (input.kind, input.name.as_str()) {
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
    let mut times = Vec::with_capacity(steps);
    for step in 0..warmup + steps {
        if let Some(slot) = program.input_mut("step") {
            slot[0] = (step + 1) as f32;
        }
        let started = Instant::now();
        program.run();
        program.apply_updates();
        if step >= warmup {
            times.push(started.elapsed());
        }
    }
    times
}
