//! Timing a compiled training step on synthetic data, for `netc bench` and a compiled
//! model's `bench`. It reports what a practitioner compares across frameworks: images per
//! second and milliseconds per step (the median of the timed steps, after warm-up steps), and
//! the arithmetic rate achieved.
//!
//! The rate counts a training step as three times the forward pass's multiply-accumulates
//! (forward, input gradient, weight gradient; the summary's count), two flops each. It leaves
//! out elementwise work, and counts the first layer's input gradient that netc never computes,
//! so it is the conventional figure rather than an exact one.
//!
//! A profile (`--profile`) times every kernel launch of further steps and charges each to its
//! op: the median per kernel over those steps, summed by primitive and by layer. Timing a
//! launch waits for its threads, as the step does anyway, so the figures add up to the step.

use crate::init::InitKind;
use crate::program::{InputKind, KernelOrigin, OutputRole, Program};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::HashMap;
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
    pub profile: Option<Profile>,
}

/// Where a step's time goes.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Profiled steps.
    pub steps: usize,
    /// Per primitive, slowest first.
    pub by_op: Vec<ProfileRow>,
    /// Per layer and primitive, slowest first.
    pub by_layer: Vec<ProfileRow>,
    /// Every kernel, in launch order: its op and layer (`name`), its median time (`launches`
    /// is 1), for comparing two programs kernel by kernel (`--json`).
    pub kernels: Vec<ProfileRow>,
}

/// Time charged to one group of kernels.
#[derive(Clone, Debug)]
pub struct ProfileRow {
    pub name: String,
    /// The sum of its kernels' median launch times.
    pub time: Duration,
    /// Kernels launched per step.
    pub launches: usize,
}

/// Layers a profile's text lists.
const PROFILE_LAYERS: usize = 12;

impl Profile {
    /// Groups per-kernel medians by op and by layer.
    fn new(steps: usize, origins: &[KernelOrigin], medians: &[Duration]) -> Profile {
        let group = |key: &dyn Fn(&KernelOrigin) -> String| {
            let mut groups: HashMap<String, (Duration, usize)> = HashMap::new();
            for (origin, &time) in origins.iter().zip(medians) {
                let group = groups.entry(key(origin)).or_default();
                group.0 += time;
                group.1 += 1;
            }
            let mut rows: Vec<ProfileRow> = groups
                .into_iter()
                .map(|(name, (time, launches))| ProfileRow {
                    name,
                    time,
                    launches,
                })
                .collect();
            rows.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.name.cmp(&b.name)));
            rows
        };
        let name = |o: &KernelOrigin| match o.layer.as_str() {
            "" => o.op.clone(),
            layer => format!("{layer} ({})", o.op),
        };
        let kernels = origins
            .iter()
            .zip(medians)
            .map(|(origin, &time)| ProfileRow {
                name: name(origin),
                time,
                launches: 1,
            })
            .collect();
        Profile {
            steps,
            by_op: group(&|o| o.op.clone()),
            by_layer: group(&name),
            kernels,
        }
    }

    fn total(&self) -> Duration {
        self.by_op.iter().map(|r| r.time).sum()
    }

    pub fn text(&self) -> String {
        let total = self.total().as_secs_f64().max(f64::MIN_POSITIVE);
        let rows = |title: &str, rows: &[ProfileRow]| {
            let mut text = format!("{title:<44} {:>9} {:>6} {:>8}\n", "ms", "share", "kernels");
            for row in rows {
                let time = row.time.as_secs_f64();
                text += &format!(
                    "  {:<42} {:>9.3} {:>5.1}% {:>8}\n",
                    row.name,
                    time * 1e3,
                    100.0 * time / total,
                    row.launches
                );
            }
            text
        };
        let layers = self.by_layer.len().min(PROFILE_LAYERS);
        format!(
            "profile: the median of {} steps per kernel, {:.3} ms in all\n{}{}",
            self.steps,
            total * 1e3,
            rows("by primitive", &self.by_op),
            rows(
                &format!("slowest {layers} of {} layers", self.by_layer.len()),
                &self.by_layer[..layers]
            ),
        )
    }

    pub fn json(&self) -> serde_json::Value {
        let rows = |rows: &[ProfileRow]| {
            rows.iter()
                .map(|r| json!({"name": r.name, "ms": r.time.as_secs_f64() * 1e3, "kernels": r.launches}))
                .collect::<Vec<_>>()
        };
        json!({
            "steps": self.steps,
            "by_op": rows(&self.by_op),
            "by_layer": rows(&self.by_layer),
            "kernels": rows(&self.kernels),
        })
    }
}

