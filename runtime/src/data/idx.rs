//! The IDX reader: MNIST's and Fashion-MNIST's format, a big-endian header (magic number,
//! then one `u32` per dimension) followed by the elements, raw or gzip-compressed.

use super::{read_file, DataError, Dataset, Splits};
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The element-type byte of unsigned bytes, the only type these data sets use.
const UNSIGNED_BYTE: u8 = 0x08;

/// What one IDX file is expected to hold.
struct Kind {
    name: &'static str,
    dimensions: usize,
}

const IMAGES: Kind = Kind {
    name: "image",
    dimensions: 3,
};
const LABELS: Kind = Kind {
    name: "label",
    dimensions: 1,
};

/// Whether `dir` holds IDX training images, which is what makes it an IDX directory.
pub fn is_present(dir: &Path) -> bool {
    find(dir, TRAIN_IMAGES).is_some()
}

/// Reads the training and test sets of the IDX directory `dir`. Without `class_names`, the
/// classes are named by their numbers, as many as the largest label (over both sets) needs.
pub fn read_splits(dir: &Path, class_names: Option<Vec<String>>) -> Result<Splits, DataError> {
    let classes = class_names.as_ref().map(Vec::len);
    let mut train = read_set(dir, TRAIN_IMAGES, TRAIN_LABELS, classes)?;
    let mut test = read_set(dir, TEST_IMAGES, TEST_LABELS, classes)?;
    if test.shape != train.shape {
        return Err(DataError::new(
            dir,
            format!(
                "the test images are {}×{} and the training images {}×{}",
                test.shape[1], test.shape[2], train.shape[1], train.shape[2]
            ),
        )
        .with_hint("both sets must come from the same data set"));
    }
    let class_names = class_names.unwrap_or_else(|| {
        let classes = train
            .labels
            .iter()
            .chain(&test.labels)
            .max()
            .map_or(0, |&label| label + 1);
        (0..classes).map(|label| label.to_string()).collect()
    });
    train.class_names.clone_from(&class_names);
    test.class_names = class_names;
    Ok(Splits {
        original_shape: train.shape,
        train,
        test,
    })
}

/// The file `name` or `name.gz` in `dir`, whichever exists.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.gz")]
        .into_iter()
        .map(|file| dir.join(file))
        .find(|path| path.is_file())
}

/// One set, its class names left for the caller; the labels are checked against `classes` when
/// known.
fn read_set(
    dir: &Path,
    images_name: &str,
    labels_name: &str,
    classes: Option<usize>,
) -> Result<Dataset, DataError> {
    let require = |name: &str| {
        find(dir, name).ok_or_else(|| {
            DataError::new(dir.join(name), "missing IDX file")
                .with_hint(format!("put {name} (or {name}.gz) next to {TRAIN_IMAGES}"))
        })
    };
    let images_path = require(images_name)?;
    let labels_path = require(labels_name)?;
    let (dimensions, pixels) = read_idx(&images_path, &IMAGES)?;
    if dimensions[1] == 0 || dimensions[2] == 0 {
        return Err(DataError::new(
            &images_path,
            format!("images of {}×{} pixels", dimensions[1], dimensions[2]),
        )
        .with_hint("the header is corrupt; download the file again"));
    }
    let (_, labels) = read_idx(&labels_path, &LABELS)?;
    if labels.len() != dimensions[0] {
        return Err(DataError::new(
            &labels_path,
            format!(
                "{} labels for the {} images of {}",
                labels.len(),
                dimensions[0],
                images_path.display()
            ),
        )
        .with_hint("the image and label files must come from the same set"));
    }
    if let Some(classes) = classes {
        if let Some((index, label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &label)| usize::from(label) >= classes)
        {
            return Err(DataError::new(
                &labels_path,
                format!("label {label} of example {index} is not below the {classes} classes"),
            ));
        }
    }
    Ok(Dataset {
        shape: [1, dimensions[1], dimensions[2]],
        pixels,
        labels: labels.into_iter().map(u32::from).collect(),
        class_names: Vec::new(),
    })
}

