//! The standalone executable's command line (placeholder until it is written).

/// Runs the executable's command line on the linked programs; returns the exit status.
pub fn run(manifest: &[u8], _entry_points: *const *const u8) -> i32 {
    println!("netc executable: {} bytes of manifest", manifest.len());
    0
}
