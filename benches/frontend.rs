//! Front-end time per zoo model: parsing alone, and parsing through elaboration (every block
//! expanded, every shape and count known). netc's budget for a whole compile is one second;
//! this is the part of it that exists so far.

use criterion::{criterion_group, criterion_main, Criterion};
use netc_grammar::SourceFile;
use std::hint::black_box;

fn frontend(c: &mut Criterion) {
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    let mut paths: Vec<_> = std::fs::read_dir(models)
        .expect("models/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_stem()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let file = SourceFile::new(
            path.display().to_string(),
            std::fs::read_to_string(&path).expect("model readable"),
        );
        c.bench_function(&format!("parse/{name}"), |b| {
            b.iter(|| netc_grammar::parse(black_box(&file)).expect("model parses"))
        });
        c.bench_function(&format!("check/{name}"), |b| {
            b.iter(|| netc::front::run(black_box(&file), &[]).expect("model checks"))
        });
    }
}

// Without plots: criterion's plotters backend panics where the machine has no fonts.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = frontend
}
criterion_main!(benches);
