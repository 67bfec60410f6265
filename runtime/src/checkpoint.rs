//! Checkpoints: a model's named tensors and a few strings about the run, kept in a safetensors
//! file so that PyTorch and other tools can read what netc trains, and netc can start from
//! weights they wrote. Files are replaced atomically, so a crash while saving never costs the
//! previous checkpoint.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::{Dtype, SafeTensorError, SafeTensors, View};
use sha2::{Digest, Sha256};

/// The little-endian u64 that opens a safetensors file and gives its header's length.
const HEADER_LEN_BYTES: usize = 8;

/// One tensor of a checkpoint: row-major `data` of the given `shape` (`[]` for a scalar).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The tensors of a model and string metadata about the run that produced them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    pub tensors: Vec<NamedTensor>,
    pub metadata: BTreeMap<String, String>,
}

/// What went wrong with a checkpoint file, and what the user can do about it.
#[derive(Debug)]
pub struct CheckpointError {
    pub path: PathBuf,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CheckpointError {}

impl CheckpointError {
    fn new(path: &Path, message: impl Into<String>, hint: Option<&str>) -> Self {
        CheckpointError {
            path: path.to_path_buf(),
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
}

/// A tensor handed to the safetensors serializer as little-endian F32 bytes.
struct F32View<'a>(&'a NamedTensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.0.data.len() * size_of::<f32>()
    }
}

impl Checkpoint {
    /// The tensor called `name`, if there is one.
    pub fn tensor(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }

    /// Writes safetensors (F32, little-endian) with `metadata` in the header's `__metadata__`,
    /// atomically. Missing parent directories are created.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = self.to_safetensors(path)?;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fs::create_dir_all(parent).map_err(|error| {
                CheckpointError::new(
                    path,
                    format!("cannot create the directory {}: {error}", parent.display()),
                    Some("choose a checkpoint path in a directory you can write to"),
                )
            })?;
        }
        write_atomically(path, |file| file.write_all(&bytes)).map_err(|error| {
            CheckpointError::new(
                path,
                format!("cannot write the checkpoint: {error}"),
                Some("check that the directory is writable and the disk is not full; the previous checkpoint, if any, is unchanged"),
            )
        })
    }

    fn to_safetensors(&self, path: &Path) -> Result<Vec<u8>, CheckpointError> {
        let mut names = BTreeSet::new();
        for tensor in &self.tensors {
            if !names.insert(tensor.name.as_str()) {
                return Err(CheckpointError::new(
                    path,
                    format!("tensor `{}` appears twice", tensor.name),
                    Some("give every tensor of a checkpoint a distinct name"),
                ));
            }
            let elements: usize = tensor.shape.iter().product();
            if elements != tensor.data.len() {
                return Err(CheckpointError::new(
                    path,
                    format!(
                        "tensor `{}` has shape {:?} ({elements} elements) but {} values",
                        tensor.name,
                        tensor.shape,
                        tensor.data.len()
                    ),
                    None,
                ));
            }
        }
        // safetensors writes `__metadata__: {}` for an empty map; leaving it out keeps the
        // header what other writers produce.
        let metadata = (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect::<HashMap<_, _>>()
        });
        let views = self
            .tensors
            .iter()
            .map(|tensor| (tensor.name.as_str(), F32View(tensor)));
        safetensors::serialize(views, metadata).map_err(|error| {
            CheckpointError::new(path, format!("cannot encode the checkpoint: {error}"), None)
        })
    }

    /// Reads a safetensors file: F32 as is; F64, F16 and BF16 converted to f32 (files written by
    /// PyTorch's safetensors.torch.save_file are often half precision); any other dtype an error
    /// naming the tensor and its dtype. The tensors come sorted by name.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = fs::read(path).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => CheckpointError::new(
                path,
                "no such file",
                Some("check the path; `netc train` writes checkpoints into the run directory"),
            ),
            _ => CheckpointError::new(path, format!("cannot read the file: {error}"), None),
        })?;
        let (header_len, header) =
            SafeTensors::read_metadata(&bytes).map_err(|error| not_safetensors(path, &error))?;
        // read_metadata has checked that the offsets cover the data exactly, so slicing is safe.
        let data = &bytes[HEADER_LEN_BYTES + header_len..];
        // Sorted before converting, so that of several unreadable tensors the same one is named
        // every time.
        let mut entries: Vec<_> = header.tensors().into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors = entries
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                Ok(NamedTensor {
                    data: to_f32(info.dtype, &data[start..end]).ok_or_else(|| {
                        CheckpointError::new(
                            path,
                            format!("tensor `{name}` has dtype {}, which netc cannot read", info.dtype),
                            Some("store floating-point tensors as F32, F64, F16 or BF16, e.g. convert with `tensor.float()` in PyTorch before saving"),
                        )
                    })?,
                    shape: info.shape.clone(),
                    name,
                })
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        let metadata = header
            .metadata()
            .iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(Checkpoint { tensors, metadata })
    }
}

