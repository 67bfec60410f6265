//! What netc's generated code runs with. Inside a step: the thread pool that splits a kernel's
//! tasks across cores, and the register-blocked contraction microkernels chosen from the CPU's
//! features; everything generated code reaches is an `extern "C"` function that cannot unwind.
//! Around the steps: data sets and their loading and augmentation, the training recipe, the
//! learning-rate schedules, checkpoints, metrics and plots, and the training driver, so the
//! in-process `netc train` and a standalone executable train the same way.

pub mod bench;
mod buffer;
pub mod checkpoint;
pub mod data;
pub mod driver;
pub mod init;
pub mod linked;
pub mod metrics;
pub mod microkernel;
pub mod plot;
pub mod pool;
pub mod program;
pub mod progress;
pub mod recipe;
pub mod schedule;
pub mod session;

/// A generated kernel: runs tasks `begin..end` of its op, reading and writing tensors through
/// `table` (one pointer per buffer, in the order the compiler chose), with `scratch` for the
/// calling thread's exclusive use.
pub type Kernel =
    unsafe extern "C" fn(table: *const *mut f32, begin: i64, end: i64, scratch: *mut f32);

/// `ln` for generated code, which has no vector logarithm of its own (Cranelift has none).
#[no_mangle]
pub extern "C" fn netc_logf(x: f32) -> f32 {
    x.ln()
}

/// `tanh` for generated code.
#[no_mangle]
pub extern "C" fn netc_tanhf(x: f32) -> f32 {
    x.tanh()
}
