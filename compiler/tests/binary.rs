//! The `netc` executable itself (the rest of the command line is tested in-process, in the
//! workspace's `tests/`): exit statuses reach the shell, diagnostics go to stderr uncoloured
//! when stderr is not a terminal.

use std::process::Command;

fn netc(args: &[&str], stdin_file: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("netc-binary-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("net.net");
    std::fs::write(&path, stdin_file).expect("temp file");
    let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    argv.push(path.display().to_string());
    let output = Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(&argv)
        .output()
        .expect("netc runs");
    std::fs::remove_dir_all(&dir).ok();
    output
}

#[test]
fn exit_status_is_0_on_success_and_1_on_a_user_error() {
    let good = "network n {\n  input 4\n  dense 2\n  loss softmax_cross_entropy\n}\n";
    let output = netc(&["check"], good);
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty() && output.stderr.is_empty());

    let output = netc(&["check"], "network n {\n  input 4\n  dense 2 3 4\n}\n");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        stderr.starts_with("error: too many arguments for layer `dense`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes when stderr is a pipe: {stderr:?}"
    );
}
