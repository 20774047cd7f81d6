//! `edgeclip`: the command-line front of the library. Argument parsing and output only.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let level = match args.global.verbose {
        0 => "warn",
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
