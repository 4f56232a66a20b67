//! `pidring run [OPTIONS] -- PROGRAM [ARGS...]`: a tree-safe drop-in for `timeout` and
//! `tini`, and the same supervision behind GNU timeout's and tini's own command lines
//! (personalities: `pidring timeout …`, `pidring init …`, or the binary invoked as `timeout`
//! or `tini`).
//!
//! PROGRAM runs as the single task of a one-worker [`pidring::Pool`] with pidring as a child
//! subreaper. It inherits pidring's stdin, stdout and stderr (relayed only where a byte count
//! is asked for: [`relay`]), its terminal ([`terminal`]), and the signal dispositions and mask
//! pidring was started with ([`config::Entry`]). Every catchable signal to pidring is handled
//! ([`signals`]). When pidring exits, nothing of PROGRAM's tree is alive: the pool kills the
//! task's cgroup or process group, and pidring then kills every orphan that came back to it
//! (descendants that left the process group) before exiting.
//!
//! Exit status: PROGRAM's own; `128 + N` when it died of signal N; 124 when `--timeout` fired;
//! 125 when pidring failed (bad options included); 126 PROGRAM cannot be executed; 127 not
//! found. See [`exit`].

pub mod config;
mod exit;
mod relay;
mod report;
pub mod signals;
mod supervise;
mod sweep;
mod terminal;
pub mod timeout_cli;
pub mod tini_cli;

use std::ffi::OsString;
use std::path::PathBuf;

use pidring::{Backend, Containment};

use config::{Config, Entry, Voice};
pub use exit::PIDRING_FAILED as EXIT_PIDRING_FAILED;
pub use relay::StdioMode;
use report::{Report, ReportFile};
use signals::Personality;

const EXIT_HELP: &str = "\
Exit status:
  PROGRAM's own exit status, or 128+N when PROGRAM was killed by signal N
  124  --timeout fired (the tree was terminated)
  125  pidring itself failed (including invalid options)
  126  PROGRAM was found but cannot be executed
  127  PROGRAM was not found

Signals to pidring (every one but KILL and STOP is handled; none ends pidring alone):
  TERM INT HUP QUIT, and ABRT BUS FPE ILL SEGV SYS TRAP XCPU XFSZ VTALRM PROF STKFLT
       terminate the tree: SIGTERM to all of it, SIGKILL after --grace (a second one, but
       HUP, kills at once); pidring exits with PROGRAM's status (143 after SIGTERM)
  ALRM the timeout fires now (exit 124), as with GNU timeout
  USR1 USR2 WINCH URG IO PWR PIPE and the real-time signals: passed on to PROGRAM
  TSTP TTIN TTOU  PROGRAM's tree is stopped, then pidring; CONT continues them
  CHLD orphans are reaped
A signal that was ignored when pidring started (nohup, a background job of a script) stays
ignored, and PROGRAM starts with it ignored too, and with the signal mask pidring had.

Terminal and stdio: PROGRAM gets pidring's stdin, stdout and stderr. When they are
pidring's terminal and pidring is in the foreground, PROGRAM's process group is made the
terminal's foreground group (as a shell or tini does). With --report, stdout and stderr
that are pipes or sockets are relayed so that their bytes are counted (--stdio).

Durations: a number as C's strtod reads it (10, 1.5, 2.34e+5, 0x1p3, inf) with an optional
unit: ns, us, ms, s (default), m, h, d. 0 disables --timeout; beyond ~584 billion years
means forever.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainmentArg {
    /// cgroup v2 where a writable hierarchy exists, else process group.
    Auto,
    /// A cgroup v2 per run: catches descendants that setsid() or double-fork away.
    Cgroup,
    /// PROGRAM's own process group.
    ProcessGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Auto,
    Uring,
    Epoll,
}

/// Run PROGRAM; when pidring exits, nothing of PROGRAM's process tree is alive.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_HELP)]
pub struct RunArgs {
    /// Terminate the tree after this long (--signal, then SIGKILL after --grace) and exit
    /// 124. 0 disables the timeout, as in GNU timeout.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Option<OsString>,

    /// The signal sent to the tree when --timeout fires (a name like HUP or a number, as
    /// GNU timeout's -s); SIGKILL follows after --grace.
    #[arg(
        long,
        short = 's',
        value_name = "SIGNAL",
        default_value = "TERM",
        allow_hyphen_values = true
    )]
    pub signal: String,

    /// Time between the first signal and SIGKILL on any termination (timeout, signal,
    /// drain).
    #[arg(
        long,
        short = 'k',
        visible_alias = "kill-after",
        value_name = "DURATION",
        default_value = "5s",
        allow_hyphen_values = true
    )]
    pub grace: OsString,

    /// After PROGRAM exits, how long its descendants may live before the rest of the tree is
    /// terminated.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        allow_hyphen_values = true
    )]
    pub drain: OsString,

    /// How the whole tree is contained and killed.
    #[arg(long, value_enum, default_value_t = ContainmentArg::Auto)]
    pub containment: ContainmentArg,

    /// The I/O driver (epoll is refused until an epoll driver exists).
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

    /// How PROGRAM's stdout and stderr reach pidring's: auto (relayed, to count their bytes,
    /// when --report is given and they are pipes or sockets; else passed through), inherit
    /// (always passed through), relay (relayed unless a terminal).
    #[arg(long, value_enum, default_value_t = StdioMode::Auto)]
    pub stdio: StdioMode,

    /// At exit, write a JSON object to FILE: exit_code, reason, signal, status_code, timed_out,
    /// duration_ms, descendants_killed, containment, backend, stdout_bytes, stderr_bytes, …
    /// FILE is created before PROGRAM starts; an unwritable FILE is an error (125).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// When the timeout fires, exit with PROGRAM's status instead of 124.
    #[arg(long, short = 'p')]
    pub preserve_status: bool,

    /// Log what pidring does to stderr (-v info, -vv debug, -vvv trace; RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// PROGRAM and its arguments (put them after `--` when an argument starts with `-`).
    #[arg(required = true, trailing_var_arg = true, value_name = "PROGRAM")]
    pub command: Vec<OsString>,
}

