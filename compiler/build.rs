//! Builds `netc-standalone`, the static library `netc compile` links every executable with, so
//! that the `netc` binary carries it (`src/link.rs` embeds it) and can link from any directory,
//! installed or not. Tells the crate where the library is (`NETC_STANDALONE_LIB`) and which
//! system libraries it needs (`NETC_STANDALONE_NATIVE_LIBS`, as rustc names them).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// How rustc's `--print native-static-libs` note begins.
const NATIVE_LIBS_NOTE: &str = "note: native-static-libs: ";

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("the compiler crate is not inside the workspace")?;
    // Sources of the library and of everything it depends on, so that the nested build runs
    // again when they change (it is quick when nothing did).
    for path in [
        "runtime/src",
        "runtime/Cargo.toml",
        "standalone/src",
        "standalone/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo::rerun-if-changed={}", workspace.join(path).display());
    }
    for name in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        println!("cargo::rerun-if-env-changed={name}");
    }

    let target = var("TARGET")?;
    let release = var("PROFILE")? == "release";
    // Our own target directory: building in the outer one would wait forever on the lock the
    // outer build holds.
    let target_dir = PathBuf::from(var("OUT_DIR")?).join("standalone");
    let mut cargo = Command::new(var("CARGO")?);
    cargo
        .arg("rustc")
        .arg("--manifest-path")
        .arg(workspace.join("standalone/Cargo.toml"))
        .arg("--lib")
        // For the target this crate is built for, which is where `netc compile` will run.
        .args(["--target", &target])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--color", "never"]);
    if release {
        cargo.arg("--release");
    }
    cargo.args(["--", "--print", "native-static-libs"]);
    // Under `cargo clippy` this names clippy-driver, which would lint the runtime a second time
    // with the outer run's `-D warnings`; the library only needs compiling. The inherited
    // `CARGO_ENCODED_RUSTFLAGS` stays: they are the flags the outer build compiles the
    // runtime with. So does the jobserver (`CARGO_MAKEFLAGS`), so that both builds share the
    // cores they were given.
    cargo.env_remove("RUSTC_WORKSPACE_WRAPPER");
    // A configured `build.build-dir` would otherwise be shared with the outer build and its
    // lock.
    cargo.env("CARGO_BUILD_BUILD_DIR", &target_dir);
    let output = cargo
        .output()
        .map_err(|e| format!("cannot run cargo to build netc-standalone: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "building netc-standalone, the static library netc links executables with, failed ({}):\n{stderr}",
            output.status
        ));
    }
    // Cargo replays the note from its cache when the library is already up to date.
    let native_libs = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix(NATIVE_LIBS_NOTE))
        .ok_or_else(|| {
            format!("building netc-standalone printed no `{NATIVE_LIBS_NOTE}...`:\n{stderr}")
        })?;
    let library = target_dir
        .join(&target)
        .join(if release { "release" } else { "debug" })
        .join("libnetc_standalone.a");
    if !library.is_file() {
        return Err(format!(
            "building netc-standalone made no {}",
            library.display()
        ));
    }
    println!(
        "cargo::rustc-env=NETC_STANDALONE_LIB={}",
        path_str(&library)?
    );
    println!("cargo::rustc-env=NETC_STANDALONE_NATIVE_LIBS={native_libs}");
    Ok(())
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("cargo did not set {name}: {e}"))
}

/// `include_bytes!` takes the path as a string.
fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))
}
