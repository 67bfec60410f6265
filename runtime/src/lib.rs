//! What netc's generated code calls into at run time: the thread pool that splits a kernel's
//! tasks across cores, and the register-blocked contraction microkernels chosen from the CPU's
//! features. Everything generated code reaches is an `extern "C"` function that cannot unwind.

pub mod microkernel;
pub mod pool;

/// A generated kernel: runs tasks `begin..end` of its op, reading and writing tensors through
/// `table` (one pointer per buffer, in the order the compiler chose), with `scratch` for the
/// calling thread's exclusive use.
pub type Kernel =
    unsafe extern "C" fn(table: *const *mut f32, begin: i64, end: i64, scratch: *mut f32);