/// An IDX file's dimensions and elements, decompressed if it starts with gzip's magic bytes.
fn read_idx(path: &Path, kind: &Kind) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let mut bytes = read_file(path)?;
    let compressed = bytes.starts_with(&GZIP_MAGIC);
    if compressed {
        let mut decompressed = Vec::new();
        MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut decompressed)
            .map_err(|error| {
                DataError::new(path, format!("corrupt or truncated gzip data: {error}"))
                    .with_hint("download the file again")
            })?;
        bytes = decompressed;
    }
    let not_idx = |message: String| {
        DataError::new(path, message).with_hint(format!(
            "an IDX {} file of unsigned bytes starts with 0x0000080{}; is this the right file?",
            kind.name, kind.dimensions
        ))
    };
    let Some(&[zero_a, zero_b, element_type, dimension_count]) = bytes.get(..4) else {
        return Err(not_idx(format!(
            "{} bytes: too short for an IDX header",
            bytes.len()
        )));
    };
    if [zero_a, zero_b] != [0, 0] {
        let magic = u32::from_be_bytes([zero_a, zero_b, element_type, dimension_count]);
        return Err(not_idx(format!(
            "not an IDX file: magic number 0x{magic:08x}"
        )));
    }
    if element_type != UNSIGNED_BYTE {
        return Err(not_idx(format!(
            "element type 0x{element_type:02x}, expected unsigned bytes (0x{UNSIGNED_BYTE:02x})"
        )));
    }
    if usize::from(dimension_count) != kind.dimensions {
        return Err(not_idx(format!(
            "{dimension_count} dimensions, expected {} for {} data",
            kind.dimensions, kind.name
        )));
    }
    let header_length = 4 + 4 * kind.dimensions;
    let described = if compressed { " (decompressed)" } else { "" };
    let truncated = |expected: usize, what: String| {
        DataError::new(
            path,
            format!(
                "expected {expected} bytes ({what}), found {}{described}",
                bytes.len()
            ),
        )
        .with_hint("the file is truncated or corrupt; download it again")
    };
    let Some(header) = bytes.get(4..header_length) else {
        return Err(truncated(header_length, "the IDX header".into()));
    };
    let dimensions: Vec<usize> = header
        .chunks_exact(4)
        .map(|size| u32::from_be_bytes(size.try_into().expect("chunks of 4")) as usize)
        .collect();
    let expected_length = dimensions
        .iter()
        .try_fold(1usize, |product, &size| product.checked_mul(size))
        .and_then(|elements| elements.checked_add(header_length));
    let Some(expected_length) = expected_length else {
        return Err(not_idx(format!("dimensions {dimensions:?} too large")));
    };
    if bytes.len() != expected_length {
        let shape = dimensions
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("×");
        return Err(truncated(
            expected_length,
            format!("a {header_length}-byte header and {shape} elements"),
        ));
    }
    bytes.drain(..header_length);
    Ok((dimensions, bytes))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    const IMAGES_MAGIC: u32 = 0x0000_0803;
    const LABELS_MAGIC: u32 = 0x0000_0801;

    fn idx_file(magic: u32, dimensions: &[u32], elements: &[u8]) -> Vec<u8> {
        let mut bytes = magic.to_be_bytes().to_vec();
        for size in dimensions {
            bytes.extend_from_slice(&size.to_be_bytes());
        }
        bytes.extend_from_slice(elements);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Pixel `i` of example `n` is `n * 16 + i`; labels cycle through 0, 1, 2.
    pub(in crate::data) fn example_pixels(count: usize, size: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|n| (0..size).map(move |i| (n * 16 + i) as u8))
            .collect()
    }

    /// Writes an IDX directory of `train` and `test` examples of `height` × `width`, gzipped
    /// (under `.gz` names) or not.
    pub(in crate::data) fn write_idx_dir(
        dir: &Path,
        [train, test]: [usize; 2],
        [height, width]: [usize; 2],
        compressed: bool,
    ) {
        let sets = [
            (TRAIN_IMAGES, TRAIN_LABELS, train),
            (TEST_IMAGES, TEST_LABELS, test),
        ];
        for (images_name, labels_name, count) in sets {
            let images = idx_file(
                IMAGES_MAGIC,
                &[count as u32, height as u32, width as u32],
                &example_pixels(count, height * width),
            );
            let labels: Vec<u8> = (0..count).map(|n| (n % 3) as u8).collect();
            let labels = idx_file(LABELS_MAGIC, &[count as u32], &labels);
            for (name, bytes) in [(images_name, images), (labels_name, labels)] {
                if compressed {
                    std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
                } else {
                    std::fs::write(dir.join(name), bytes).unwrap();
                }
            }
        }
    }

    fn error(dir: &Path) -> String {
        read_splits(dir, None).unwrap_err().to_string()
    }

    #[test]
    fn reads_raw_files() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_dir(dir.path(), [4, 2], [3, 2], false);
        assert!(is_present(dir.path()));
        let splits = read_splits(dir.path(), None).unwrap();
        assert_eq!(splits.original_shape, [1, 3, 2]);
        assert_eq!((splits.train.len(), splits.test.len()), (4, 2));
        assert_eq!(splits.train.pixels, example_pixels(4, 6));
        assert_eq!(splits.train.labels, [0, 1, 2, 0]);
        assert_eq!(splits.train.class_names, ["0", "1", "2"]);
        assert_eq!(splits.test.class_names, ["0", "1", "2"]);
    }

    #[test]
    fn gzip_is_detected_by_content() {
        let raw = tempfile::tempdir().unwrap();
        write_idx_dir(raw.path(), [4, 2], [3, 2], false);
        let compressed = tempfile::tempdir().unwrap();
        write_idx_dir(compressed.path(), [4, 2], [3, 2], true);
        // Gzip data under the uncompressed name is still read as gzip.
        std::fs::rename(
            compressed.path().join("t10k-labels-idx1-ubyte.gz"),
            compressed.path().join("t10k-labels-idx1-ubyte"),
        )
        .unwrap();
        let expected = read_splits(raw.path(), None).unwrap();
        let found = read_splits(compressed.path(), None).unwrap();
        assert_eq!(found.train.pixels, expected.train.pixels);
        assert_eq!(found.test.pixels, expected.test.pixels);
        assert_eq!(found.test.labels, expected.test.labels);
    }

    #[test]
    fn given_class_names_bound_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_dir(dir.path(), [4, 2], [3, 2], false);
        let names = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(
            read_splits(dir.path(), Some(names))
                .unwrap()
                .test
                .class_names,
            ["a", "b", "c"]
        );
        let too_few = ["a", "b"].map(String::from).to_vec();
        let message = read_splits(dir.path(), Some(too_few))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(
                "train-labels-idx1-ubyte: label 2 of example 2 is not below the 2 classes"
            ),
            "{message}"
        );
    }

    #[test]
    fn bad_magic_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_dir(dir.path(), [4, 2], [3, 2], false);
        std::fs::write(
            dir.path().join(TRAIN_IMAGES),
            idx_file(0x1234_5678, &[1, 1, 1], &[0]),
        )
        .unwrap();
        let message = error(dir.path());
        assert!(
            message.contains("train-images-idx3-ubyte: not an IDX file: magic number 0x12345678"),
            "{message}"
        );
        assert!(message.contains("help: "), "{message}");
        // A label file where images belong: one dimension, not three.
        std::fs::write(
            dir.path().join(TRAIN_IMAGES),
            idx_file(LABELS_MAGIC, &[1], &[0]),
        )
        .unwrap();
        assert!(error(dir.path()).contains("1 dimensions, expected 3"));
        std::fs::write(
            dir.path().join(TRAIN_IMAGES),
            idx_file(0x0000_0d03, &[1, 1, 1], &[0; 4]),
        )
        .unwrap();
        assert!(error(dir.path()).contains("element type 0x0d"));
        let empty_images = idx_file(IMAGES_MAGIC, &[4, 0, 2], &[]);
        std::fs::write(dir.path().join(TRAIN_IMAGES), empty_images).unwrap();
        assert!(error(dir.path()).contains("images of 0×2 pixels"));
    }

    #[test]
    fn truncation_reports_expected_and_found_lengths() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_dir(dir.path(), [4, 2], [3, 2], false);
        let path = dir.path().join(TEST_IMAGES);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 16 + 2 * 6);
        std::fs::write(&path, &bytes[..20]).unwrap();
        let message = error(dir.path());
        let expected = "t10k-images-idx3-ubyte: expected 28 bytes (a 16-byte header and 2×3×2 elements), found 20";
        assert!(message.contains(expected), "{message}");
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(error(dir.path()).contains("expected 16 bytes (the IDX header), found 10"));
        std::fs::write(&path, &bytes[..2]).unwrap();
        assert!(error(dir.path()).contains("2 bytes: too short for an IDX header"));
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_dir(dir.path(), [4, 2], [3, 2], true);
        let path = dir.path().join(format!("{TRAIN_IMAGES}.gz"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let message = error(dir.path());
        assert!(
            message.contains("train-images-idx3-ubyte.gz: corrupt or truncated gzip data"),
            "{message}"
        );
    }

    #[test]
    fn label_count_must_match_image_count() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_dir(dir.path(), [4, 2], [3, 2], false);
        std::fs::write(
            dir.path().join(TRAIN_LABELS),
            idx_file(LABELS_MAGIC, &[3], &[0, 1, 2]),
        )
        .unwrap();
        let message = error(dir.path());
        assert!(
            message.contains("train-labels-idx1-ubyte: 3 labels for the 4 images"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_present(dir.path()));
        write_idx_dir(dir.path(), [4, 2], [3, 2], false);
        std::fs::remove_file(dir.path().join(TEST_LABELS)).unwrap();
        let message = error(dir.path());
        assert!(
            message.contains("t10k-labels-idx1-ubyte: missing IDX file"),
            "{message}"
        );
    }

    #[test]
    fn test_and_training_shapes_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_dir(dir.path(), [4, 2], [3, 2], false);
        let test_images = idx_file(IMAGES_MAGIC, &[2, 2, 2], &[0; 8]);
        std::fs::write(dir.path().join(TEST_IMAGES), test_images).unwrap();
        assert!(error(dir.path()).contains("the test images are 2×2 and the training images 3×2"));
    }
}
