//! Builds `netc-standalone`, the static library `netc compile` links every executable with, so
//! that the `netc` binary carries it (`src/link.rs` embeds it) and can link from any directory,
//! installed or not. Tells the crate where the library is (`NETC_STANDALONE_LIB`) and which
//! system libraries it needs (`NETC_STANDALONE_NATIVE_LIBS`, as rustc names them).

use std::collections::BTreeSet;
use std::env;
use std::fs;
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
    for name in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        println!("cargo::rerun-if-env-changed={name}");
    }

    let target = var("TARGET")?;
    let release = var("PROFILE")? == "release";
    // Our own target directory: building in the outer one would wait forever on the lock the
    // outer build holds. `OUT_DIR` is `<target>/<profile>/build/netc-<hash>/out`, and `cargo
    // clippy` and `cargo build` get different hashes, so the library is built once per
    // profile beside them rather than once per hash (the nested cargo's own lock keeps
    // concurrent runs apart).
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let target_dir = out_dir
        .ancestors()
        .nth(2)
        .ok_or("OUT_DIR is not inside a target directory")?
        .join("netc-standalone");
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
    // The library travels inside `netc` and is copied out for every link: with the dev
    // profile's debuginfo it weighs 290 MB, 240 of them debuginfo. Without it, executables
    // still have symbol names in backtraces.
    for profile in ["DEV", "RELEASE"] {
        cargo.env(format!("CARGO_PROFILE_{profile}_DEBUG"), "false");
    }
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
    let artifacts = target_dir
        .join(&target)
        .join(if release { "release" } else { "debug" });
    let library = artifacts.join("libnetc_standalone.a");
    if !library.is_file() {
        return Err(format!(
            "building netc-standalone made no {}",
            library.display()
        ));
    }
    // The nested build runs again when a file it was built from changes (and is quick when
    // nothing did). Cargo's dep-info beside the library names them: the sources of every
    // package of the workspace it depends on, which follows the runtime as it gains some.
    let mut watched = BTreeSet::from([workspace.join("Cargo.toml"), workspace.join("Cargo.lock")]);
    for source in sources(&artifacts.join("libnetc_standalone.d"), workspace)? {
        // Their packages' manifests too: a dependency or a feature may change there.
        watched.extend(
            source
                .ancestors()
                .skip(1)
                .take_while(|dir| dir.starts_with(workspace) && *dir != workspace)
                .map(|dir| dir.join("Cargo.toml"))
                .find(|manifest| manifest.is_file()),
        );
        watched.insert(source);
    }
    for path in watched {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    println!(
        "cargo::rustc-env=NETC_STANDALONE_LIB={}",
        path_str(&library)?
    );
    println!("cargo::rustc-env=NETC_STANDALONE_NATIVE_LIBS={native_libs}");
    Ok(())
}

/// The files a Makefile-style dep-info says its target was built from (relative names, which
/// `build.dep-info-basedir` makes, taken from the workspace root).
fn sources(dep_info: &Path, workspace: &Path) -> Result<Vec<PathBuf>, String> {
    let text = fs::read_to_string(dep_info)
        .map_err(|e| format!("cannot read {}: {e}", dep_info.display()))?;
    let (_, names) = text
        .lines()
        .next()
        .and_then(|rule| rule.split_once(": "))
        .ok_or_else(|| format!("{} is not a dep-info file", dep_info.display()))?;
    let mut sources = Vec::new();
    let mut name = String::new();
    let mut chars = names.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // Cargo writes a space within a name as `\ `.
            '\\' if chars.peek() == Some(&' ') => name.extend(chars.next()),
            ' ' => {
                if !name.is_empty() {
                    sources.push(workspace.join(std::mem::take(&mut name)));
                }
            }
            c => name.push(c),
        }
    }
    if !name.is_empty() {
        sources.push(workspace.join(name));
    }
    Ok(sources)
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("cargo did not set {name}: {e}"))
}

/// `include_bytes!` takes the path as a string.
fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))
}
