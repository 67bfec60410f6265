//! The command line of an executable `netc compile` wrote: `train`, `eval`, `predict`, `bench`
//! and `info`, speaking the language of `netc train` (the runtime's `session` runs both). The
//! recipe compiled in is the default; `--config` gives another, within what the code fixes.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use codespan_reporting::term::termcolor::WriteColor;
use netc_grammar::diagnostic::SourceFile;
use netc_runtime::bench::{profile_steps, time_steps, BenchReport};
use netc_runtime::linked::{EntryPoints, LinkedModel, Manifest};
use netc_runtime::microkernel::MicrokernelKind;
use netc_runtime::pool::Pool;
use netc_runtime::program::{InputKind, Layout, StepFn};
use netc_runtime::session::{self, read_source, Outcome, RecipeFlags, TrainRequest};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Trains, evaluates and runs the network netc compiled into this executable.",
    after_help = "Runs need no netc and no Rust toolchain; `info` says what was compiled in."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the network as a recipe says (by default the one compiled in): a progress bar and
    /// a line per epoch; checkpoints, `metrics.jsonl` and the training curves in a run
    /// directory; test accuracy at the end.
    Train {
        /// A recipe (YAML) instead of the one compiled in. It may change the data, epochs,
        /// schedule, learning rate, augmentation, initialisation and checkpoints; the batch
        /// size, the optimizer and the frozen layers are compiled in.
        #[arg(long, alias = "recipe")]
        config: Option<PathBuf>,
        #[command(flatten)]
        flags: RecipeFlags,
        #[command(flatten)]
        machine: Machine,
    },
    /// Evaluate trained weights on a test set: accuracy and the confusion matrix.
    Eval {
        /// A checkpoint of `train` (or of `netc train` on the same model file), or a
        /// safetensors file of weights named as PyTorch names them.
        #[arg(long)]
        weights: PathBuf,
        /// The data (as `train --data`); by default the checkpoint's, else Fashion-MNIST.
        #[arg(long)]
        data: Option<String>,
        #[command(flatten)]
        machine: Machine,
    },
    /// Classify images (JPEG or PNG): each image's most likely classes, with probabilities.
    Predict {
        /// A checkpoint of `train`, which records the normalisation and the class names.
        #[arg(long)]
        weights: PathBuf,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        top: u64,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[command(flatten)]
        machine: Machine,
    },
    /// Time the compiled training step on synthetic data, as `netc bench` does.
    Bench {
        /// Timed steps (after 3 untimed ones); the median is reported.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        steps: u64,
        /// Print JSON, with every step's time.
        #[arg(long)]
        json: bool,
        /// Then time every kernel of as many more steps, and show where the time goes, by
        /// primitive and by layer.
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        machine: Machine,
    },
    /// What was compiled in: the network, its recipe, the memory of each program, the netc
    /// version and the CPU features the code needs.
    Info,
}

#[derive(clap::Args)]
struct Machine {
    /// Threads to run on (default: every core); results are identical for any count.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

impl Machine {
    fn threads(&self) -> usize {
        self.threads.map_or_else(Pool::default_threads, usize::from)
    }
}

/// Runs the executable's command line on the linked programs; returns the exit status.
pub fn run(manifest: &[u8], entry_points: *const *const u8) -> i32 {
    let mut stderr = session::stderr();
    let mut stdout = std::io::stdout().lock();
    let manifest: Manifest = match serde_json::from_slice(manifest) {
        Ok(manifest) => manifest,
        Err(e) => {
            let _ = writeln!(
                stderr,
                "error: this executable's manifest is damaged ({e}); compile it again with \
                 `netc compile`"
            );
            return 101;
        }
    };
    let missing = manifest.missing_cpu_features();
    if !missing.is_empty() {
        let _ = writeln!(
            stderr,
            "error: this executable's code needs {} (it was compiled with `--target-cpu {}`), \
             which this CPU lacks; compile it again on this machine with `netc compile \
             --target-cpu native`",
            missing.join(", "),
            manifest.target_cpu
        );
        return 1;
    }
    let name = manifest.model.name.clone();
    let command = Cli::command()
        .name(name.clone())
        .bin_name(format!("./{name}"));
    let cli = match command
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let programs = manifest.programs().count();
    // SAFETY: the generated object holds two function pointers per program of the manifest,
    // in its order: the step and the generated microkernel.
    let entry_points: Vec<EntryPoints> = (0..programs)
        .map(|index| unsafe {
            EntryPoints {
                step: std::mem::transmute::<*const u8, StepFn>(*entry_points.add(2 * index)),
                microkernel: *entry_points.add(2 * index + 1),
            }
        })
        .collect();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("internal error: {info}");
        eprintln!("note: this is a bug in netc or its runtime; please report it");
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        execute(
            cli.command,
            manifest,
            entry_points,
            &mut stdout,
            &mut stderr,
        )
    }));
    match result {
        Ok(Ok(outcome)) => outcome.exit_code(),
        Ok(Err(e))
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            0
        }
        Ok(Err(e)) => {
            let _ = writeln!(stderr, "error: {e:#}");
            1
        }
        Err(_) => 101,
    }
}

