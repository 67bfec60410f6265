//! Learning-rate schedules and early stopping, in the vocabulary of PyTorch's `lr_scheduler`,
//! Caffe's solver and MATLAB's `trainingOptions`: how a recipe's `schedule` and `early_stop`
//! read, the rate each step trains with, and the per-epoch bookkeeping that goes into
//! checkpoints.

use serde::{Deserialize, Serialize};

use crate::recipe::{deserialize_checked, one_of, AtLeastZero, Bounded, Fraction, Positive, Whole};

/// How the learning rate changes over a run, with an optional linear warm-up in front.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(into = "ScheduleFields")]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Epochs (fractional allowed) over which the rate ramps linearly up to the schedule's.
    pub warmup_epochs: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    Constant,
    /// `lr * factor^(epoch / every_epochs)`, integer division: MATLAB's piecewise schedule
    /// (`LearnRateDropPeriod`, `LearnRateDropFactor`), PyTorch's `StepLR`, Caffe's `step`.
    Step {
        every_epochs: usize,
        factor: f64,
    },
    /// `lr * gamma^epoch`: PyTorch's `ExponentialLR`, Caffe's `exp`.
    Exponential {
        gamma: f64,
    },
    /// `lr / (1 + gamma * epoch)`: Caffe's `inv` with power 1, Keras' `InverseTimeDecay`.
    InverseTime {
        gamma: f64,
    },
    /// PyTorch's `ReduceLROnPlateau` in mode `min` with a relative threshold: the rate is
    /// multiplied by `factor` once the loss has failed to improve on the best by the relative
    /// `threshold` for more than `patience` epochs, and never goes below `min_lr`.
    Plateau {
        factor: f64,
        patience: usize,
        threshold: f64,
        min_lr: f64,
    },
    /// `min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2`: PyTorch's
    /// `CosineAnnealingLR` over the whole run.
    Cosine {
        min_lr: f64,
    },
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_checked::<D, ScheduleFields, Self>(d)
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            kind: ScheduleKind::Constant,
            warmup_epochs: 0.0,
        }
    }
}

/// What a plateau schedule remembers between epochs; the other schedules depend on the epoch
/// alone. Checkpoints store it as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The lowest loss so far; `None` before the first epoch ends.
    pub best: Option<f64>,
    /// Epochs since the loss last improved on `best`.
    pub bad_epochs: usize,
    /// How many times the rate has been multiplied by the plateau's factor.
    pub reductions: u32,
}