/// `pidring run`: returns the process's exit status (or never returns, when pidring dies of
/// PROGRAM's signal).
pub fn run(args: RunArgs, entry: &Entry) -> i32 {
    let handled = entry.take_signals();
    init_logging(args.verbose);
    let voice = Voice {
        personality: Personality::Run,
        name: "pidring".into(),
        verbose: args.verbose,
    };
    let cfg = match run_config(&args) {
        Ok(cfg) => cfg,
        Err(msg) => {
            voice.error(&msg);
            return i32::from(exit::PIDRING_FAILED);
        }
    };
    execute(&cfg, entry, handled, &voice)
}

fn run_config(args: &RunArgs) -> Result<Config, String> {
    let mut cfg = Config::new(Personality::Run, args.command.clone());
    cfg.timeout = match &args.timeout {
        Some(t) => Some(parse_duration("--timeout", t)?).filter(|d| !d.is_zero()),
        None => None,
    };
    cfg.timeout_signal = signals::parse(&args.signal)
        .ok_or_else(|| format!("invalid signal '{}' for --signal", args.signal))?;
    cfg.grace = parse_duration("--grace", &args.grace)?;
    cfg.drain = parse_duration("--drain", &args.drain)?;
    cfg.containment = match args.containment {
        ContainmentArg::Auto => Containment::Auto,
        ContainmentArg::Cgroup => Containment::Cgroup,
        ContainmentArg::ProcessGroup => Containment::ProcessGroup,
    };
    cfg.backend = match args.backend {
        BackendArg::Auto => Backend::Auto,
        BackendArg::Uring => Backend::Uring,
        BackendArg::Epoll => Backend::Epoll,
    };
    cfg.report = args.report.clone();
    cfg.preserve_status = args.preserve_status;
    cfg.stdio = args.stdio;
    cfg.verbose = args.verbose;
    Ok(cfg)
}

fn parse_duration(option: &str, text: &OsString) -> Result<std::time::Duration, String> {
    let shown = text.to_string_lossy();
    let s = text
        .to_str()
        .ok_or_else(|| format!("invalid duration '{shown}' for {option}: not UTF-8"))?;
    crate::duration::parse(s)
        .map_err(|why| format!("invalid duration '{shown}' for {option}: {why}"))
}

/// GNU timeout's command line (`timeout …` or `pidring timeout …`). `name` is the name in
/// messages.
pub fn timeout(args: &[OsString], name: &str, entry: &Entry) -> i32 {
    let cfg = match timeout_cli::parse(args, name) {
        timeout_cli::Parsed::Run(cfg) => cfg,
        timeout_cli::Parsed::Exit(code) => return code,
    };
    let handled = entry.take_signals();
    let voice = Voice {
        personality: Personality::Timeout,
        name: name.to_string(),
        verbose: cfg.verbose,
    };
    execute(&cfg, entry, handled, &voice)
}

/// tini's command line (`tini …` or `pidring init …`). `argv0` is how it was invoked.
pub fn tini(argv0: &str, args: &[OsString], entry: &Entry) -> i32 {
    let cfg = match tini_cli::parse(argv0, args) {
        tini_cli::Parsed::Run(cfg) => cfg,
        tini_cli::Parsed::Exit(code) => return code,
    };
    let handled = entry.take_signals();
    let voice = Voice {
        personality: Personality::Tini,
        name: "tini".into(),
        verbose: cfg.verbose,
    };
    voice.tini(4, "Registered as child subreaper");
    execute(&cfg, entry, handled, &voice)
}

/// Supervises `cfg` and turns the result into pidring's exit.
fn execute(cfg: &Config, entry: &Entry, handled: signals::SigSet, voice: &Voice) -> i32 {
    let failed = i32::from(exit::failure_code(cfg.personality));
    let mut report = Report {
        exit_code: exit::failure_code(cfg.personality),
        reason: "error",
        program: cfg.program_shown(),
        ..Report::default()
    };
    // The report file first, so that a bad path fails before PROGRAM runs.
    let report_file = match &cfg.report {
        Some(path) => match ReportFile::open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                voice.error(&e);
                return failed;
            }
        },
        None => None,
    };
    let finish = supervise::supervise(cfg, entry, handled, voice, &mut report);
    report.exit_code = finish.die_of.map_or(finish.code, |s| {
        exit::from_status(pidring::ExitStatus::Signal(s)).unwrap_or(finish.code)
    });
    if let Some(file) = report_file {
        if let Err(e) = file.write(&report) {
            voice.error(&e);
            return failed;
        }
    }
    if let Some(sig) = finish.die_of {
        crate::sys::die_of_signal(sig);
    }
    i32::from(finish.code)
}

fn init_logging(verbose: u8) {
    if verbose == 0 {
        return;
    }
    let default = match verbose {
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_writer(|| StderrLines)
        .with_ansi(crate::sys::is_terminal(2))
        .log_internal_errors(false)
        .with_env_filter(filter)
        .try_init();
}

/// Log lines go to fd 2 raw; a failing stderr (`2>/dev/full`, a closed pipe) loses them
/// quietly instead of making pidring fail.
struct StderrLines;

impl std::io::Write for StderrLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        relay::write_stderr(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
