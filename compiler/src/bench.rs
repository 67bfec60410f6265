//! `netc bench`: the training step of a network (SGD with momentum), JIT-compiled and timed
//! on synthetic data by the runtime's `bench`, with the time to compile (the front end's
//! output to machine code; allocating the buffers, which the first step touches, is not counted).

use crate::codegen::{compile_network, CodegenOptions};
use crate::front::Network;
use crate::optim::{Optimizer, OptimizerKind};
use crate::pipeline::{self, TrainingOptions};
use netc_runtime::bench::{profile_steps, time_steps, BenchReport};
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first: the first touches every page of every buffer.
    pub warmup: usize,
    /// Also profile as many steps again, kernel by kernel.
    pub profile: bool,
    pub codegen: CodegenOptions,
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
    let lowered = started.elapsed();
    let mut program = compile_network(&training, &options.codegen).map_err(|e| e.to_string())?;
    let compile_time = lowered + program.compile_time;
    let step_times = time_steps(&mut program, options.warmup, options.steps);
    let profile = options
        .profile
        .then(|| profile_steps(&mut program, options.warmup + options.steps, options.steps));
    Ok(BenchReport {
        network: network.name.clone(),
        batch: options.batch,
        threads: program.threads(),
        microkernel: program.microkernel.name(),
        compile_time: Some(compile_time),
        kernels: program.layout().kernels.len(),
        step_times,
        macs_per_example: network.cost().macs,
        profile,
    })
}
