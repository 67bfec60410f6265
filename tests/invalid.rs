//! The corpus of invalid networks: each `invalid/NAME.net` is paired with `invalid/NAME.stderr`,
//! exactly what `netc check` must print for it, and must exit with status 1.

use crate::golden::{files, netc, Golden};

#[test]
fn every_invalid_file_gets_its_exact_diagnostics() {
    let mut golden = Golden::default();
    for net in files("invalid", "net") {
        let path = net.to_str().expect("UTF-8 path");
        let (status, stdout, stderr) = netc(&["check", path]);
        if status != 1 || !stdout.is_empty() {
            golden.fail(format!(
                "{path}: exit status {status}, stdout {stdout:?}; expected 1 and nothing"
            ));
        }
        golden.check(&net.with_extension("stderr"), &stderr);
    }
    golden.finish();
}