fn execute(
    command: Command,
    manifest: Manifest,
    entry_points: Vec<EntryPoints>,
    stdout: &mut dyn Write,
    stderr: &mut dyn WriteColor,
) -> anyhow::Result<Outcome> {
    let name = manifest.model.name.clone();
    // SAFETY: the entry points are the manifest's programs', in its order.
    let model = |threads: usize| unsafe {
        LinkedModel::new(manifest.clone(), entry_points.clone(), threads)
    };
    match command {
        Command::Train {
            config,
            flags,
            machine,
        } => {
            let recipe = match config {
                Some(path) => read_source(&path)?,
                None => SourceFile::new("the recipe compiled in", manifest.recipe.clone()),
            };
            let request = TrainRequest {
                recipe,
                overrides: flags.overrides(),
                run_dir: flags.run_dir,
                resume: flags.resume,
                command: format!("./{name} train"),
            };
            session::train(&mut model(machine.threads()), request, stdout, stderr)
        }
        Command::Eval {
            weights,
            data,
            machine,
        } => session::eval(
            &mut model(machine.threads()),
            &weights,
            data,
            None,
            stdout,
            stderr,
        ),
        Command::Predict {
            weights,
            top,
            images,
            machine,
        } => session::predict(
            &mut model(machine.threads()),
            &weights,
            &images,
            top as usize,
            stdout,
            stderr,
        ),
        Command::Bench {
            steps,
            json,
            profile,
            machine,
        } => {
            let model = model(machine.threads());
            // The first training step is the one with nothing frozen when the recipe has one.
            let index = manifest
                .training
                .iter()
                .position(|p| p.frozen.is_empty())
                .unwrap_or(0);
            let mut program = model.program(index);
            let step_times = time_steps(&mut program, 3, steps as usize);
            let profile =
                profile.then(|| profile_steps(&mut program, 3 + steps as usize, steps as usize));
            let report = BenchReport {
                network: name,
                batch: batch_of(program.layout()),
                threads: program.threads(),
                microkernel: MicrokernelKind::best().name(),
                compile_time: None,
                kernels: program.layout().kernels.len(),
                step_times,
                macs_per_example: manifest.macs_per_example,
                profile,
            };
            if json {
                writeln!(stdout, "{}", report.json())?;
            } else {
                write!(stdout, "{}", report.text())?;
            }
            Ok(Outcome::Ok)
        }
        Command::Info => {
            write!(stdout, "{}", info(&manifest))?;
            Ok(Outcome::Ok)
        }
    }
}

/// The examples a program takes per run.
fn batch_of(layout: &Layout) -> usize {
    layout
        .inputs
        .iter()
        .find(|b| b.kind == InputKind::Data)
        .and_then(|b| b.shape.first().copied())
        .unwrap_or(1)
}

/// `info`'s text: what was compiled, for which CPU, and the memory each program allocates.
fn info(manifest: &Manifest) -> String {
    let mut out = format!(
        "`{}`, compiled by netc {} for {} CPUs{}\n{}model file SHA-256 {}\n\n{}\n",
        manifest.model.name,
        manifest.netc_version,
        manifest.target_cpu,
        if manifest.cpu_features.is_empty() {
            String::new()
        } else {
            format!(" with {}", manifest.cpu_features.join(", "))
        },
        if manifest.passes_off.is_empty() {
            String::new()
        } else {
            format!("without the passes {}\n", manifest.passes_off.join(", "))
        },
        manifest.model.sha256,
        manifest.summary.trim_end()
    );
    out.push_str("\nmemory, per program (allocated once, before the first step):\n");
    for program in manifest.programs() {
        let what = if std::ptr::eq(program, &manifest.inference) {
            "inference".to_string()
        } else if program.frozen.is_empty() {
            "training step".to_string()
        } else {
            format!("training step, {} frozen", program.frozen.join(", "))
        };
        out.push_str(&format!(
            "  {what} (batch {}): {}\n",
            batch_of(&program.layout),
            memory(&program.layout)
        ));
    }
    out.push_str(&format!(
        "\nrecipe compiled in (`train` uses it unless given --config):\n{}",
        manifest.recipe
    ));
    out
}

/// A layout's memory by kind, as a program allocates it: parameters, state, everything else
/// (the memory plan's arena, the values outside it and the workspace), in all, and the scratch
/// each thread adds.
fn memory(layout: &Layout) -> String {
    let bytes = |floats: usize| floats * std::mem::size_of::<f32>();
    let of_kind = |kind: InputKind| -> usize {
        layout
            .inputs
            .iter()
            .filter(|b| b.kind == kind)
            .map(|b| bytes(b.len()))
            .sum()
    };
    let total = bytes(layout.allocated_floats());
    let (params, state) = (of_kind(InputKind::Param), of_kind(InputKind::State));
    format!(
        "{} parameters, {} state, {} activations, gradients and workspace; {} in all, and {} \
         of scratch per thread",
        mib(params),
        mib(state),
        mib(total - params - state),
        mib(total),
        mib(bytes(layout.scratch_floats))
    )
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}