impl Schedule {
    /// The learning rate for a step. `epoch` is 0-based, `step_in_epoch` 0-based of
    /// `steps_per_epoch`, `epochs` the run's total. With `warmup_epochs > 0` the rate is
    /// multiplied by `min(1, (epoch + (step_in_epoch + 1) / steps_per_epoch) / warmup_epochs)`,
    /// so the first step already trains.
    pub fn lr(
        &self,
        base_lr: f64,
        epoch: usize,
        step_in_epoch: usize,
        steps_per_epoch: usize,
        epochs: usize,
        state: &ScheduleState,
    ) -> f64 {
        let e = epoch as f64;
        let scheduled = match self.kind {
            ScheduleKind::Constant => base_lr,
            ScheduleKind::Step {
                every_epochs,
                factor,
            } => base_lr * factor.powi(exponent(epoch / every_epochs)),
            ScheduleKind::Exponential { gamma } => base_lr * gamma.powi(exponent(epoch)),
            ScheduleKind::InverseTime { gamma } => base_lr / (1.0 + gamma * e),
            // A base rate already below `min_lr` is left alone rather than raised.
            ScheduleKind::Plateau { factor, min_lr, .. } => (base_lr
                * factor.powi(exponent(state.reductions as usize)))
            .max(min_lr.min(base_lr)),
            ScheduleKind::Cosine { min_lr } => {
                let progress = e / epochs.max(1) as f64;
                min_lr + (base_lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
            }
        };
        if self.warmup_epochs > 0.0 {
            let done = e + (step_in_epoch + 1) as f64 / steps_per_epoch.max(1) as f64;
            scheduled * (done / self.warmup_epochs).min(1.0)
        } else {
            scheduled
        }
    }

    /// Plateau bookkeeping after an epoch. `loss` is the epoch's validation loss, or its training
    /// loss when the run has no validation set. Other schedules ignore it.
    pub fn end_epoch(&self, state: &mut ScheduleState, loss: f64) {
        let ScheduleKind::Plateau {
            patience,
            threshold,
            ..
        } = self.kind
        else {
            return;
        };
        // Written so that a NaN loss counts as no improvement.
        if loss < state.best.unwrap_or(f64::INFINITY) * (1.0 - threshold) {
            state.best = Some(loss);
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
        }
        if state.bad_epochs > patience {
            state.reductions += 1;
            state.bad_epochs = 0;
        }
    }
}

/// `powi` takes an `i32`; no run is long enough for an epoch count to exceed it.
fn exponent(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Stop a run once the loss has stopped improving.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct EarlyStop {
    /// Epochs in a row without improvement after which the run stops.
    #[serde(deserialize_with = "crate::recipe::count")]
    pub patience: usize,
    /// How much lower than the best a loss must be to count as an improvement.
    #[serde(default, deserialize_with = "crate::recipe::within::<AtLeastZero, _>")]
    pub min_delta: f64,
}

/// What early stopping remembers between epochs; checkpoints store it as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopState {
    /// The lowest loss so far; `None` before the first epoch ends.
    pub best: Option<f64>,
    /// Epochs since the loss last improved on `best` by more than `min_delta`.
    pub bad_epochs: usize,
}

impl EarlyStop {
    /// Records an epoch's loss (validation loss, or training loss without a validation set) and
    /// says whether the run should stop: `patience` epochs in a row without improving on the best
    /// by more than `min_delta`.
    pub fn end_epoch(&self, state: &mut EarlyStopState, loss: f64) -> bool {
        if loss < state.best.unwrap_or(f64::INFINITY) - self.min_delta {
            state.best = Some(loss);
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
        }
        state.bad_epochs >= self.patience
    }
}

/// The schedules' kinds, as the `kind` key names them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KindName {
    Constant,
    Step,
    Exponential,
    InverseTime,
    Plateau,
    Cosine,
}

impl KindName {
    const ALL: [KindName; 6] = [
        KindName::Constant,
        KindName::Step,
        KindName::Exponential,
        KindName::InverseTime,
        KindName::Plateau,
        KindName::Cosine,
    ];
    /// In the order of `ALL`.
    const NAMES: [&'static str; 6] = [
        "constant",
        "step",
        "exponential",
        "inverse_time",
        "plateau",
        "cosine",
    ];

    fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl Serialize for KindName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(d, &KindName::NAMES).map(|i| KindName::ALL[i])
    }
}

/// A schedule as a recipe writes it: one flat mapping whose `kind` says which of the other keys
/// apply. Each value is checked as it is read, so its error carries its own key and location.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a mapping")]
struct ScheduleFields {
    kind: Option<KindName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    every_epochs: Option<Whole<1>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    factor: Option<Bounded<Fraction>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gamma: Option<Bounded<Positive>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patience: Option<Whole<0>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<Bounded<AtLeastZero>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_lr: Option<Bounded<AtLeastZero>>,
    warmup_epochs: Option<Bounded<AtLeastZero>>,
}

