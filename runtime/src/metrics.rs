//! The numbers a training run reports, kept as `metrics.jsonl` in the run directory: one JSON
//! line per epoch and, once the run has finished, one line with the test result, so tools can
//! follow a run line by line and read it with any JSON parser.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::checkpoint::write_atomically;

/// What one epoch of training measured. Accuracies are fractions in [0, 1]; the validation
/// values are `None` (JSON `null`) when the run has no validation set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_acc: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub wall_s: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub images_per_s: f64,
}

/// The finished model's result on the test set; accuracy is a fraction in [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestRecord {
    #[serde(deserialize_with = "nan_if_null")]
    pub test_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub test_acc: f64,
}

/// JSON has no NaN or infinity, and serde_json writes them as `null`; a diverged run's NaN loss
/// must still read back rather than make the whole file unreadable.
fn nan_if_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Either kind of line; the field names tell them apart.
#[derive(Deserialize)]
#[serde(untagged)]
enum MetricsLine {
    Epoch(EpochRecord),
    Test(TestRecord),
}

/// `metrics.jsonl`: one JSON object per epoch (the fields above; a missing validation is
/// `null`), then, when the run has finished, one object `{"test_loss": .., "test_acc": ..}`.
/// Rewritten whole, atomically (write_atomically), so it always matches the run's history, also
/// after a resumed run.
pub fn write_metrics(
    path: &Path,
    epochs: &[EpochRecord],
    test: Option<&TestRecord>,
) -> io::Result<()> {
    write_atomically(path, |file| {
        let mut out = BufWriter::new(file);
        for epoch in epochs {
            serde_json::to_writer(&mut out, epoch)?;
            out.write_all(b"\n")?;
        }
        if let Some(test) = test {
            serde_json::to_writer(&mut out, test)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    })
}

/// Reads what [`write_metrics`] wrote; errors name the file and the line.
pub fn read_metrics(path: &Path) -> Result<(Vec<EpochRecord>, Option<TestRecord>), String> {
    let text = fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut epochs = Vec::new();
    let mut test = None;
    for (index, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), index + 1);
        if line.trim().is_empty() {
            continue;
        }
        if test.is_some() {
            return Err(format!(
                "{}: a line follows the test result, which must be last",
                at()
            ));
        }
        match serde_json::from_str(line) {
            Ok(MetricsLine::Epoch(epoch)) => epochs.push(epoch),
            Ok(MetricsLine::Test(record)) => test = Some(record),
            Err(error) => {
                return Err(format!(
                    "{}: neither an epoch record nor a test record ({error}): {line}",
                    at()
                ))
            }
        }
    }
    Ok((epochs, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs() -> Vec<EpochRecord> {
        vec![
            EpochRecord {
                epoch: 1,
                train_loss: 2.25,
                train_acc: 0.125,
                val_loss: Some(2.0),
                val_acc: Some(0.25),
                lr: 0.1,
                wall_s: 1.5,
                images_per_s: 40000.0,
            },
            EpochRecord {
                epoch: 2,
                train_loss: 1.0,
                train_acc: 0.5,
                val_loss: None,
                val_acc: None,
                lr: 0.05,
                wall_s: 1.25,
                images_per_s: 48000.0,
            },
        ]
    }

    #[test]
    fn metrics_round_trip_with_the_test_line_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let test = TestRecord {
            test_loss: 0.75,
            test_acc: 0.875,
        };
        write_metrics(&path, &epochs(), Some(&test)).unwrap();

        assert_eq!(read_metrics(&path).unwrap(), (epochs(), Some(test)));
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains(r#""val_loss":null"#), "{}", lines[1]);
        assert_eq!(lines[2], r#"{"test_loss":0.75,"test_acc":0.875}"#);
    }

    #[test]
    fn rewriting_replaces_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        write_metrics(&path, &epochs(), None).unwrap();
        write_metrics(&path, &epochs()[..1], None).unwrap();
        assert_eq!(read_metrics(&path).unwrap(), (epochs()[..1].to_vec(), None));
    }

    #[test]
    fn a_diverged_loss_reads_back_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut diverged = epochs();
        diverged[1].train_loss = f64::NAN;
        write_metrics(&path, &diverged, None).unwrap();
        let (read, _) = read_metrics(&path).unwrap();
        assert!(read[1].train_loss.is_nan());
        assert_eq!(read[0], diverged[0]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        write_metrics(&path, &epochs(), None).unwrap();
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("{\"epoch\": 3}\n");
        fs::write(&path, text).unwrap();
        let error = read_metrics(&path).unwrap_err();
        assert!(
            error.starts_with(&format!("{}:3: ", path.display())),
            "{error}"
        );
    }

    #[test]
    fn a_line_after_the_test_result_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let test = TestRecord {
            test_loss: 1.0,
            test_acc: 0.5,
        };
        write_metrics(&path, &[], Some(&test)).unwrap();
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&serde_json::to_string(&epochs()[0]).unwrap());
        fs::write(&path, text).unwrap();
        assert!(read_metrics(&path).unwrap_err().contains(":2: "));
    }
}
