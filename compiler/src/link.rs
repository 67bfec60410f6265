//! Linking for `netc compile`: the generated object and the runtime, built as a static library
//! (`netc-standalone`, whose `main` reads the model from the object) and carried inside `netc`
//! itself, are linked into a standalone executable by the system's C compiler.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The static library every executable is linked with, built for this target by `build.rs`.
static STANDALONE_LIB: &[u8] = include_bytes!(env!("NETC_STANDALONE_LIB"));

/// The system libraries the static library needs, as rustc listed them (`-lgcc_s -lc ...`).
const NATIVE_LIBS: &str = env!("NETC_STANDALONE_NATIVE_LIBS");

/// Why an executable could not be linked.
#[derive(Debug)]
pub enum LinkError {
    /// The C compiler, which netc links with, could not be started.
    NoCompiler { program: OsString, error: io::Error },
    /// The link ran and failed.
    Failed {
        program: OsString,
        status: ExitStatus,
        stderr: String,
    },
    /// A file or directory could not be written.
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::NoCompiler { program, error } => write!(
                f,
                "cannot run the C compiler `{}`: {error}; netc compile links with the system's \
                 C compiler; install one (Debian: `apt-get install gcc`) or set CC",
                program.to_string_lossy()
            ),
            LinkError::Failed {
                program,
                status,
                stderr,
            } => write!(
                f,
                "linking with `{}` failed ({status}):\n{}",
                program.to_string_lossy(),
                stderr.trim()
            ),
            LinkError::Io {
                action,
                path,
                error,
            } => write!(f, "cannot {action} {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::NoCompiler { error, .. } | LinkError::Io { error, .. } => Some(error),
            LinkError::Failed { .. } => None,
        }
    }
}

/// Links `object` (a relocatable object defining `netc_manifest`, `netc_manifest_len` and
/// `netc_entry_points`) with the runtime into the executable `output`. The C compiler is `$CC`
/// if set (split at spaces, as make does, so `ccache gcc` works), else `cc` (with gold, where
/// there is one). `output` is replaced only when the link succeeds.
pub fn link(object: &[u8], output: &Path) -> Result<(), LinkError> {
    let (program, args) = c_compiler();
    link_with(&program, &args, object, output)
}

/// `$CC`'s program and leading arguments, or `cc`, with gold as its linker where it is on the
/// `PATH`: it links the runtime's large static library in well under bfd's time (`netc
/// compile` of mobilenet_v2: 0.85 s against 0.95 to 1.35 s).
fn c_compiler() -> (OsString, Vec<OsString>) {
    let Some(cc) = std::env::var_os("CC") else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let gold = std::env::split_paths(&path).any(|dir| dir.join("ld.gold").is_file());
        let args = if gold {
            vec!["-fuse-ld=gold".into()]
        } else {
            Vec::new()
        };
        return ("cc".into(), args);
    };
    // A name that is not UTF-8 cannot be split; it can still be a path.
    let Some(text) = cc.to_str() else {
        return (cc, Vec::new());
    };
    let mut words = text.split_whitespace().map(OsString::from);
    match words.next() {
        Some(program) => (program, words.collect()),
        None => ("cc".into(), Vec::new()),
    }
}