impl TryFrom<ScheduleFields> for Schedule {
    type Error = String;
    fn try_from(fields: ScheduleFields) -> Result<Self, String> {
        let name = fields.kind.unwrap_or(KindName::Constant);
        let given = [
            ("every_epochs", fields.every_epochs.is_some()),
            ("factor", fields.factor.is_some()),
            ("gamma", fields.gamma.is_some()),
            ("patience", fields.patience.is_some()),
            ("threshold", fields.threshold.is_some()),
            ("min_lr", fields.min_lr.is_some()),
        ];
        let applies: &[&str] = match name {
            KindName::Constant => &[],
            KindName::Step => &["every_epochs", "factor"],
            KindName::Exponential | KindName::InverseTime => &["gamma"],
            KindName::Plateau => &["factor", "patience", "threshold", "min_lr"],
            KindName::Cosine => &["min_lr"],
        };
        if let Some((key, _)) = given
            .iter()
            .find(|(key, present)| *present && !applies.contains(key))
        {
            return Err(format!(
                "has `{key}`, which does not apply to `{}`",
                name.name()
            ));
        }
        let needs_gamma = || {
            fields
                .gamma
                .map(|g| g.0)
                .ok_or_else(|| format!("of kind `{}` needs `gamma`", name.name()))
        };
        let factor = |default| fields.factor.map_or(default, |f| f.0);
        let min_lr = fields.min_lr.map_or(0.0, |m| m.0);
        let kind = match name {
            KindName::Constant => ScheduleKind::Constant,
            // MATLAB's defaults for its piecewise schedule.
            KindName::Step => ScheduleKind::Step {
                every_epochs: fields.every_epochs.map_or(10, |n| n.0),
                factor: factor(0.1),
            },
            KindName::Exponential => ScheduleKind::Exponential {
                gamma: needs_gamma()?,
            },
            KindName::InverseTime => ScheduleKind::InverseTime {
                gamma: needs_gamma()?,
            },
            // PyTorch's defaults.
            KindName::Plateau => ScheduleKind::Plateau {
                factor: factor(0.1),
                patience: fields.patience.map_or(10, |n| n.0),
                threshold: fields.threshold.map_or(1e-4, |t| t.0),
                min_lr,
            },
            KindName::Cosine => ScheduleKind::Cosine { min_lr },
        };
        Ok(Schedule {
            kind,
            warmup_epochs: fields.warmup_epochs.map_or(0.0, |w| w.0),
        })
    }
}

