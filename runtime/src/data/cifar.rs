//! The CIFAR-10 binary reader: batch files of 3073-byte records, one label byte then a 32×32
//! colour image, channel-height-width.

use super::{read_file, DataError, Dataset, Splits};
use std::path::{Path, PathBuf};

const SHAPE: [usize; 3] = [3, 32, 32];
const RECORD_LENGTH: usize = 1 + 3 * 32 * 32;
/// The subdirectory CIFAR-10's archive unpacks into.
const ARCHIVE_DIR: &str = "cifar-10-batches-bin";
const TRAIN_BATCHES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_BATCH: &str = "test_batch.bin";
const META: &str = "batches.meta.txt";
const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The directory holding the batches: `dir` itself or its `cifar-10-batches-bin`, if either
/// holds a batch file.
pub fn locate(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join(ARCHIVE_DIR)]
        .into_iter()
        .find(|candidate| {
            TRAIN_BATCHES
                .iter()
                .chain([&TEST_BATCH])
                .any(|batch| candidate.join(batch).is_file())
        })
}

/// Reads the five training batches and the test batch in `dir`.
pub fn read_splits(dir: &Path) -> Result<Splits, DataError> {
    let class_names = read_class_names(dir)?;
    let read_set = |batches: &[&str]| -> Result<Dataset, DataError> {
        let mut set = Dataset {
            shape: SHAPE,
            pixels: Vec::new(),
            labels: Vec::new(),
            class_names: class_names.clone(),
        };
        for batch in batches {
            read_batch(&dir.join(batch), &mut set)?;
        }
        Ok(set)
    };
    Ok(Splits {
        train: read_set(&TRAIN_BATCHES)?,
        test: read_set(&[TEST_BATCH])?,
        original_shape: SHAPE,
    })
}

/// The names in `batches.meta.txt` (one a line), or CIFAR-10's own without it.
fn read_class_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let path = dir.join(META);
    if !path.is_file() {
        return Ok(CLASSES.map(String::from).to_vec());
    }
    let text = String::from_utf8(read_file(&path)?)
        .map_err(|error| DataError::new(&path, format!("not UTF-8 text: {error}")))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    if names.len() != CLASSES.len() {
        return Err(DataError::new(
            &path,
            format!("{} class names, expected {}", names.len(), CLASSES.len()),
        )
        .with_hint("write one class name a line, or remove the file to use CIFAR-10's names"));
    }
    Ok(names)
}

/// Appends the records of the batch file at `path` to `set`.
fn read_batch(path: &Path, set: &mut Dataset) -> Result<(), DataError> {
    if !path.is_file() {
        return Err(DataError::new(path, "missing CIFAR-10 batch").with_hint(
            "CIFAR-10's binary version holds data_batch_1.bin .. data_batch_5.bin and test_batch.bin",
        ));
    }
    let bytes = read_file(path)?;
    if bytes.is_empty() || bytes.len() % RECORD_LENGTH != 0 {
        return Err(DataError::new(
            path,
            format!(
                "{} bytes is not a whole, nonzero number of {RECORD_LENGTH}-byte records \
                 ({} bytes past the last whole record)",
                bytes.len(),
                bytes.len() % RECORD_LENGTH
            ),
        )
        .with_hint("the file is truncated or not a CIFAR-10 binary batch; download it again"));
    }
    for (index, record) in bytes.chunks_exact(RECORD_LENGTH).enumerate() {
        let label = record[0];
        if usize::from(label) >= CLASSES.len() {
            return Err(DataError::new(
                path,
                format!(
                    "label {label} of record {index} (byte offset {}) is not below {}",
                    index * RECORD_LENGTH,
                    CLASSES.len()
                ),
            )
            .with_hint("this is not a CIFAR-10 batch (CIFAR-100's binary records are laid out differently)"));
        }
        set.labels.push(u32::from(label));
        set.pixels.extend_from_slice(&record[1..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose pixels all equal `fill`.
    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut bytes = vec![fill; RECORD_LENGTH];
        bytes[0] = label;
        bytes
    }

    /// Writes two records into each training batch (labels = batch number) and one into the
    /// test batch, in `dir`'s `cifar-10-batches-bin`; returns that subdirectory.
    fn write_batches(dir: &Path) -> PathBuf {
        let batches = dir.join(ARCHIVE_DIR);
        std::fs::create_dir(&batches).unwrap();
        for (number, name) in (0u8..).zip(TRAIN_BATCHES) {
            std::fs::write(
                batches.join(name),
                [record(number, 10 * number), record(9, 1)].concat(),
            )
            .unwrap();
        }
        std::fs::write(batches.join(TEST_BATCH), record(3, 200)).unwrap();
        batches
    }

    fn error(batches: &Path) -> String {
        read_splits(batches).unwrap_err().to_string()
    }

    #[test]
    fn reads_batches_in_the_archive_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(locate(dir.path()).is_none());
        let batches = write_batches(dir.path());
        assert_eq!(locate(dir.path()), Some(batches.clone()));
        let splits = read_splits(&batches).unwrap();
        assert_eq!(splits.original_shape, [3, 32, 32]);
        assert_eq!(splits.train.labels, [0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
        assert_eq!(splits.train.image(2), [10; 3072]);
        assert_eq!(splits.test.labels, [3]);
        assert_eq!(splits.test.pixels, [200; 3072]);
        assert_eq!(splits.train.class_names[0], "airplane");
        assert_eq!(splits.test.classes(), 10);
    }

    #[test]
    fn class_names_come_from_the_meta_file() {
        let dir = tempfile::tempdir().unwrap();
        let batches = write_batches(dir.path());
        let names: Vec<String> = (0..10).map(|n| format!("class {n}")).collect();
        std::fs::write(batches.join(META), names.join("\n") + "\n\n").unwrap();
        assert_eq!(read_splits(&batches).unwrap().train.class_names, names);
        std::fs::write(batches.join(META), "cat\ndog\n").unwrap();
        assert!(error(&batches).contains("batches.meta.txt: 2 class names, expected 10"));
    }

    #[test]
    fn a_partial_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let batches = write_batches(dir.path());
        std::fs::write(
            batches.join(TEST_BATCH),
            [record(3, 0), vec![0; 100]].concat(),
        )
        .unwrap();
        let message = error(&batches);
        assert!(
            message.contains("test_batch.bin: 3173 bytes is not a whole, nonzero number of 3073-byte records (100 bytes past"),
            "{message}"
        );
        std::fs::write(batches.join(TEST_BATCH), []).unwrap();
        assert!(error(&batches).contains("test_batch.bin: 0 bytes"));
    }

    #[test]
    fn a_label_past_ten_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let batches = write_batches(dir.path());
        std::fs::write(
            batches.join(TRAIN_BATCHES[1]),
            [record(1, 0), record(10, 0)].concat(),
        )
        .unwrap();
        let message = error(&batches);
        assert!(
            message.contains(
                "data_batch_2.bin: label 10 of record 1 (byte offset 3073) is not below 10"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_missing_batch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let batches = write_batches(dir.path());
        std::fs::remove_file(batches.join(TRAIN_BATCHES[4])).unwrap();
        assert!(error(&batches).contains("data_batch_5.bin: missing CIFAR-10 batch"));
    }
}
