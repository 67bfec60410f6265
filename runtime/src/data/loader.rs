//! Batches of one epoch, normalised and augmented on a background thread a few batches ahead of
//! the training step that consumes them.
//!
//! Every random choice is a pure function of the seed, the epoch and an example's position in
//! the epoch, never of what was drawn before: an epoch resumed from a checkpoint in its middle
//! yields, bit for bit, the batches the uninterrupted epoch would have.

use super::{Augment, Dataset, Normalization};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Batches prepared ahead: enough to absorb a slow batch, few enough to bound memory.
const PREFETCH: usize = 3;

/// What a generator is drawn for, so that the epoch's order and an example's augmentation never
/// share a stream.
#[derive(Clone, Copy)]
enum Purpose {
    Order = 1,
    Augmentation = 2,
}

/// A generator keyed by everything its draws may depend on.
fn keyed_rng(seed: u64, epoch: u64, position: u64, purpose: Purpose) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&position.to_le_bytes());
    key[24] = purpose as u8;
    ChaCha8Rng::from_seed(key)
}

/// The order in which epoch `epoch` visits `len` examples: a permutation of `0..len`.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut keyed_rng(seed, epoch, 0, Purpose::Order));
    order
}

/// How many batches an epoch of `len` examples has; `drop_last` leaves out a partial last one.
pub fn batches_per_epoch(len: usize, batch: usize, drop_last: bool) -> usize {
    match batch {
        0 => 0,
        _ if drop_last => len / batch,
        _ => len.div_ceil(batch),
    }
}

/// Examples ready for a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `batch` × channels × height × width.
    pub images: Vec<f32>,
    /// Each example's class index.
    pub labels: Vec<f32>,
    /// How many examples are real; the rest, only in a partial last batch, are zeros.
    pub count: usize,
}

#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub batch: usize,
    pub shuffle: bool,
    pub augment: Augment,
    pub seed: u64,
    pub epoch: u64,
    /// The batch to start at, to resume an epoch.
    pub first_batch: usize,
    /// Leave out a partial last batch (training) rather than pad it (evaluation).
    pub drop_last: bool,
}

impl LoaderOptions {
    /// Every example once, in order, unaugmented, the last batch padded: for evaluation.
    pub fn in_order(batch: usize) -> LoaderOptions {
        LoaderOptions {
            batch,
            shuffle: false,
            augment: Augment::default(),
            seed: 0,
            epoch: 0,
            first_batch: 0,
            drop_last: false,
        }
    }
}