impl From<Schedule> for ScheduleFields {
    fn from(schedule: Schedule) -> Self {
        let fields = ScheduleFields {
            warmup_epochs: Some(Bounded::new(schedule.warmup_epochs)),
            ..ScheduleFields::default()
        };
        match schedule.kind {
            ScheduleKind::Constant => ScheduleFields {
                kind: Some(KindName::Constant),
                ..fields
            },
            ScheduleKind::Step {
                every_epochs,
                factor,
            } => ScheduleFields {
                kind: Some(KindName::Step),
                every_epochs: Some(Whole(every_epochs)),
                factor: Some(Bounded::new(factor)),
                ..fields
            },
            ScheduleKind::Exponential { gamma } => ScheduleFields {
                kind: Some(KindName::Exponential),
                gamma: Some(Bounded::new(gamma)),
                ..fields
            },
            ScheduleKind::InverseTime { gamma } => ScheduleFields {
                kind: Some(KindName::InverseTime),
                gamma: Some(Bounded::new(gamma)),
                ..fields
            },
            ScheduleKind::Plateau {
                factor,
                patience,
                threshold,
                min_lr,
            } => ScheduleFields {
                kind: Some(KindName::Plateau),
                factor: Some(Bounded::new(factor)),
                patience: Some(Whole(patience)),
                threshold: Some(Bounded::new(threshold)),
                min_lr: Some(Bounded::new(min_lr)),
                ..fields
            },
            ScheduleKind::Cosine { min_lr } => ScheduleFields {
                kind: Some(KindName::Cosine),
                min_lr: Some(Bounded::new(min_lr)),
                ..fields
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            warmup_epochs: 0.0,
        }
    }

    /// The rate at the first step of `epoch` of a 20-epoch run.
    fn at(schedule: &Schedule, epoch: usize, state: &ScheduleState) -> f64 {
        schedule.lr(0.1, epoch, 0, 10, 20, state)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn each_schedule_follows_its_formula() {
        let state = ScheduleState::default();
        type Formula = fn(f64) -> f64;
        let cases: [(ScheduleKind, Formula); 5] = [
            (ScheduleKind::Constant, |_| 0.1),
            (
                ScheduleKind::Step {
                    every_epochs: 4,
                    factor: 0.5,
                },
                |e| 0.1 * 0.5f64.powf((e / 4.0).floor()),
            ),
            (ScheduleKind::Exponential { gamma: 0.9 }, |e| {
                0.1 * 0.9f64.powf(e)
            }),
            (ScheduleKind::InverseTime { gamma: 0.5 }, |e| {
                0.1 / (1.0 + 0.5 * e)
            }),
            (ScheduleKind::Cosine { min_lr: 0.001 }, |e| {
                0.001 + (0.1 - 0.001) * (1.0 + (std::f64::consts::PI * e / 20.0).cos()) / 2.0
            }),
        ];
        for (kind, formula) in cases {
            let schedule = schedule(kind);
            for epoch in [0, 1, 3, 4, 7, 8, 10, 19] {
                let lr = at(&schedule, epoch, &state);
                assert!(
                    close(lr, formula(epoch as f64)),
                    "{schedule:?} epoch {epoch}: {lr}"
                );
            }
        }
    }

    #[test]
    fn warm_up_ramps_linearly_over_steps() {
        let warm = Schedule {
            kind: ScheduleKind::Constant,
            warmup_epochs: 2.0,
        };
        let state = ScheduleState::default();
        // (epoch, step of 10, fraction of the rate)
        for (epoch, step, fraction) in [
            (0, 0, 0.05),
            (0, 9, 0.5),
            (1, 4, 0.75),
            (1, 9, 1.0),
            (5, 0, 1.0),
        ] {
            let lr = warm.lr(0.1, epoch, step, 10, 20, &state);
            assert!(close(lr, 0.1 * fraction), "epoch {epoch} step {step}: {lr}");
        }
    }

    #[test]
    fn plateau_reduces_after_patience_and_stops_at_min_lr() {
        let plateau = schedule(ScheduleKind::Plateau {
            factor: 0.1,
            patience: 2,
            threshold: 1e-4,
            min_lr: 0.0005,
        });
        let mut state = ScheduleState::default();
        // Improves, then stalls (a gain below the relative threshold does not count), so the
        // third bad epoch reduces, as PyTorch's `num_bad_epochs > patience` does.
        let losses = [1.0, 0.5, 0.49999, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7];
        let rates = [
            0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001,
        ];
        for (loss, rate) in losses.into_iter().zip(rates) {
            assert!(close(at(&plateau, 0, &state), rate), "{state:?}");
            plateau.end_epoch(&mut state, loss);
        }
        assert_eq!(state.best, Some(0.5));
        assert!(close(at(&plateau, 0, &state), 0.0005), "{state:?}");
    }

    #[test]
    fn early_stop_waits_patience_epochs_without_improvement() {
        let stop = EarlyStop {
            patience: 2,
            min_delta: 0.01,
        };
        let mut state = EarlyStopState::default();
        let decisions: Vec<bool> = [1.0, 0.9, 0.895, 0.8, 0.85, f64::NAN]
            .into_iter()
            .map(|loss| stop.end_epoch(&mut state, loss))
            .collect();
        assert_eq!(decisions, [false, false, false, false, false, true]);
        assert_eq!(state.best, Some(0.8));
    }

    #[test]
    fn states_round_trip_through_json_bit_for_bit() {
        let schedule_state = ScheduleState {
            best: Some(0.1 + 0.2),
            bad_epochs: 3,
            reductions: 2,
        };
        let json = serde_json::to_string(&schedule_state).unwrap();
        let back: ScheduleState = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.best.map(f64::to_bits),
            schedule_state.best.map(f64::to_bits)
        );
        assert_eq!(back, schedule_state);
        for best in [
            Some(std::f64::consts::PI / 7.0),
            Some(1e-300),
            Some(2.2250738585072014e-308),
            None,
        ] {
            let state = EarlyStopState {
                best,
                bad_epochs: 1,
            };
            let back: EarlyStopState =
                serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
            assert_eq!(back.best.map(f64::to_bits), best.map(f64::to_bits));
        }
    }
}
