//! `edgeclip`: the command-line front of the library. Argument parsing and output only.

mod cli;
mod run_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    edgeclip::preprocess::quiet_contained_panics();
    let args = cli::Cli::parse();
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