/// The batches of one epoch, from `first_batch` on.
pub struct Loader {
    /// Taken on drop, before joining, so that a worker blocked on a full channel wakes up.
    receiver: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl Loader {
    pub fn new(data: Arc<Dataset>, normalization: Normalization, options: LoaderOptions) -> Loader {
        let (sender, receiver) = sync_channel(PREFETCH);
        let worker = std::thread::Builder::new()
            .name("netc-loader".into())
            .spawn(move || {
                let batches = batches_per_epoch(data.len(), options.batch, options.drop_last);
                let order = if options.shuffle {
                    epoch_order(data.len(), options.seed, options.epoch)
                } else {
                    (0..data.len()).collect()
                };
                for index in options.first_batch..batches {
                    let batch = assemble(&data, &normalization, &options, &order, index);
                    if sender.send(batch).is_err() {
                        return; // The loader was dropped.
                    }
                }
            })
            .expect("the operating system can start a thread");
        Loader {
            receiver: Some(receiver),
            worker: Some(worker),
        }
    }
}

/// Batch `index` of the epoch visiting examples in `order`.
fn assemble(
    data: &Dataset,
    normalization: &Normalization,
    options: &LoaderOptions,
    order: &[usize],
    index: usize,
) -> Batch {
    let size: usize = data.shape.iter().product();
    let first = index * options.batch;
    let positions = first..(first + options.batch).min(order.len());
    let mut images = vec![0.0; options.batch * size];
    let mut labels = vec![0.0; options.batch];
    for ((position, image), label) in positions
        .clone()
        .zip(images.chunks_exact_mut(size.max(1)))
        .zip(&mut labels)
    {
        let example = order[position];
        let mut rng = keyed_rng(
            options.seed,
            options.epoch,
            position as u64,
            Purpose::Augmentation,
        );
        options.augment.apply(
            data.image(example),
            data.shape,
            normalization,
            &mut rng,
            image,
        );
        *label = data.labels[example] as f32;
    }
    Batch {
        images,
        labels,
        count: positions.len(),
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let batch = self.receiver.as_ref()?.recv().ok();
        if batch.is_none() {
            // The worker is done; if it died of a bug, say so here rather than end the epoch early.
            if let Some(Err(panic)) = self.worker.take().map(JoinHandle::join) {
                std::panic::resume_unwind(panic);
            }
        }
        batch
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        drop(self.receiver.take());
        if let Some(worker) = self.worker.take() {
            // A worker's panic was already reported on its own thread; dropping must not panic.
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::tests::example_pixels;

    const SHAPE: [usize; 3] = [1, 2, 2];

    /// Ten examples whose first pixel is 16 × their index, labelled with that index.
    fn dataset() -> Arc<Dataset> {
        Arc::new(Dataset {
            shape: SHAPE,
            pixels: example_pixels(10, 4),
            labels: (0..10).collect(),
            class_names: (0..10).map(|n| n.to_string()).collect(),
        })
    }

    fn options(batch: usize) -> LoaderOptions {
        LoaderOptions {
            batch,
            shuffle: true,
            augment: Augment::default(),
            seed: 11,
            epoch: 0,
            first_batch: 0,
            drop_last: false,
        }
    }

    fn load(options: LoaderOptions) -> Vec<Batch> {
        Loader::new(dataset(), Normalization::identity(1), options).collect()
    }

    /// The labels of the real examples, batch after batch.
    fn labels(batches: &[Batch]) -> Vec<f32> {
        batches
            .iter()
            .flat_map(|batch| batch.labels[..batch.count].to_vec())
            .collect()
    }

    fn bits(batches: &[Batch]) -> Vec<Vec<u32>> {
        batches
            .iter()
            .map(|batch| batch.images.iter().map(|value| value.to_bits()).collect())
            .collect()
    }

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let order = epoch_order(100, 1, 0);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(order, epoch_order(100, 1, 0));
        assert_ne!(order, epoch_order(100, 1, 1));
        assert_ne!(order, epoch_order(100, 2, 0));
    }

    #[test]
    fn counts_batches() {
        assert_eq!(batches_per_epoch(10, 4, false), 3);
        assert_eq!(batches_per_epoch(10, 4, true), 2);
        assert_eq!(batches_per_epoch(8, 4, false), 2);
        assert_eq!(batches_per_epoch(0, 4, false), 0);
        assert_eq!(batches_per_epoch(10, 0, false), 0);
    }

    #[test]
    fn a_shuffled_epoch_visits_each_example_once_with_its_label() {
        let batches = load(options(4));
        assert_eq!(batches.len(), 3);
        let expected: Vec<f32> = epoch_order(10, 11, 0)
            .iter()
            .map(|&index| index as f32)
            .collect();
        assert_eq!(labels(&batches), expected);
        for batch in &batches {
            for (image, label) in batch.images.chunks(4).zip(&batch.labels).take(batch.count) {
                assert_eq!(image[0] * 255.0, label * 16.0, "the image is its label's");
            }
        }
    }

    #[test]
    fn an_unshuffled_epoch_is_in_order() {
        let batches = load(LoaderOptions {
            shuffle: false,
            ..options(4)
        });
        assert_eq!(
            labels(&batches),
            (0..10).map(|n| n as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_last_partial_batch_is_padded_or_dropped() {
        let padded = load(options(4));
        let last = &padded[2];
        assert_eq!(
            (last.count, last.images.len(), last.labels.len()),
            (2, 16, 4)
        );
        assert!(last.images[8..].iter().all(|&value| value == 0.0));
        assert_eq!(last.labels[2..], [0.0, 0.0]);
        assert!(padded[..2].iter().all(|batch| batch.count == 4));
        let dropped = load(LoaderOptions {
            drop_last: true,
            ..options(4)
        });
        assert_eq!(dropped, padded[..2]);
    }

    #[test]
    fn augmented_epochs_are_seeded_and_differ() {
        let augmented = LoaderOptions {
            augment: Augment {
                flip_horizontal: true,
                translate: 1,
                noise: 0.1,
                ..Augment::default()
            },
            ..options(3)
        };
        let first = load(augmented.clone());
        assert_eq!(bits(&first), bits(&load(augmented.clone())));
        let next_epoch = load(LoaderOptions {
            epoch: 1,
            ..augmented.clone()
        });
        assert_ne!(labels(&first), labels(&next_epoch));
        assert_ne!(bits(&first), bits(&next_epoch));
    }

    #[test]
    fn a_resumed_epoch_matches_the_uninterrupted_one_bit_for_bit() {
        let augmented = LoaderOptions {
            augment: Augment {
                flip_horizontal: true,
                translate: 1,
                scale: Some((0.9, 1.1)),
                rotate: 10.0,
                noise: 0.1,
            },
            ..options(3)
        };
        let whole = load(augmented.clone());
        let resumed = load(LoaderOptions {
            first_batch: 2,
            ..augmented.clone()
        });
        assert_eq!(resumed.len(), 2);
        assert_eq!(bits(&resumed), bits(&whole[2..]));
        assert_eq!(labels(&resumed), labels(&whole[2..]));
        assert!(load(LoaderOptions {
            first_batch: 9,
            ..augmented
        })
        .is_empty());
    }

    #[test]
    #[should_panic(expected = "the normalisation has 2 means")]
    fn a_bug_in_the_worker_surfaces_in_the_caller() {
        let wrong = Normalization::identity(2);
        Loader::new(dataset(), wrong, options(4)).for_each(drop);
    }

    #[test]
    fn dropping_mid_epoch_stops_the_worker() {
        let large = Arc::new(Dataset {
            shape: SHAPE,
            pixels: vec![1; 4 * 10_000],
            labels: vec![0; 10_000],
            class_names: vec!["only".into()],
        });
        let mut loader = Loader::new(large, Normalization::identity(1), options(1));
        assert_eq!(loader.next().map(|batch| batch.count), Some(1));
        // The worker is blocked on a full channel; dropping must wake and join it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(loader);
    }
}
