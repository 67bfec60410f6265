//! What one launch on the thread pool costs: a kernel of 64 tasks that each add one to a float
//! (nothing to speak of), run through `Pool::run` with 1 and 2 threads. A training step makes
//! hundreds of launches, many of kernels a few microseconds long (mlp's whole step is about
//! 0.2 ms), so this is a floor under every small kernel's time.

use criterion::{criterion_group, criterion_main, Criterion};
use netc_runtime::pool::Pool;
use std::time::Duration;

const TASKS: usize = 64;

/// Adds one to element `i` for each task `i`: a kernel as generated code calls it.
unsafe extern "C" fn add_one(table: *const *mut f32, begin: i64, end: i64, _scratch: *mut f32) {
    let out = *table;
    for i in begin..end {
        *out.add(i as usize) += 1.0;
    }
}

fn launch(c: &mut Criterion) {
    let mut group = c.benchmark_group("launch");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for threads in [1, 2] {
        let pool = Pool::new(threads, 0);
        let mut out = vec![0.0f32; TASKS];
        let table = [out.as_mut_ptr()];
        group.bench_function(format!("{TASKS} tasks/{threads}t"), |b| {
            // SAFETY: each task writes its own element of `out`, which outlives the pool's use.
            b.iter(|| unsafe { pool.run(add_one, table.as_ptr(), TASKS as i64) })
        });
    }
    group.finish();
}

// Without plots: criterion's plotters backend panics where the machine has no fonts.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = launch
}
criterion_main!(benches);
