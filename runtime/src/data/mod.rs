//! Data sets for training: the readers (IDX, CIFAR-10 binary, image folders), conforming a data
//! set to the network's input shape, validation splits, per-channel normalisation, augmentation,
//! and loading batches on a background thread.
//!
//! A data set is held in memory as bytes, one `u8` per pixel and channel: the largest sets this
//! targets (Imagenette at a small size, CIFAR-10) fit easily, and converting to `f32` only per
//! batch keeps the resident size a quarter of what floats would need.

pub mod augment;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod loader;

pub use augment::Augment;
pub use loader::{batches_per_epoch, epoch_order, Batch, Loader, LoaderOptions};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` package installs the IDX files.
const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The source name that stands for the installed Fashion-MNIST.
const FASHION_MNIST: &str = "fashion-mnist";
const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// ITU-R BT.601 luma weights, the usual grey conversion for these data sets.
const LUMINANCE: [f32; 3] = [0.299, 0.587, 0.114];

/// Labelled images of one shape.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Channels, height and width of every image.
    pub shape: [usize; 3],
    /// Example-major, channel-height-width within an example.
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Bytes per example.
    fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.image_size();
        &self.pixels[index * size..(index + 1) * size]
    }

    /// The first `count` examples, or all of them if there are fewer.
    pub fn take(&self, count: usize) -> Dataset {
        self.select((0..count.min(self.len())).collect())
    }

    /// Holds out `round(fraction * len)` examples chosen by a shuffle seeded with `seed` (the
    /// validation split) and returns `(kept, held_out)`, each in the original relative order.
    /// `fraction` is clamped to `[0, 1]`.
    pub fn split(&self, fraction: f64, seed: u64) -> (Dataset, Dataset) {
        // A NaN fraction casts to 0: nothing held out.
        let held_count =
            ((fraction.clamp(0.0, 1.0) * self.len() as f64).round() as usize).min(self.len());
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut held = vec![false; self.len()];
        for &index in &order[..held_count] {
            held[index] = true;
        }
        let (held_out, kept): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&i| held[i]);
        (self.select(kept), self.select(held_out))
    }

    /// The examples at `indices`, in that order.
    fn select(&self, indices: Vec<usize>) -> Dataset {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_size());
        for &index in &indices {
            pixels.extend_from_slice(self.image(index));
        }
        Dataset {
            shape: self.shape,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
        }
    }

    /// Per-channel mean and standard deviation of `pixel / 255` over the whole set. A channel
    /// that is constant (or a set that is empty) gets standard deviation 1, so that normalising
    /// never divides by zero.
    pub fn normalization(&self) -> Normalization {
        let [channels, height, width] = self.shape;
        let plane = height * width;
        if self.is_empty() || plane == 0 {
            return Normalization::identity(channels);
        }
        // Integer sums are exact (255² × 2⁴⁰ values would still fit), so the result does not
        // depend on summation order.
        let mut sums = vec![0u64; channels];
        let mut squares = vec![0u64; channels];
        for image in self.pixels.chunks_exact(self.image_size()) {
            for (channel, values) in image.chunks_exact(plane).enumerate() {
                for &value in values {
                    sums[channel] += u64::from(value);
                    squares[channel] += u64::from(value) * u64::from(value);
                }
            }
        }
        let count = (self.len() * plane) as f64;
        let (mean, std) = sums
            .iter()
            .zip(&squares)
            .map(|(&sum, &square)| {
                let mean = sum as f64 / count / 255.0;
                let variance = (square as f64 / count / (255.0 * 255.0) - mean * mean).max(0.0);
                let std = variance.sqrt();
                (mean as f32, if std > 1e-6 { std as f32 } else { 1.0 })
            })
            .unzip();
        Normalization { mean, std }
    }
}

/// What normalising subtracts and divides by, per channel, in `pixel / 255` units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean 0 and standard deviation 1: pixels only scaled to `[0, 1]`.
    pub fn identity(channels: usize) -> Normalization {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }
}

/// A data set's training and test sets, conformed to the network's input.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
    /// The data's own shape before conforming (for a folder, the first training image's).
    pub original_shape: [usize; 3],
}

/// Why a data set could not be read, where, and what to do about it.
#[derive(Debug)]
pub struct DataError {
    pub path: PathBuf,
    pub message: String,
    pub hint: Option<String>,
}

impl DataError {
    pub(crate) fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> DataError {
        DataError {
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> DataError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DataError {}

/// A whole file's bytes.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path)
        .map_err(|error| DataError::new(path, format!("cannot read the file: {error}")))
}

/// Opens `source` (`fashion-mnist`, or a directory holding IDX, CIFAR-10 binary or image-folder
/// data) and conforms both sets to `input_shape`, the network's input (channels, height, width).
pub fn open(source: &str, input_shape: [usize; 3]) -> Result<Splits, DataError> {
    let splits = if source == FASHION_MNIST {
        open_fashion_mnist()?
    } else {
        open_directory(Path::new(source), input_shape)?
    };
    Ok(Splits {
        train: conform(splits.train, input_shape, Path::new(source))?,
        test: conform(splits.test, input_shape, Path::new(source))?,
        original_shape: splits.original_shape,
    })
}

fn open_fashion_mnist() -> Result<Splits, DataError> {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() {
        return Err(DataError::new(dir, "Fashion-MNIST is not installed").with_hint(
            "install it with `sudo apt-get install dataset-fashion-mnist`, or give a directory \
             holding its IDX files",
        ));
    }
    let names = FASHION_MNIST_CLASSES.map(String::from).to_vec();
    idx::read_splits(dir, Some(names))
}

/// Reads a directory in whichever layout it holds, unconformed (except image folders, whose
/// images are resized to the input's height and width as they are decoded).
fn open_directory(dir: &Path, input_shape: [usize; 3]) -> Result<Splits, DataError> {
    if !dir.is_dir() {
        return Err(DataError::new(dir, "no such directory").with_hint(
            "give `fashion-mnist` or a directory holding IDX, CIFAR-10 binary or image-folder data",
        ));
    }
    if idx::is_present(dir) {
        return idx::read_splits(dir, None);
    }
    if let Some(batches) = cifar::locate(dir) {
        return cifar::read_splits(&batches);
    }
    if let Some(layout) = folder::locate(dir) {
        check_channels(folder::CHANNELS, input_shape[0], dir)?;
        return folder::read_splits(&layout, [input_shape[1], input_shape[2]]);
    }
    Err(
        DataError::new(dir, "found no data set in this directory").with_hint(
            "looked for IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, \
         t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz); CIFAR-10 batches \
         (data_batch_1.bin .. data_batch_5.bin and test_batch.bin, here or in \
         cifar-10-batches-bin/); or an image folder (train/ and val/ or test/, one subfolder of \
         JPEG or PNG images per class)",
        ),
    )
}

/// Only grey and colour convert into each other.
fn check_channels(data: usize, network: usize, source: &Path) -> Result<(), DataError> {
    if data == network || matches!((data, network), (1, 3) | (3, 1)) {
        return Ok(());
    }
    Err(DataError::new(
        source,
        format!("the data has {data} channels and the network takes {network}"),
    )
    .with_hint(
        "only 1-channel and 3-channel data convert into each other; change the network's input",
    ))
}

/// Resizes (bilinear) to the input's height and width, then converts grey to colour by
/// replication or colour to grey by luminance.
pub(crate) fn conform(
    set: Dataset,
    input_shape: [usize; 3],
    source: &Path,
) -> Result<Dataset, DataError> {
    check_channels(set.shape[0], input_shape[0], source)?;
    let resized = if set.shape[1..] == input_shape[1..] {
        set
    } else {
        resize(set, input_shape[1], input_shape[2])
    };
    Ok(convert_channels(resized, input_shape[0]))
}

/// Bilinear, with pixel centres aligned and edges clamped. Written out rather than taken from
/// `image`, whose generic resize would be compiled with this crate's (unoptimised, in tests)
/// settings and takes seconds per data set there.
fn resize(set: Dataset, height: usize, width: usize) -> Dataset {
    let [channels, old_height, old_width] = set.shape;
    let rows = bilinear_taps(old_height, height);
    let columns = bilinear_taps(old_width, width);
    let mut pixels = Vec::with_capacity(set.len() * channels * height * width);
    for plane in set.pixels.chunks_exact(old_height * old_width) {
        let at = |y: usize, x: usize| f32::from(plane[y * old_width + x]);
        for &(top, bottom, down) in &rows {
            for &(left, right, across) in &columns {
                let upper = at(top, left) + across * (at(top, right) - at(top, left));
                let lower = at(bottom, left) + across * (at(bottom, right) - at(bottom, left));
                pixels.push((upper + down * (lower - upper)).round() as u8);
            }
        }
    }
    Dataset {
        shape: [channels, height, width],
        pixels,
        ..set
    }
}

/// For each of `output` positions along an axis of `input` (nonzero) pixels: the two source
/// pixels it blends and the second's weight.
fn bilinear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let ratio = input as f32 / output as f32;
    (0..output)
        .map(|position| {
            let source = ((position as f32 + 0.5) * ratio - 0.5).clamp(0.0, (input - 1) as f32);
            let low = source.floor() as usize;
            (low, (low + 1).min(input - 1), source - low as f32)
        })
        .collect()
}

/// Converts to `channels`, which `check_channels` has accepted.
fn convert_channels(set: Dataset, channels: usize) -> Dataset {
    let [old_channels, height, width] = set.shape;
    if old_channels == channels {
        return set;
    }
    let plane = height * width;
    let mut pixels = Vec::with_capacity(set.len() * channels * plane);
    for image in set.pixels.chunks_exact(old_channels * plane) {
        if old_channels == 1 {
            for _ in 0..channels {
                pixels.extend_from_slice(image);
            }
        } else {
            let (red, rest) = image.split_at(plane);
            let (green, blue) = rest.split_at(plane);
            pixels.extend((0..plane).map(|i| {
                let grey = LUMINANCE[0] * f32::from(red[i])
                    + LUMINANCE[1] * f32::from(green[i])
                    + LUMINANCE[2] * f32::from(blue[i]);
                grey.round() as u8
            }));
        }
    }
    Dataset {
        shape: [channels, height, width],
        pixels,
        ..set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` examples of `shape`, pixel `i` of example `n` being `n * 16 + i`, each labelled
    /// with its index.
    fn numbered(shape: [usize; 3], count: usize) -> Dataset {
        Dataset {
            shape,
            pixels: idx::tests::example_pixels(count, shape.iter().product()),
            labels: (0..count as u32).collect(),
            class_names: (0..count).map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn errors_show_the_path_and_the_hint() {
        let error = DataError::new("/data/x", "broken");
        assert_eq!(error.to_string(), "/data/x: broken");
        assert_eq!(
            error.with_hint("fix it").to_string(),
            "/data/x: broken\n  help: fix it"
        );
    }

    #[test]
    fn take_keeps_the_first_examples() {
        let set = numbered([1, 2, 2], 5);
        let first = set.take(2);
        assert_eq!(first.labels, [0, 1]);
        assert_eq!(first.pixels, set.pixels[..8]);
        assert_eq!(set.take(9).len(), 5);
    }

    #[test]
    fn split_holds_out_a_seeded_disjoint_subset_in_order() {
        let set = numbered([1, 1, 2], 10);
        let (kept, held_out) = set.split(0.26, 7);
        assert_eq!((kept.len(), held_out.len()), (7, 3));
        for part in [&kept, &held_out] {
            assert!(
                part.labels.windows(2).all(|pair| pair[0] < pair[1]),
                "order kept"
            );
            for (position, &label) in part.labels.iter().enumerate() {
                assert_eq!(
                    part.image(position),
                    set.image(label as usize),
                    "images stay with labels"
                );
            }
        }
        let mut all = [kept.labels.clone(), held_out.labels.clone()].concat();
        all.sort();
        assert_eq!(all, set.labels);
        assert_eq!(set.split(0.26, 7).1.labels, held_out.labels);
        assert_ne!(
            (0..8)
                .map(|seed| set.split(0.26, seed).1.labels)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            1
        );
        let (all_kept, none) = set.split(0.0, 7);
        assert_eq!((all_kept.labels, none.len()), (set.labels.clone(), 0));
        assert_eq!(set.split(1.0, 7).0.len(), 0);
    }

    #[test]
    fn normalization_is_per_channel_in_unit_scale() {
        let set = Dataset {
            shape: [2, 1, 2],
            pixels: vec![0, 255, 51, 51, 255, 0, 51, 51],
            labels: vec![0, 0],
            class_names: vec!["only".into()],
        };
        let normalization = set.normalization();
        assert_eq!(normalization.mean, [0.5, 0.2]);
        // The constant second channel gets 1 rather than 0.
        assert_eq!(normalization.std, [0.5, 1.0]);
        assert_eq!(set.take(0).normalization(), Normalization::identity(2));
    }

    #[test]
    fn conforming_resizes_and_converts_channels() {
        let flat = Dataset {
            pixels: vec![90; 2 * 4],
            ..numbered([1, 2, 2], 2)
        };
        let resized = conform(flat, [3, 4, 3], Path::new("s")).unwrap();
        assert_eq!(resized.shape, [3, 4, 3]);
        assert_eq!(resized.pixels, [90; 2 * 3 * 12]);
        assert_eq!(resized.labels, [0, 1]);

        // Doubling blends neighbours a quarter and three quarters of the way; halving averages.
        let ramp = Dataset {
            pixels: vec![0, 100],
            ..numbered([1, 1, 2], 1)
        };
        let doubled = conform(ramp, [1, 1, 4], Path::new("s")).unwrap();
        assert_eq!(doubled.pixels, [0, 25, 75, 100]);
        let halved = conform(doubled, [1, 1, 2], Path::new("s")).unwrap();
        assert_eq!(halved.pixels, [13, 88]);

        let grey = numbered([1, 1, 2], 2);
        let colour = conform(grey, [3, 1, 2], Path::new("s")).unwrap();
        assert_eq!(colour.pixels, [0, 1, 0, 1, 0, 1, 16, 17, 16, 17, 16, 17]);

        let colour = Dataset {
            // Red, green, grey, channel by channel.
            pixels: vec![255, 0, 100, 0, 255, 100, 0, 0, 100],
            ..numbered([3, 1, 3], 1)
        };
        let grey = conform(colour, [1, 1, 3], Path::new("s")).unwrap();
        // 0.299 × 255 and 0.587 × 255, rounded; the weights sum to 1.
        assert_eq!(grey.pixels, [76, 150, 100]);

        let message = conform(numbered([2, 1, 1], 1), [3, 1, 1], Path::new("s"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("s: the data has 2 channels and the network takes 3"),
            "{message}"
        );
    }

    #[test]
    fn opens_an_idx_directory_conformed_to_the_input() {
        let dir = tempfile::tempdir().unwrap();
        idx::tests::write_idx_dir(dir.path(), [4, 2], [3, 2], true);
        let splits = open(dir.path().to_str().unwrap(), [3, 6, 4]).unwrap();
        assert_eq!(splits.original_shape, [1, 3, 2]);
        assert_eq!(
            (splits.train.shape, splits.test.shape),
            ([3, 6, 4], [3, 6, 4])
        );
        assert_eq!((splits.train.len(), splits.test.len()), (4, 2));
        assert_eq!(splits.test.pixels.len(), 2 * 3 * 24);
        assert_eq!(splits.train.class_names, ["0", "1", "2"]);
        let image = splits.train.image(1);
        assert_eq!(
            image[..24],
            image[24..48],
            "grey replicated into every channel"
        );
    }

    #[test]
    fn a_folder_with_the_wrong_channel_count_fails_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train/cat")).unwrap();
        std::fs::create_dir_all(dir.path().join("val/cat")).unwrap();
        std::fs::write(dir.path().join("train/cat/broken.png"), "not decoded").unwrap();
        let message = open(dir.path().to_str().unwrap(), [4, 8, 8])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("the data has 3 channels and the network takes 4"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_layout_says_what_was_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("readme.txt"), "nothing here").unwrap();
        let message = open(dir.path().to_str().unwrap(), [1, 28, 28])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("found no data set in this directory"),
            "{message}"
        );
        for looked_for in [
            "train-images-idx3-ubyte",
            "data_batch_1.bin",
            "cifar-10-batches-bin",
            "val/ or test/",
        ] {
            assert!(message.contains(looked_for), "{message}");
        }
        let missing = dir.path().join("absent");
        let message = open(missing.to_str().unwrap(), [1, 28, 28])
            .unwrap_err()
            .to_string();
        assert!(message.contains("absent: no such directory"), "{message}");
    }
}
