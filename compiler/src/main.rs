//! The `netc` executable: the command line of `cli`, with panics reported as internal errors.

fn main() {
    let mut stderr = netc_runtime::session::stderr();
    let mut stdout = std::io::stdout().lock();
    let args: Vec<_> = std::env::args_os().collect();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("internal compiler error: {info}");
        eprintln!("note: this is a bug in netc, not in your network; please report it with the input that caused it");
    }));
    let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        netc::cli::run(args, &mut stdout, &mut stderr)
    }))
    .unwrap_or(101);
    std::process::exit(status);
}