/// The error for a file the safetensors crate rejects, in words a user without the format's
/// specification can act on.
fn not_safetensors(path: &Path, error: &SafeTensorError) -> CheckpointError {
    let reason = match error {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            "the file is shorter than the header it announces: it is truncated or not safetensors"
                .to_string()
        }
        SafeTensorError::HeaderTooLarge => {
            "the header length it announces is implausibly large: it is not safetensors".to_string()
        }
        SafeTensorError::InvalidHeader(_)
        | SafeTensorError::InvalidHeaderDeserialization(_)
        | SafeTensorError::JsonError(_) => format!("its header is not safetensors JSON ({error})"),
        SafeTensorError::MetadataIncompleteBuffer
        | SafeTensorError::InvalidOffset(_)
        | SafeTensorError::TensorInvalidInfo => format!(
            "its tensor data does not match its header ({error}): the file is probably truncated"
        ),
        _ => error.to_string(),
    };
    CheckpointError::new(
        path,
        format!("not a readable safetensors file: {reason}"),
        Some("give a .safetensors file written by `netc train` or safetensors' save_file; a checkpoint cut short by a full disk or an interrupted copy must be copied again"),
    )
}

/// Little-endian `bytes` of `dtype` as f32; `None` for a dtype that is not a float netc reads.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    // The data of a tensor need not be aligned in the file, so it is decoded byte-wise.
    fn decode<const N: usize>(bytes: &[u8], convert: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|chunk| convert(chunk.try_into().expect("chunks_exact yields N bytes")))
            .collect()
    }
    Some(match dtype {
        Dtype::F32 => decode(bytes, f32::from_le_bytes),
        Dtype::F64 => decode(bytes, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => decode(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => decode(bytes, |b| half::bf16::from_le_bytes(b).to_f32()),
        _ => return None,
    })
}

/// Writes `path` through a temporary file in the same directory: write, fsync, rename over
/// `path`, fsync the directory. If `write` fails (or the process dies) the previous file at
/// `path` is intact; on an error the temporary file is removed.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    // Distinct per process and per call, so concurrent writers never share a temporary file.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let temporary = directory.join(temporary_name);

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)?;
    let written = write(&mut file).and_then(|()| file.sync_all());
    // Closed before the rename, which Windows refuses for an open file.
    drop(file);
    let written = written.and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = written {
        // The write's error is the one worth reporting; a failed clean-up leaves only a
        // dot-file beside the intact original.
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    sync_directory(directory)
}