impl BenchReport {
    pub fn median_step(&self) -> Duration {
        median(&self.step_times).expect("a timed step")
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
             arithmetic  {:>10.1} GFLOP/s\n\
             {}",
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
            self.profile
                .as_ref()
                .map_or_else(String::new, Profile::text),
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
            "profile": self.profile.as_ref().map(Profile::json),
        })
    }
}

/// The middle of `values` once sorted (the upper one of an even count); none of none.
pub fn median<T: Copy + PartialOrd>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("values that compare"));
    sorted.get(sorted.len() / 2).copied()
}

/// Times `steps` steps of `program` (a training step) after `warmup` untimed ones (the first
/// touches every page of every buffer), on random data and labels from fixed seeds.
pub fn time_steps(program: &mut Program, warmup: usize, steps: usize) -> Vec<Duration> {
    prepare_steps(program);
    for step in 0..warmup {
        run_step(program, step);
    }
    (warmup..warmup + steps)
        .map(|step| time_step(program, step))
        .collect()
}

/// Readies `program` (a training step) for timing: PyTorch's initial values, and random data
/// and labels from fixed seeds.
pub fn prepare_steps(program: &mut Program) {
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
}

/// Runs step `index` (counting from 0) of a program [`prepare_steps`] readied, and times it.
pub fn time_step(program: &mut Program, index: usize) -> Duration {
    let started = Instant::now();
    run_step(program, index);
    started.elapsed()
}

/// Runs step `index` (counting from 0) of a training program.
fn run_step(program: &mut Program, index: usize) {
    if let Some(slot) = program.input_mut("step") {
        slot[0] = (index + 1) as f32;
    }
    program.run();
    program.apply_updates();
}

/// Runs steps `first..first + steps` of a program [`time_steps`] prepared, timing every kernel
/// launch.
pub fn profile_steps(program: &mut Program, first: usize, steps: usize) -> Profile {
    let origins = program.layout().kernels.clone();
    let mut per_kernel = vec![Vec::with_capacity(steps); origins.len()];
    program.set_profiling(true);
    for index in first..first + steps {
        run_step(program, index);
        let launches = program.take_launch_times();
        for (times, launch) in per_kernel.iter_mut().zip(launches) {
            times.push(launch);
        }
    }
    program.set_profiling(false);
    let medians: Vec<Duration> = per_kernel
        .iter()
        .map(|times| median(times).unwrap_or_default())
        .collect();
    Profile::new(steps, &origins, &medians)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_charges_each_kernel_to_its_primitive_and_layer() {
        let origin = |op: &str, layer: &str| KernelOrigin {
            op: op.to_string(),
            layer: layer.to_string(),
        };
        let origins = [
            origin("conv2d", "conv1"),
            origin("conv2d", "conv1"),
            origin("fused", "conv1"),
            origin("conv2d", "conv2"),
            origin("fused", ""),
        ];
        let ms = Duration::from_millis;
        let medians = [ms(1), ms(2), ms(4), ms(8), ms(16)];
        let profile = Profile::new(3, &origins, &medians);
        let rows = |rows: &[ProfileRow]| -> Vec<(String, u128, usize)> {
            rows.iter()
                .map(|r| (r.name.clone(), r.time.as_millis(), r.launches))
                .collect()
        };
        assert_eq!(
            rows(&profile.by_op),
            [("fused".to_string(), 20, 2), ("conv2d".to_string(), 11, 3)]
        );
        assert_eq!(
            rows(&profile.by_layer),
            [
                ("fused".to_string(), 16, 1),
                ("conv2 (conv2d)".to_string(), 8, 1),
                ("conv1 (fused)".to_string(), 4, 1),
                ("conv1 (conv2d)".to_string(), 3, 2),
            ]
        );
        let kernels: Vec<_> = rows(&profile.kernels)
            .into_iter()
            .map(|(n, t, _)| (n, t))
            .collect();
        let named = |name: &str, ms| (name.to_string(), ms);
        assert_eq!(
            kernels,
            [
                named("conv1 (conv2d)", 1),
                named("conv1 (conv2d)", 2),
                named("conv1 (fused)", 4),
                named("conv2 (conv2d)", 8),
                named("fused", 16),
            ]
        );
        assert_eq!(profile.total(), ms(31));
        assert!(profile.text().contains("31.000 ms in all"));
    }
}
