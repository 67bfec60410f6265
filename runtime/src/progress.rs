//! What a person watching a training run sees: a progress bar per epoch on standard error
//! (only when it is a terminal) with the running loss and accuracy, images per second and the
//! time left, and one line per epoch on the output, which logs keep.

use crate::driver::{Control, Observer, StepProgress};
use crate::metrics::EpochRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Console<'a> {
    out: &'a mut dyn Write,
    bar: Option<ProgressBar>,
    /// Set (by a Ctrl-C handler) to stop the run at the next step, with a checkpoint.
    interrupt: &'a AtomicBool,
}

impl<'a> Console<'a> {
    pub fn new(out: &'a mut dyn Write, interrupt: &'a AtomicBool) -> Console<'a> {
        Console {
            out,
            bar: None,
            interrupt,
        }
    }
}

impl Observer for Console<'_> {
    fn epoch_started(&mut self, epoch: usize, epochs: usize, first_batch: usize, batches: usize) {
        let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{epochs}", epoch + 1));
        bar.set_position(first_batch as u64);
        bar.reset_eta();
        self.bar = Some(bar);
    }

    fn step(&mut self, progress: &StepProgress) -> Control {
        if let Some(bar) = &self.bar {
            bar.set_position(progress.batch as u64);
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                progress.loss,
                progress.accuracy * 100.0,
                progress.images_per_s
            ));
        }
        if self.interrupt.load(Ordering::Relaxed) {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn epoch_finished(&mut self, record: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let validation = match (record.val_loss, record.val_acc) {
            (Some(loss), Some(acc)) => {
                format!("  val_loss {loss:.4}  val_acc {:6.2}%", acc * 100.0)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            self.out,
            "epoch {:>3}  loss {:.4}  acc {:6.2}%{validation}  lr {:.3e}  {:.0} img/s  {:.1} s",
            record.epoch,
            record.train_loss,
            record.train_acc * 100.0,
            record.lr,
            record.images_per_s,
            record.wall_s
        );
    }

    fn note(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| {
                let _ = writeln!(self.out, "note: {text}");
            }),
            None => {
                let _ = writeln!(self.out, "note: {text}");
            }
        }
    }
}