/// Makes a rename in `directory` durable: without it a power cut can undo the rename.
#[cfg(unix)]
fn sync_directory(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

/// Windows cannot open a directory as a file, and its renames need no separate flush.
#[cfg(not(unix))]
fn sync_directory(_directory: &Path) -> io::Result<()> {
    Ok(())
}

/// SHA-256 of bytes, lower-case hex (checkpoints record the model file's hash).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, shape: &[usize], data: &[f32]) -> NamedTensor {
        NamedTensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            data: data.to_vec(),
        }
    }

    fn sample() -> Checkpoint {
        Checkpoint {
            tensors: vec![
                tensor("fc.weight", &[2, 3], &[1.0, -2.5, 3.25, 0.0, 1e-7, -1e30]),
                tensor("fc.bias", &[2], &[0.5, -0.5]),
                tensor("step", &[], &[42.0]),
            ],
            metadata: BTreeMap::from([
                ("epoch".to_string(), "3".to_string()),
                ("model_sha256".to_string(), sha256_hex(b"model")),
            ]),
        }
    }

    fn sorted_by_name(mut checkpoint: Checkpoint) -> Checkpoint {
        checkpoint.tensors.sort_by(|a, b| a.name.cmp(&b.name));
        checkpoint
    }

    #[test]
    fn saved_checkpoint_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/sub/dir/ckpt.safetensors");
        let checkpoint = sample();
        checkpoint.save(&path).unwrap();
        let loaded = Checkpoint::load(&path).unwrap();
        assert_eq!(loaded, sorted_by_name(checkpoint));
        assert_eq!(loaded.tensor("step").unwrap().shape, Vec::<usize>::new());
        assert!(loaded.tensor("missing").is_none());
    }

    #[test]
    fn empty_checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.safetensors");
        Checkpoint::default().save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Checkpoint::default());
    }

    #[test]
    fn save_rejects_a_shape_that_does_not_match_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let checkpoint = Checkpoint {
            tensors: vec![tensor("w", &[2, 2], &[1.0, 2.0, 3.0])],
            ..Checkpoint::default()
        };
        let error = checkpoint.save(&path).unwrap_err();
        assert!(error.message.contains("`w`"), "{error}");
        assert!(!path.exists());
    }

    #[test]
    fn save_rejects_duplicate_names() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint {
            tensors: vec![tensor("w", &[1], &[1.0]), tensor("w", &[1], &[2.0])],
            ..Checkpoint::default()
        };
        let error = checkpoint
            .save(&dir.path().join("dup.safetensors"))
            .unwrap_err();
        assert!(error.message.contains("appears twice"), "{error}");
    }

    fn write_with_dtype(path: &Path, dtype: Dtype, bytes: &[u8], shape: &[usize]) {
        struct Raw<'a>(Dtype, &'a [u8], &'a [usize]);
        impl View for Raw<'_> {
            fn dtype(&self) -> Dtype {
                self.0
            }
            fn shape(&self) -> &[usize] {
                self.2
            }
            fn data(&self) -> Cow<'_, [u8]> {
                Cow::Borrowed(self.1)
            }
            fn data_len(&self) -> usize {
                self.1.len()
            }
        }
        let serialized = safetensors::serialize([("x", Raw(dtype, bytes, shape))], None).unwrap();
        fs::write(path, serialized).unwrap();
    }

    #[test]
    fn half_and_double_precision_are_converted_to_f32() {
        let dir = tempfile::tempdir().unwrap();
        let values = [1.5f32, -0.25, 1024.0, 0.0];
        let cases: [(Dtype, Vec<u8>); 3] = [
            (
                Dtype::F16,
                values
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
            (
                Dtype::BF16,
                values
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
            (
                Dtype::F64,
                values
                    .iter()
                    .flat_map(|&x| f64::from(x).to_le_bytes())
                    .collect(),
            ),
        ];
        for (dtype, bytes) in cases {
            let path = dir.path().join(format!("{dtype}.safetensors"));
            write_with_dtype(&path, dtype, &bytes, &[2, 2]);
            let loaded = Checkpoint::load(&path).unwrap();
            assert_eq!(
                loaded.tensors,
                vec![tensor("x", &[2, 2], &values)],
                "{dtype}"
            );
        }
    }

    #[test]
    fn integer_tensor_is_an_error_naming_tensor_and_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ints.safetensors");
        write_with_dtype(&path, Dtype::I64, &[0; 16], &[2]);
        let error = Checkpoint::load(&path).unwrap_err();
        assert!(
            error.message.contains("`x`") && error.message.contains("I64"),
            "{error}"
        );
        assert!(error.hint.is_some());
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.safetensors");
        let error = Checkpoint::load(&path).unwrap_err();
        assert_eq!(error.path, path);
        assert!(error.to_string().contains("no such file"), "{error}");
    }

    #[test]
    fn non_safetensors_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.net");
        fs::write(&path, "network Mlp { input x: [784] }\n").unwrap();
        let error = Checkpoint::load(&path).unwrap_err();
        let shown = error.to_string();
        assert!(shown.starts_with(&format!(
            "{}: not a readable safetensors file",
            path.display()
        )));
        assert!(shown.contains("\n  help: "), "{shown}");
    }

    #[test]
    fn truncated_file_is_an_error_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.safetensors");
        sample().save(&whole).unwrap();
        let bytes = fs::read(&whole).unwrap();
        let cut = dir.path().join("cut.safetensors");
        for length in 0..bytes.len() {
            fs::write(&cut, &bytes[..length]).unwrap();
            let error = Checkpoint::load(&cut).unwrap_err();
            assert!(
                error.message.contains("not a readable safetensors file"),
                "{error}"
            );
        }
    }

    fn directory_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        sample().save(&path).unwrap();
        let before = fs::read(&path).unwrap();

        let replacement = vec![7u8; before.len()];
        let error = write_atomically(&path, |file| {
            file.write_all(&replacement[..replacement.len() / 2])?;
            Err(io::Error::other("simulated crash"))
        })
        .unwrap_err();

        assert_eq!(error.to_string(), "simulated crash");
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(directory_entries(dir.path()), ["ckpt.safetensors"]);
    }

    #[test]
    fn successful_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        sample().save(&path).unwrap();
        write_atomically(&path, |file| file.write_all(b"new contents")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(directory_entries(dir.path()), ["ckpt.safetensors"]);
    }

    #[test]
    fn sha256_matches_a_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
