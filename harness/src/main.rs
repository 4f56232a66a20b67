//! The `pidring` command: `pidring run` (a tree-safe drop-in for `timeout` and `tini`),
//! `pidring bench`, and the hidden `pidring helper` that tests run as their children.
//!
//! Personalities, busybox-style: invoked as `timeout` (a symlink, or `pidring timeout …`)
//! pidring takes GNU timeout's command line; invoked as `tini` (or `pidring init …`),
//! tini's. All three run the same supervision (`run::supervise`).
//!
//! The binary has no Rust runtime start-up (`#![no_main]`; the C entry point is in `sys`):
//! the signal dispositions pidring was started with must reach PROGRAM unchanged.
//!
//! `unsafe` lives in `sys` (the system layer of `run` and `bench`) and in the private `raw`
//! module of `helper`, which stays self-contained because the tests crate compiles it too.
#![deny(unsafe_code)]
#![cfg_attr(not(test), no_main)]
// Unit-test builds have the test harness's `main`, not `sys::main`: the entry goes unused.
#![cfg_attr(test, allow(dead_code))]

mod bench;
mod duration;
mod helper;
mod run;
#[allow(unsafe_code)]
mod sys;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pidring",
    version,
    about = "Supervise processes and their whole trees on Linux (io_uring, pidfds, cgroups)",
    after_help = "Also: `pidring timeout …` (GNU timeout's command line) and `pidring init …` \
                  (tini's); or install pidring as `timeout` or `tini` (a symlink)."
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
    /// GNU timeout's command line: pidring timeout [OPTION]... DURATION COMMAND [ARG]...
    /// (handled before argument parsing; see `pidring timeout --help`).
    #[command(disable_help_flag = true)]
    Timeout {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// tini's command line: pidring init [OPTIONS] PROGRAM -- [ARGS] (handled before
    /// argument parsing; see `pidring init -h`).
    #[command(disable_help_flag = true)]
    Init {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Test helper (see harness/src/helper.rs); handled before argument parsing.
    #[command(hide = true)]
    Helper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        steps: Vec<OsString>,
    },
}

// `pidring run …` parsed on its own: building the whole command (with `bench`'s many
// options) costs a few hundred microseconds of start-up that `run` need not pay.
#[derive(Debug, Parser)]
#[command(
    name = "pidring run",
    version,
    about = "Run PROGRAM; when pidring exits, nothing of PROGRAM's process tree is alive."
)]
struct RunCli {
    #[command(flatten)]
    args: run::RunArgs,
}

/// Called by the C entry point (`sys::main`). Returns the exit status.
fn entry() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The helper must start fast: no clap, no runtime, no subscriber.
    if args.get(1).is_some_and(|a| a == "helper") {
        helper::main(args[2..].to_vec());
    }
    // What pidring was started with (signal dispositions and mask, children), before it
    // changes anything; and fds 0-2 open, so that no file pidring opens lands there.
    sys::reserve_std_fds();
    let entry = run::config::Entry::capture();

    let argv0 = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let invoked_as = argv0.rsplit('/').next().unwrap_or("");
    let rest = args.get(1..).unwrap_or(&[]);
    let code = std::panic::catch_unwind(|| match invoked_as {
        "timeout" => run::timeout(rest, "timeout", &entry),
        "tini" | "tini-static" => run::tini(&argv0, rest, &entry),
        _ => match args.get(1).and_then(|a| a.to_str()) {
            Some("timeout") => run::timeout(&args[2..], "timeout", &entry),
            Some("init") => run::tini(&argv0, &args[2..], &entry),
            Some("run") => run_with_clap(&args, &entry),
            _ => with_clap(&entry),
        },
    });
    // A panic is a bug; the unwinding dropped the pool, which killed the tree.
    code.unwrap_or(101)
}

/// clap's error, printed, as an exit status: --help and --version succeed; every usage error
/// is pidring's own failure (125), as GNU timeout does, so that it cannot be mistaken for
/// PROGRAM's status.
///
/// A usage error is one line on stderr (`pidring: invalid value 'x' for '--backend
/// <BACKEND>' (possible values: auto, uring, epoll); see --help`), like every other failure
/// of pidring's own.
fn usage_exit(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    use std::io::Write;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                i32::from(run::EXIT_PIDRING_FAILED)
            } else {
                0
            }
        }
        _ => {
            let line = one_line(&e.render().to_string());
            let _ = writeln!(std::io::stderr(), "pidring: {line}; see --help");
            i32::from(run::EXIT_PIDRING_FAILED)
        }
    }
}

/// clap's rendered error as one line: its message (a message ending in a colon is followed by
/// its list: `the following required arguments were not provided: <PROGRAM>...`), with the
/// possible values (if any) in parentheses, without the usage and the "For more
/// information" lines.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).peekable();
    let first = lines.next().unwrap_or("invalid usage");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if line.ends_with(':') {
        let mut items = Vec::new();
        while let Some(item) = lines.next_if(|l| !l.is_empty() && !l.starts_with("Usage:")) {
            items.push(item);
        }
        if !items.is_empty() {
            line.push(' ');
            line.push_str(&items.join(", "));
        }
    }
    for extra in lines.filter(|l| !l.is_empty()) {
        if let Some(values) = extra
            .strip_prefix("[possible values: ")
            .and_then(|v| v.strip_suffix(']'))
        {
            line.push_str(&format!(" (possible values: {values})"));
        } else if let Some(tip) = extra.strip_prefix("tip: ") {
            line.push_str(&format!(" ({tip})"));
        }
    }
    line
}

fn run_with_clap(args: &[OsString], entry: &run::config::Entry) -> i32 {
    let words = std::iter::once(OsString::from("pidring run")).chain(args[2..].iter().cloned());
    match RunCli::try_parse_from(words) {
        Ok(cli) => run::run(cli.args, entry),
        Err(e) => usage_exit(e),
    }
}

fn with_clap(entry: &run::config::Entry) -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_exit(e),
    };
    match cli.command {
        Command::Run(args) => run::run(args, entry),
        Command::Bench(args) => exit_code(bench::run(args)),
        Command::Timeout { args } => run::timeout(&args, "timeout", entry),
        Command::Init { args } => run::tini("pidring init", &args, entry),
        Command::Helper { steps } => helper::main(steps),
    }
}

/// `ExitCode` has no accessor; bench reports success or failure only.
fn exit_code(code: std::process::ExitCode) -> i32 {
    if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    }
}
