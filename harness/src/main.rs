//! The `pidring` command: `pidring run` (a tree-safe drop-in for `timeout` and `tini`),
//! `pidring bench`, and the hidden `pidring helper` that tests run as their children.
//!
//! `unsafe` lives in `sys` (the system layer of `run` and `bench`) and in the private `raw`
//! module of `helper`, which stays self-contained because the tests crate compiles it too.
#![deny(unsafe_code)]

mod bench;
mod duration;
mod helper;
mod run;
#[allow(unsafe_code)]
mod sys;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pidring",
    version,
    about = "Supervise processes and their whole trees on Linux (io_uring, pidfds, cgroups)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run PROGRAM under supervision; when pidring exits, nothing of its tree is alive.
    Run(run::RunArgs),
    /// Benchmark the pool.
    Bench(bench::BenchArgs),
    /// Test helper (see harness/src/helper.rs); handled before argument parsing.
    #[command(hide = true)]
    Helper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        steps: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    // The helper must start fast: no clap, no runtime, no subscriber.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "helper") {
        helper::main(args.collect());
    }

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            // --help and --version succeed; every usage error is pidring's own failure (125),
            // as GNU timeout does, so that it cannot be mistaken for PROGRAM's status.
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(run::EXIT_PIDRING_FAILED),
            };
        }
    };
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Helper { steps } => helper::main(steps),
    }
}
