//! `edgeclip`: the command-line front of the library. Argument parsing and output only.

mod cli;
mod run_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    edgeclip::preprocess::quiet_contained_panics();
    let args = cli::Cli::parse();
    if !cli::is_run(&args.command) {
        restore_default_sigpipe();
    }
    // A service's log is its record: `run` says what it is doing by default.
    let quiet = if cli::is_run(&args.command) {
        "info"
    } else {
        "warn"
    };
    let level = match args.global.verbose {
        0 => quiet,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(format!("edgeclip={level}")),
    )
    .format_timestamp(None)
    .init();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edgeclip: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A one-shot command whose reader went away (`edgeclip inspect | head`) ends like any Unix
/// tool, by SIGPIPE, instead of panicking in `println!` (Rust ignores SIGPIPE by default).
/// Not for `run`: there a peer that closes its socket must be an error on that sink, not the
/// end of the service.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
