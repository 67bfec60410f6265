//! Golden files: compare output with a file kept in the repository, or rewrite the file when
//! `NETC_BLESS=1`. Mismatches are collected so one run shows every difference.

use codespan_reporting::term::termcolor::NoColor;
use std::path::{Path, PathBuf};

/// The folder the tests run in: the `tests/` package root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files in `dir` (relative to `tests/`) with extension `ext`, sorted, as relative paths.
pub fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| p.strip_prefix(root()).expect("under root").to_path_buf())
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no .{ext} files in {dir}");
    found
}

/// Runs the `netc` command line in-process, in the `tests/` folder, returning
/// (exit status, stdout, stderr).
pub fn netc(args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["netc".into()];
    argv.extend(args.iter().map(|a| std::ffi::OsString::from(*a)));
    let mut stdout = Vec::new();
    let mut stderr = NoColor::new(Vec::new());
    let status = netc::cli::run(argv, &mut stdout, &mut stderr);
    (
        status,
        String::from_utf8(stdout).expect("stdout is UTF-8"),
        String::from_utf8(stderr.into_inner()).expect("stderr is UTF-8"),
    )
}

/// Collects mismatches against golden files.
#[derive(Default)]
pub struct Golden {
    failures: Vec<String>,
}

impl Golden {
    pub fn check(&mut self, expected_file: &Path, actual: &str) {
        let path = root().join(expected_file);
        if std::env::var_os("NETC_BLESS").is_some() {
            std::fs::write(&path, actual)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            return;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => self.failures.push(format!(
                "{} differs\n--- expected\n{expected}\n--- actual\n{actual}",
                expected_file.display()
            )),
            Err(_) => self.failures.push(format!(
                "{} is missing (run with NETC_BLESS=1 to create it); actual output:\n{actual}",
                expected_file.display()
            )),
        }
    }

    pub fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    pub fn finish(self) {
        assert!(self.failures.is_empty(), "{}", self.failures.join("\n\n"));
    }
}

/// Runs `check` on every zoo model, the models shared out between two threads (the
/// interpreter the checks use is single-threaded).
pub fn for_each_model(check: fn(&Path)) {
    let paths = files("../models", "net");
    let (even, odd): (Vec<_>, Vec<_>) = paths.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    std::thread::scope(|scope| {
        for half in [even, odd] {
            scope.spawn(move || {
                for (_, path) in half {
                    check(path);
                }
            });
        }
    });
}
