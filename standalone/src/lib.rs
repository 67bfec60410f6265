//! The static library netc links every compiled model with (`netc compile`): the executable's
//! C `main`, which reads the model's manifest and programs from the object netc generated, and
//! the command line around the runtime that runs them.

mod cli;

use std::ffi::{c_char, c_int};

// Defined by the object `netc compile` generates; the linker resolves them when it joins that
// object with this library, so every executable carries its own model.
extern "C" {
    /// The first byte of the model's manifest (`netc_manifest_len` bytes).
    static netc_manifest: u8;
    static netc_manifest_len: u64;
    /// The generated programs' functions, in the order the manifest lists them; its length is
    /// known only from the manifest, hence the empty array type.
    static netc_entry_points: [*const u8; 0];
}

/// The executable's entry point, called by the C runtime. The arguments are unused because
/// Rust's standard library collects them itself on Linux (glibc passes them to its
/// initialisers), so `std::env::args` works in `cli::run`.
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // SAFETY: the generated object defines `netc_manifest` as `netc_manifest_len` initialised,
    // immutable bytes that live as long as the program.
    let manifest = unsafe {
        let len = usize::try_from(netc_manifest_len).expect("manifest length fits in memory");
        std::slice::from_raw_parts(&raw const netc_manifest, len)
    };
    // Only the address: `cli::run` reads as many entries as the manifest lists.
    let entry_points = (&raw const netc_entry_points).cast::<*const u8>();
    cli::run(manifest, entry_points)
}
