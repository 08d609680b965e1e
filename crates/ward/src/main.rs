//! The `ward` binary: `ward serve` runs the gateway; the other verbs are its command line.
//!
//! Errors are reported here, at the edge, as one `error: ...` line (with the chain of causes)
//! and exit status 1. Logging (tracing) is only set up for `serve`: the other verbs talk to
//! people through stdout and stderr directly.

mod cli;
mod reload;
mod serve;
mod serve_ssh;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