/// `link` with the C compiler `program`, given `args` first.
fn link_with(
    program: &OsStr,
    args: &[OsString],
    object: &[u8],
    output: &Path,
) -> Result<(), LinkError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |error| LinkError::Io {
            action,
            path,
            error,
        }
    };
    let scratch = tempfile::Builder::new()
        .prefix("netc-link-")
        .tempdir()
        .map_err(io("create a temporary directory in", &std::env::temp_dir()))?;
    let object_path = scratch.path().join("model.o");
    std::fs::write(&object_path, object).map_err(io("write", &object_path))?;
    let library_path = scratch.path().join("libnetc_standalone.a");
    std::fs::write(&library_path, STANDALONE_LIB).map_err(io("write", &library_path))?;

    // The link writes a temporary file beside `output`, renamed over it once complete, so a
    // failed or interrupted link never leaves a half-written executable (and the rename
    // stays within one file system).
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".netc-link-")
        .tempfile_in(directory)
        .map_err(io("create a file in", directory))?
        .into_temp_path();

    let mut command = Command::new(program);
    command
        .args(args)
        .arg(&object_path)
        .arg(&library_path)
        .args(NATIVE_LIBS.split_whitespace());
    // Generated code calls libm (`logf`, `tanhf`); rustc lists it on glibc, but not everywhere.
    if !NATIVE_LIBS.split_whitespace().any(|lib| lib == "-lm") {
        command.arg("-lm");
    }
    // The library holds the whole runtime and its dependencies in per-function sections; most
    // of it is unused by an executable's command line. The standard library's debug
    // information would be half the executable; symbols stay, for backtraces.
    command
        .arg("-Wl,--gc-sections")
        .arg("-Wl,--strip-debug")
        .arg("-o")
        .arg(&partial);
    let result = command.output().map_err(|error| LinkError::NoCompiler {
        program: program.to_owned(),
        error,
    })?;
    if !result.status.success() {
        return Err(LinkError::Failed {
            program: program.to_owned(),
            status: result.status,
            stderr: String::from_utf8_lossy(&result.stderr).into_owned(),
        });
    }

    // The temporary file was created readable by its owner only, and the linker may have
    // written into it rather than replace it.
    set_executable(&partial).map_err(io("make executable", &partial))?;
    partial
        .persist(output)
        .map_err(|e| io("write", output)(e.error))
}

#[cfg(unix)]
fn set_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::settings::{self, Configurable};
    use cranelift_module::{DataDescription, Linkage, Module};
    use cranelift_object::{ObjectBuilder, ObjectModule};

    /// An object like the ones `netc compile` generates, with no programs: the ISA is built as
    /// for a real one (position-independent for the default PIE link, unwind tables, inline
    /// stack probes since nothing provides the outline probe's symbol).
    fn object(manifest: &[u8], with_entry_points: bool) -> Vec<u8> {
        let mut flags = settings::builder();
        flags.set("is_pic", "true").unwrap();
        flags.set("probestack_strategy", "inline").unwrap();
        let isa = cranelift_native::builder()
            .unwrap()
            .finish(settings::Flags::new(flags))
            .unwrap();
        let mut builder =
            ObjectBuilder::new(isa, "model", cranelift_module::default_libcall_names()).unwrap();
        builder.unwind_info(true);
        let mut module = ObjectModule::new(builder);
        let mut define = |name: &str, bytes: Vec<u8>| {
            let id = module
                .declare_data(name, Linkage::Export, false, false)
                .unwrap();
            let mut data = DataDescription::new();
            data.define(bytes.into_boxed_slice());
            module.define_data(id, &data).unwrap();
        };
        define("netc_manifest", manifest.to_vec());
        define(
            "netc_manifest_len",
            (manifest.len() as u64).to_le_bytes().to_vec(),
        );
        if with_entry_points {
            define("netc_entry_points", Vec::new());
        }
        module.finish().emit().unwrap()
    }

    fn cc() -> &'static OsStr {
        OsStr::new("cc")
    }

    #[test]
    fn links_an_executable_that_runs() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("model");
        link_with(cc(), &[], &object(b"not a manifest", true), &output).unwrap();
        // The library's `main` ran and read the manifest linked in, which it refuses.
        let run = Command::new(&output).arg("info").output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(101), "{stderr}");
        assert!(stderr.contains("manifest is damaged"), "{stderr}");
        // Nothing but the executable is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_link_reports_the_linker_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("model");
        let error = link_with(cc(), &[], &object(b"manifest", false), &output).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("linking with `cc` failed"), "{message}");
        assert!(message.contains("netc_entry_points"), "{message}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_compiler_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let error = link_with(
            OsStr::new("netc-no-such-cc"),
            &[],
            &object(b"", true),
            &dir.path().join("model"),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("cannot run the C compiler `netc-no-such-cc`"));
        assert!(message.contains("apt-get install gcc"), "{message}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
