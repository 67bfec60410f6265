//! The image-folder reader, Imagenette's layout: `train/` and `val/` (or `test/`), each with one
//! subfolder of JPEG and PNG images per class. Images come in many sizes, so each is resized to
//! the network's input as it is decoded; decoding is spread over the machine's cores.

use super::{DataError, Dataset, Splits};
use image::imageops::FilterType;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

/// Every image is decoded as colour, whatever its own colour type.
pub const CHANNELS: usize = 3;
const TRAIN_DIR: &str = "train";
/// Imagenette names its test set `val`; other sets call it `test`.
const TEST_DIRS: [&str; 2] = ["val", "test"];
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Where an image folder's two sets are.
#[derive(Clone, Debug)]
pub struct FolderLayout {
    pub train: PathBuf,
    pub test: PathBuf,
}

/// The layout of `dir`, if it has a `train/` and a `val/` or `test/` subdirectory.
pub fn locate(dir: &Path) -> Option<FolderLayout> {
    let train = dir.join(TRAIN_DIR);
    let test = TEST_DIRS
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_dir())?;
    train.is_dir().then_some(FolderLayout { train, test })
}

/// Reads both sets, every image resized to `size` (height, width). The original shape reported
/// is the first training image's.
pub fn read_splits(layout: &FolderLayout, size: [usize; 2]) -> Result<Splits, DataError> {
    let class_names = class_names(&layout.train)?;
    let test_class_names = subfolder_names(&layout.test)?;
    if test_class_names != class_names {
        let only_in = |a: &[String], b: &[String]| {
            a.iter()
                .filter(|name| !b.contains(name))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(DataError::new(
            &layout.test,
            format!(
                "the classes differ from {}'s: only here [{}], only there [{}]",
                layout.train.display(),
                only_in(&test_class_names, &class_names),
                only_in(&class_names, &test_class_names)
            ),
        )
        .with_hint("both sets need one subfolder per class, with the same names"));
    }
    let (train, original_shape) = read_set(&layout.train, &class_names, size)?;
    let (test, _) = read_set(&layout.test, &class_names, size)?;
    Ok(Splits {
        train,
        test,
        original_shape,
    })
}

/// The sorted class subfolder names of a set, at least one.
fn class_names(set_dir: &Path) -> Result<Vec<String>, DataError> {
    let names = subfolder_names(set_dir)?;
    if names.is_empty() {
        return Err(DataError::new(set_dir, "no class subfolders")
            .with_hint("put each class's images in a subfolder named after the class"));
    }
    Ok(names)
}

fn subfolder_names(set_dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names: Vec<String> = list(set_dir)?
        .into_iter()
        .filter(|path| path.is_dir())
        .filter_map(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// A directory's entries, sorted so that reading does not depend on the file system's order.
fn list(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let cannot_list =
        |error: std::io::Error| DataError::new(dir, format!("cannot list the directory: {error}"));
    let mut paths = std::fs::read_dir(dir)
        .map_err(cannot_list)?
        .map(|entry| entry.map(|entry| entry.path()).map_err(cannot_list))
        .collect::<Result<Vec<_>, _>>()?;
    paths.sort();
    Ok(paths)
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str()))
}

/// One set, class by class, and the shape of its first image before resizing.
fn read_set(
    set_dir: &Path,
    class_names: &[String],
    size: [usize; 2],
) -> Result<(Dataset, [usize; 3]), DataError> {
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in (0u32..).zip(class_names) {
        for path in list(&set_dir.join(class))?
            .into_iter()
            .filter(|path| is_image(path))
        {
            files.push(path);
            labels.push(label);
        }
    }
    if files.is_empty() {
        return Err(
            DataError::new(set_dir, "no JPEG or PNG images in the class subfolders")
                .with_hint("images need a .jpg, .jpeg or .png extension"),
        );
    }
    let decoded = decode_all(&files, size)?;
    let [height, width] = decoded[0].original;
    let original_shape = [CHANNELS, height, width];
    let dataset = Dataset {
        shape: [CHANNELS, size[0], size[1]],
        pixels: decoded.into_iter().flat_map(|image| image.pixels).collect(),
        labels,
        class_names: class_names.to_vec(),
    };
    Ok((dataset, original_shape))
}

/// Images to classify, as a network of input `[C, H, W]` takes them (resized, and converted
/// to grey when `C` is 1), unlabelled.
pub fn read_images(files: &[PathBuf], input_shape: [usize; 3]) -> Result<Dataset, DataError> {
    let size = [input_shape[1], input_shape[2]];
    let decoded = decode_all(files, size)?;
    let colour = Dataset {
        shape: [CHANNELS, size[0], size[1]],
        pixels: decoded.into_iter().flat_map(|image| image.pixels).collect(),
        labels: vec![0; files.len()],
        class_names: Vec::new(),
    };
    super::conform(colour, input_shape, Path::new("the images"))
}

/// One decoded image.
struct Decoded {
    /// Height and width before resizing.
    original: [usize; 2],
    /// Resized, channel-height-width.
    pixels: Vec<u8>,
}

/// Decodes `files` on all cores, in order.
fn decode_all(files: &[PathBuf], size: [usize; 2]) -> Result<Vec<Decoded>, DataError> {
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let per_thread = files.len().div_ceil(threads).max(1);
    let parts = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|path| decode(path, size))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(parts.into_iter().flatten().collect())
}

