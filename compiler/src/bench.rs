//! `netc bench`: the training step of a network (SGD with momentum), JIT-compiled and timed
//! on synthetic data by the runtime's `bench`, with the time to compile (the front end's
//! output to machine code; allocating the buffers, which the first step touches, is not counted);
//! and `--compare-unfused`, the step compiled with and without the fusion passes and timed in
//! turn, round by round, so that a change of the machine's load falls on both sides
//! (`--compare-without PASS`: with and without some passes, to measure what they buy).

use crate::codegen::{compile_network, CodegenOptions};
use crate::front::Network;
use crate::optim::{Optimizer, OptimizerKind};
use crate::passes::{Pass, PassOptions};
use crate::pipeline::{self, Compiled, TrainingOptions};
use netc_runtime::bench::{
    median, prepare_steps, profile_steps, time_step, time_steps, BenchReport,
};
use netc_runtime::program::Program;
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
    /// Also profile as many steps again, kernel by kernel.
    pub profile: bool,
    pub codegen: CodegenOptions,
}

/// Compiles `network`'s training step (SGD with momentum) and times it.
pub fn bench(network: &Network, options: &BenchOptions) -> Result<BenchReport, String> {
    let started = Instant::now();
    let training = training_step(network, options)?;
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

/// Rounds of `--compare-unfused` unless told: each times `steps` steps of one program, then of
/// the other.
pub const DEFAULT_COMPARISON_ROUNDS: usize = 5;

/// The training step compiled two ways (fused and unfused, or with and without some passes),
/// measured in alternation.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The two sides' names: `fused` and `unfused`, or `with` and `without`.
    pub sides: [&'static str; 2],
    /// What the second side leaves out, for the report's first line.
    pub without: String,
    pub network: String,
    pub batch: usize,
    pub threads: usize,
    pub microkernel: &'static str,
    /// Timed steps of each program per round.
    pub steps: usize,
    /// Each round's median step, first side then second.
    pub rounds: Vec<[Duration; 2]>,
}

/// Compiles `network`'s training step twice, with `options`' passes and with every fusion pass
/// off, and times them in turn: `rounds` rounds of `options.steps` steps of each, the one that
/// goes first changing every round.
pub fn compare_unfused(
    network: &Network,
    options: &BenchOptions,
    rounds: usize,
) -> Result<Comparison, String> {
    let unfused = PassOptions::unfused();
    let sides = ["fused", "unfused"];
    compare(
        network,
        options,
        (unfused, sides, "the fusion passes"),
        rounds,
    )
}

/// [`compare_unfused`], the second program compiled with `passes` off too.
pub fn compare_without(
    network: &Network,
    options: &BenchOptions,
    passes: &[Pass],
    rounds: usize,
) -> Result<Comparison, String> {
    let mut without = options.codegen.passes.clone();
    for &pass in passes {
        if without.enabled(pass) {
            without.disabled.push(pass);
        }
    }
    let names: Vec<&str> = passes.iter().map(|p| p.name()).collect();
    let sides = ["with", "without"];
    compare(
        network,
        options,
        (without, sides, &names.join(", ")),
        rounds,
    )
}

/// `network`'s training step compiled with `options`' passes and with `other`'s, timed in turn.
fn compare(
    network: &Network,
    options: &BenchOptions,
    (other, sides, without): (PassOptions, [&'static str; 2], &str),
    rounds: usize,
) -> Result<Comparison, String> {
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let training = training_step(network, options)?;
    let other = CodegenOptions {
        passes: other,
        ..options.codegen.clone()
    };
    let mut programs = Vec::with_capacity(2);
    for codegen in [&options.codegen, &other] {
        let mut program = compile_network(&training, codegen).map_err(|e| e.to_string())?;
        prepare_steps(&mut program);
        for step in 0..options.warmup {
            time_step(&mut program, step);
        }
        programs.push(program);
    }
    let rounds = (0..rounds)
        .map(|round| {
            let first = options.warmup + round * options.steps;
            let mut medians = [Duration::ZERO; 2];
            for side in [round % 2, 1 - round % 2] {
                medians[side] = median_step(&mut programs[side], first, options.steps);
            }
            medians
        })
        .collect();
    Ok(Comparison {
        sides,
        without: without.to_string(),
        network: network.name.clone(),
        batch: options.batch,
        threads: programs[0].threads(),
        microkernel: programs[0].microkernel.name(),
        steps: options.steps,
        rounds,
    })
}

/// The training step of `network` at `options`' batch, as `bench` times it.
fn training_step(network: &Network, options: &BenchOptions) -> Result<Compiled, String> {
    if options.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    pipeline::training(
        network,
        &TrainingOptions {
            batch: options.batch,
            optimizer: Optimizer::new(OptimizerKind::Momentum { momentum: 0.9 }),
            frozen: Vec::new(),
        },
    )
}

/// The median time of steps `first..first + steps` (at least one) of a readied program.
fn median_step(program: &mut Program, first: usize, steps: usize) -> Duration {
    let times: Vec<Duration> = (first..first + steps)
        .map(|step| time_step(program, step))
        .collect();
    median(&times).expect("a timed step")
}

impl Comparison {
    /// The median over the rounds of each side's median step, first side then second.
    pub fn median_steps(&self) -> [Duration; 2] {
        [0, 1].map(|side| {
            let steps: Vec<Duration> = self.rounds.iter().map(|r| r[side]).collect();
            median(&steps).expect("a round")
        })
    }

    /// Each round's second step over its first (unfused over fused).
    pub fn ratios(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|[first, second]| second.as_secs_f64() / first.as_secs_f64())
            .collect()
    }

    pub fn text(&self) -> String {
        let [first, second] = self.median_steps().map(|t| t.as_secs_f64() * 1e3);
        let [a, b] = self.sides;
        let mut ratios = self.ratios();
        ratios.sort_by(f64::total_cmp);
        let (low, high) = (ratios[0], ratios[ratios.len() - 1]);
        let ratio = format!("{b}/{a}");
        format!(
            "{}: batch {}, {} threads, {} microkernel; {} rounds of {} steps each, with and \
             without {} in turn\n\
             {a:<11} {first:>10.3} ms per step (median of the rounds' medians)\n\
             {b:<11} {second:>10.3} ms per step\n\
             {ratio:<13} {:>8.3} (median of the rounds' ratios; {low:.3} to {high:.3})\n",
            self.network,
            self.batch,
            self.threads,
            self.microkernel,
            self.rounds.len(),
            self.steps,
            self.without,
            ratios[ratios.len() / 2],
        )
    }

    pub fn json(&self) -> serde_json::Value {
        let ms = |t: Duration| t.as_secs_f64() * 1e3;
        let [first, second] = self.median_steps().map(ms);
        let [a, b] = self.sides;
        let rounds: Vec<serde_json::Value> = self
            .rounds
            .iter()
            .map(|&[f, u]| json!({ (format!("{a}_ms")): ms(f), (format!("{b}_ms")): ms(u) }))
            .collect();
        json!({
            "network": self.network,
            "batch": self.batch,
            "threads": self.threads,
            "microkernel": self.microkernel,
            "without": self.without,
            "steps_per_round": self.steps,
            (format!("{a}_step_ms")): first,
            (format!("{b}_step_ms")): second,
            "ratio": median(&self.ratios()).expect("a round"),
            "rounds": rounds,
        })
    }
}