/// One image as colour, resized to `size` (height, width).
fn decode(path: &Path, size: [usize; 2]) -> Result<Decoded, DataError> {
    let unreadable = |error: &dyn std::fmt::Display| {
        DataError::new(path, format!("cannot decode the image: {error}"))
            .with_hint("remove or replace the file")
    };
    let image = image::ImageReader::open(path)
        .and_then(|reader| reader.with_guessed_format())
        .map_err(|error| unreadable(&error))?
        .decode()
        .map_err(|error| unreadable(&error))?
        .to_rgb8();
    let original = [image.height() as usize, image.width() as usize];
    let image = if original == size {
        image
    } else {
        image::imageops::resize(&image, size[1] as u32, size[0] as u32, FilterType::Triangle)
    };
    let plane = size[0] * size[1];
    let mut pixels = vec![0; CHANNELS * plane];
    for (position, pixel) in image.pixels().enumerate() {
        for (channel, &value) in pixel.0.iter().enumerate() {
            pixels[channel * plane + position] = value;
        }
    }
    Ok(Decoded { original, pixels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// A 4-wide, 2-high image whose pixel (x, y) is (10x + y, 100 + x, 200 + y).
    fn colour_image() -> RgbImage {
        RgbImage::from_fn(4, 2, |x, y| {
            Rgb([(10 * x + y) as u8, 100 + x as u8, 200 + y as u8])
        })
    }

    /// `root/train` with `cat/` (a PNG and a note to be ignored) and `dog/` (a JPEG), and
    /// `root/val` with one PNG per class.
    fn write_folder(root: &Path) -> FolderLayout {
        for dir in ["train/cat", "train/dog", "val/cat", "val/dog"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        colour_image().save(root.join("train/cat/a.png")).unwrap();
        std::fs::write(root.join("train/cat/notes.txt"), "not an image").unwrap();
        RgbImage::from_pixel(8, 6, Rgb([50, 60, 70]))
            .save(root.join("train/dog/b.JPEG"))
            .unwrap();
        GrayImage::from_pixel(4, 2, Luma([77]))
            .save(root.join("val/cat/c.png"))
            .unwrap();
        colour_image().save(root.join("val/dog/d.png")).unwrap();
        locate(root).unwrap()
    }

    fn error(layout: &FolderLayout) -> String {
        read_splits(layout, [2, 4]).unwrap_err().to_string()
    }

    #[test]
    fn reads_png_and_jpeg_by_class() {
        let dir = tempfile::tempdir().unwrap();
        let layout = write_folder(dir.path());
        assert_eq!(layout.test, dir.path().join("val"));
        let splits = read_splits(&layout, [2, 4]).unwrap();
        assert_eq!(splits.original_shape, [3, 2, 4]);
        assert_eq!(splits.train.shape, [3, 2, 4]);
        assert_eq!(splits.train.class_names, ["cat", "dog"]);
        assert_eq!(splits.train.labels, [0, 1]);
        assert_eq!(splits.test.labels, [0, 1]);
        let expected_png: Vec<u8> = (0..3)
            .flat_map(|channel| {
                colour_image()
                    .pixels()
                    .map(move |pixel| pixel[channel])
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(splits.train.image(0), expected_png);
        assert_eq!(splits.test.image(1), expected_png);
        // Grey images are decoded as colour.
        assert_eq!(splits.test.image(0), [77; 24]);
        // The JPEG was resized from 8×6; a flat colour stays near flat through compression.
        let jpeg = splits.train.image(1);
        assert!(
            jpeg[..8].iter().all(|&red| red.abs_diff(50) <= 3),
            "{jpeg:?}"
        );
    }

    #[test]
    fn resizes_to_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let layout = write_folder(dir.path());
        let splits = read_splits(&layout, [3, 5]).unwrap();
        assert_eq!(splits.original_shape, [3, 2, 4]);
        assert_eq!(splits.train.shape, [3, 3, 5]);
        assert_eq!(splits.test.pixels.len(), 2 * 3 * 3 * 5);
        assert_eq!(splits.test.image(0), [77; 45]);
    }

    #[test]
    fn a_test_directory_serves_when_there_is_no_val() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train")).unwrap();
        assert!(locate(dir.path()).is_none());
        std::fs::create_dir_all(dir.path().join("test")).unwrap();
        assert_eq!(locate(dir.path()).unwrap().test, dir.path().join("test"));
    }

    #[test]
    fn a_corrupt_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let layout = write_folder(dir.path());
        std::fs::write(dir.path().join("val/dog/d.png"), b"\x89PNG but not really").unwrap();
        let message = error(&layout);
        assert!(
            message.contains("d.png: cannot decode the image"),
            "{message}"
        );
    }

    #[test]
    fn both_sets_need_the_same_classes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = write_folder(dir.path());
        std::fs::rename(dir.path().join("val/dog"), dir.path().join("val/bird")).unwrap();
        let message = error(&layout);
        assert!(
            message.contains("only here [bird], only there [dog]"),
            "{message}"
        );
    }

    #[test]
    fn a_set_without_images_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let layout = write_folder(dir.path());
        for file in ["val/cat/c.png", "val/dog/d.png"] {
            std::fs::remove_file(dir.path().join(file)).unwrap();
        }
        assert!(error(&layout).contains("val: no JPEG or PNG images"));
        std::fs::remove_dir_all(dir.path().join("train")).unwrap();
        std::fs::create_dir(dir.path().join("train")).unwrap();
        assert!(error(&layout).contains("train: no class subfolders"));
    }
}
