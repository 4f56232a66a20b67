//! `pidring run [OPTIONS] -- PROGRAM [ARGS...]`: a tree-safe drop-in for `timeout` and `tini`.
//!
//! PROGRAM runs as the single task of a one-worker [`pidring::Pool`] with pidring as a child
//! subreaper. Its stdout and stderr are read through the ring and written to pidring's own,
//! byte for byte; stdin is inherited. When pidring exits, nothing of PROGRAM's tree is alive:
//! the pool kills the task's cgroup or process group, and pidring then kills every orphan that
//! came back to it (descendants that left the process group) before exiting.
//!
//! Exit status: PROGRAM's own; `128 + N` when it died of signal N; 124 when `--timeout` fired;
//! 125 when pidring failed (bad options included); 126 PROGRAM cannot be executed; 127 not
//! found. See [`exit`].

mod exit;
mod output;
mod report;
mod sweep;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select};
use pidring::{
    Backend, BuildError, Containment, Event, ExitStatus, Outcome, Pool, Reason, SpawnError, Stdio,
    StreamId, TaskHandle, TaskSpec,
};

pub use exit::PIDRING_FAILED as EXIT_PIDRING_FAILED;
use output::Chunk;
use report::{Report, ReportFile};

const EXIT_HELP: &str = "\
Exit status:
  PROGRAM's own exit status, or 128+N when PROGRAM was killed by signal N
  124  --timeout fired (the tree was terminated)
  125  pidring itself failed (including invalid options)
  126  PROGRAM was found but cannot be executed
  127  PROGRAM was not found

Signals: SIGTERM, SIGINT, SIGHUP and SIGQUIT terminate the tree (SIGTERM, then SIGKILL after
--grace; a second SIGTERM, SIGINT or SIGQUIT kills at once); pidring then exits with
PROGRAM's status. SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to PROGRAM. A signal that
was ignored when pidring started (nohup, a background job of a script) stays ignored.

Durations: 1.5s, 500ms, 250us, 2m, 1h, 1d, or a bare number of seconds.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainmentArg {
    /// cgroup v2 where a writable hierarchy exists, else process group.
    Auto,
    /// A cgroup v2 per run: catches descendants that setsid() or double-fork away.
    Cgroup,
    /// PROGRAM's own session and process group.
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
    /// Terminate the tree after this long (SIGTERM, then SIGKILL after --grace) and exit 124.
    /// 0 disables the timeout, as in GNU timeout.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Option<OsString>,

    /// Time between SIGTERM and SIGKILL on any termination (timeout, signal, drain).
    #[arg(
        long,
        short = 'k',
        visible_alias = "kill-after",
        value_name = "DURATION",
        default_value = "5s",
        allow_hyphen_values = true
    )]
    pub grace: OsString,

    /// After PROGRAM exits, how long its descendants may keep its stdout/stderr open before the
    /// rest of the tree is terminated.
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

    /// At exit, write a JSON object to FILE: exit_code, reason, signal, status_code, timed_out,
    /// duration_ms, descendants_killed, containment, backend, stdout_bytes, stderr_bytes, …
    /// FILE is created before PROGRAM starts; an unwritable FILE is an error (125).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// When the timeout fires, exit with PROGRAM's status instead of 124.
    #[arg(long)]
    pub preserve_status: bool,

    /// Log what pidring does to stderr (-v info, -vv debug, -vvv trace; RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// PROGRAM and its arguments (put them after `--` when an argument starts with `-`).
    #[arg(required = true, trailing_var_arg = true, value_name = "PROGRAM")]
    pub command: Vec<OsString>,
}

/// Terminating signals and signals forwarded to PROGRAM.
const TERMINATING: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];
const FORWARDED: [i32; 3] = [libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

/// Output waiting in pidring's own queue before it stops taking more from the pool (which
/// then pauses reading, so PROGRAM blocks on a full pipe): memory stays bounded.
const MAX_PENDING_BYTES: usize = 4 << 20;
/// Once the tree is being terminated, output beyond this is dropped rather than let a stuck
/// consumer of pidring's stdout delay the end.
const MAX_PENDING_TERMINATING: usize = 64 << 20;
/// How long pidring keeps killing orphans that come back to it before it gives up.
const SWEEP_LIMIT: Duration = Duration::from_secs(5);

pub fn run(args: RunArgs) -> ExitCode {
    // Started with stdin, stdout or stderr closed (`pidring run … >&-`), the next file pidring
    // opens would take that number, and PROGRAM's output would be written into it.
    reserve_std_fds();
    init_logging(args.verbose);
    let program = args.command.first().cloned().unwrap_or_default();
    let mut report = Report {
        exit_code: exit::PIDRING_FAILED,
        reason: "error",
        program: program.to_string_lossy().into_owned(),
        ..Report::default()
    };

    // The report file first, so that a bad path fails before PROGRAM runs.
    let report_file = match &args.report {
        Some(path) => match ReportFile::open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                error_line(&e);
                return ExitCode::from(exit::PIDRING_FAILED);
            }
        },
        None => None,
    };

    let code = match Setup::new(&args) {
        Ok(setup) => supervise(setup, &args, &program, &mut report),
        Err(e) => {
            error_line(&e);
            report.error = Some(e);
            exit::PIDRING_FAILED
        }
    };
    report.exit_code = code;
    if let Some(file) = report_file {
        if let Err(e) = file.write(&report) {
            error_line(&e);
            return ExitCode::from(exit::PIDRING_FAILED);
        }
    }
    ExitCode::from(code)
}

fn error_line(msg: &str) {
    // One line, whatever the message holds.
    let line = format!("pidring: {}\n", msg.replace('\n', " "));
    let _ = output::write_all(2, line.as_bytes());
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
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

/// Options checked before anything starts.
struct Setup {
    timeout: Option<Duration>,
    grace: Duration,
    drain: Duration,
}

impl Setup {
    fn new(args: &RunArgs) -> Result<Setup, String> {
        let timeout = match &args.timeout {
            Some(t) => Some(parse_duration("--timeout", t)?).filter(|d| !d.is_zero()),
            None => None,
        };
        Ok(Setup {
            timeout,
            grace: parse_duration("--grace", &args.grace)?,
            drain: parse_duration("--drain", &args.drain)?,
        })
    }
}

fn parse_duration(option: &str, text: &OsString) -> Result<Duration, String> {
    let shown = text.to_string_lossy();
    let s = text
        .to_str()
        .ok_or_else(|| format!("invalid duration '{shown}' for {option}: not UTF-8"))?;
    crate::duration::parse(s)
        .map_err(|why| format!("invalid duration '{shown}' for {option}: {why}"))
}

/// Builds the pool, starts PROGRAM, passes its output through, and returns pidring's status.
fn supervise(setup: Setup, args: &RunArgs, program: &OsString, report: &mut Report) -> u8 {
    let started = Instant::now();

    // Signals before the pool and the spawn: from here on, a SIGTERM ends the tree instead of
    // pidring alone.
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded::<i32>();
    // A signal ignored when pidring started stays ignored, as in a POSIX shell: `nohup
    // pidring run …` survives the hangup, a background `pidring run … &` of a script ignores
    // the terminal's SIGINT.
    let all: Vec<i32> = TERMINATING
        .iter()
        .chain(FORWARDED.iter())
        .copied()
        .filter(|&sig| {
            let ignored = ignored_on_entry(sig);
            if ignored {
                tracing::info!(sig, "signal ignored on entry: left ignored");
            }
            !ignored
        })
        .collect();
    let mut signals = match signal_hook::iterator::Signals::new(&all) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(format!("cannot install signal handlers: {e}"));
            error_line(report.error.as_deref().unwrap_or_default());
            return exit::PIDRING_FAILED;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("pidring-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig_tx.send(sig).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        report.error = Some(format!("cannot start the signal thread: {e}"));
        error_line(report.error.as_deref().unwrap_or_default());
        return exit::PIDRING_FAILED;
    }

    let containment = match args.containment {
        ContainmentArg::Auto => Containment::Auto,
        ContainmentArg::Cgroup => Containment::Cgroup,
        ContainmentArg::ProcessGroup => Containment::ProcessGroup,
    };
    let backend = match args.backend {
        BackendArg::Auto => Backend::Auto,
        BackendArg::Uring => Backend::Uring,
        BackendArg::Epoll => Backend::Epoll,
    };
    // One task: one small ring starts faster than the fleet-sized default.
    let pool = match Pool::builder()
        .workers(1)
        .submission_queue(64)
        .subreaper(true)
        .containment(containment)
        .backend(backend)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            let msg = match &e {
                BuildError::BackendUnavailable(name, why) => {
                    format!("--backend {name} is not available: {why}")
                }
                BuildError::Containment(c) => {
                    format!("--containment {}: {c}", containment_name(args.containment))
                }
                other => format!("cannot start the supervisor: {other}"),
            };
            error_line(&msg);
            report.error = Some(msg);
            return exit::PIDRING_FAILED;
        }
    };
    report.containment = Some(pool.containment().as_str());
    report.backend = Some(pool.backend().as_str());
    tracing::info!(
        containment = pool.containment().as_str(),
        backend = pool.backend().as_str(),
        "supervisor ready"
    );

    let mut spec = TaskSpec::new(program)
        .args(args.command.iter().skip(1))
        .stdin(Stdio::Inherit)
        .stdout(Stdio::Capture)
        .stderr(Stdio::Capture)
        .grace(setup.grace)
        .drain(setup.drain);
    if let Some(t) = setup.timeout {
        spec = spec.timeout(t);
    }
    let spawn_result = if program.is_empty() {
        // execve("") is ENOENT; say so without asking the kernel.
        Err(SpawnError::NotFound(String::new()))
    } else {
        pool.spawn(spec)
    };
    let handle = match spawn_result {
        Ok(h) => h,
        Err(e) => {
            let code = exit::from_spawn_error(&e);
            let msg = format!("cannot run '{}': {e}", program.to_string_lossy());
            error_line(&msg);
            report.reason = "spawn_failed";
            report.error = Some(msg);
            report.duration_ms = ms(started.elapsed());
            pool.shutdown();
            return code;
        }
    };
    report.pid = Some(handle.pid());
    tracing::info!(pid = handle.pid(), task = %handle.id(), "started");

    let (ended, dropped) = pass_through(&pool, &handle, &sig_rx, setup.timeout, setup.grace);
    let orphans = sweep::kill_remaining_children(SWEEP_LIMIT);
    if orphans > 0 {
        tracing::info!(
            orphans,
            "killed descendants that had left the task's containment"
        );
    }
    pool.shutdown();

    report.stdout_dropped = dropped.stdout;
    report.stderr_dropped = dropped.stderr;
    report.received_signal = ended.received_signal;
    report.stdout_bytes = ended.seen[0];
    report.stderr_bytes = ended.seen[1];
    let Some(outcome) = ended.outcome else {
        let msg = ended
            .error
            .unwrap_or_else(|| "the supervisor stopped before PROGRAM ended".into());
        error_line(&msg);
        report.error = Some(msg);
        report.descendants_killed = orphans;
        report.duration_ms = ms(started.elapsed());
        return exit::PIDRING_FAILED;
    };
    fill_from_outcome(report, &outcome, orphans);
    let code = exit::from_outcome(outcome.reason, outcome.status, args.preserve_status);
    match outcome.reason {
        Reason::StatusUnknown => {
            let msg = "PROGRAM's exit status was lost (reaped by someone else)".to_string();
            error_line(&msg);
            report.error = Some(msg);
        }
        Reason::SpawnFailed(errno) => {
            let msg = format!(
                "cannot run '{}': {}",
                program.to_string_lossy(),
                std::io::Error::from_raw_os_error(errno)
            );
            error_line(&msg);
            report.error = Some(msg);
        }
        _ => {}
    }
    tracing::info!(reason = ?outcome.reason, status = ?outcome.status, exit_code = code, "done");
    code
}

/// Opens `/dev/null` on whichever of fds 0, 1, 2 is closed.
fn reserve_std_fds() {
    crate::sys::reserve_std_fds();
}

/// Whether `sig`'s disposition is `SIG_IGN` (inherited from whoever started pidring).
fn ignored_on_entry(sig: i32) -> bool {
    crate::sys::signal_ignored(sig)
}

fn containment_name(c: ContainmentArg) -> &'static str {
    match c {
        ContainmentArg::Auto => "auto",
        ContainmentArg::Cgroup => "cgroup",
        ContainmentArg::ProcessGroup => "process-group",
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn fill_from_outcome(report: &mut Report, outcome: &Outcome, orphans: u64) {
    report.reason = exit::reason_name(outcome.reason);
    report.signal = match outcome.status {
        ExitStatus::Signal(s) => Some(s),
        _ => None,
    };
    report.status_code = match outcome.status {
        ExitStatus::Code(c) => Some(c),
        _ => None,
    };
    report.timed_out = outcome.reason == Reason::TimedOut;
    report.duration_ms = ms(outcome.duration);
    report.descendants_killed = outcome.descendants_killed + orphans;
    report.tree_signalled = outcome.tree_signalled || orphans > 0;
    for &(stream, n) in &outcome.stream_bytes {
        if stream == StreamId::STDOUT {
            report.stdout_bytes = n;
        } else if stream == StreamId::STDERR {
            report.stderr_bytes = n;
        }
    }
}

/// How the event loop ended.
struct Ended {
    outcome: Option<Outcome>,
    /// Output bytes seen per stream (stdout, stderr).
    seen: [u64; 2],
    received_signal: Option<i32>,
    error: Option<String>,
}

/// The event loop: output to the writer thread, signals to the task, until `Done` and the
/// output is written.
fn pass_through(
    pool: &Pool,
    handle: &TaskHandle,
    sig_rx: &Receiver<i32>,
    timeout: Option<Duration>,
    grace: Duration,
) -> (Ended, output::Dropped) {
    let mut ended = Ended {
        outcome: None,
        seen: [0; 2],
        received_signal: None,
        error: None,
    };
    let (broken_tx, broken_rx) = crossbeam_channel::unbounded::<i32>();
    let counters = Arc::new(output::Counters::default());
    // The writer thread starts with the first output (`pidring run -- true` needs none). If it
    // cannot start, pidring writes inline instead.
    let mut writer: Option<output::Writer> = None;
    let mut inline: Option<[bool; 3]> = None;
    let events = pool.events();
    let mut out_tx: Option<crossbeam_channel::Sender<Chunk>> = None;
    let mut pending: VecDeque<Chunk> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let mut terminations = 0u32;
    let mut sigpipe_sent = false;
    let mut flush_deadline: Option<Instant> = None;
    let timeout_at = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut timeout_passed = false;

    loop {
        let done = ended.outcome.is_some();
        if let Some(dead) = inline.as_mut() {
            for c in pending.drain(..) {
                output::write_chunk(&c, dead, &counters, &broken_tx);
            }
            pending_bytes = 0;
        }
        if done && pending.is_empty() {
            out_tx = None; // closes the queue; the writer finishes and says so
            if writer.is_none() {
                break;
            }
        }
        // The pool ends the tree itself when --timeout fires; from then on pidring stops
        // holding PROGRAM's output back for a stalled consumer of its own stdout, or it could
        // not see the end.
        if !timeout_passed && timeout_at.is_some_and(|t| Instant::now() >= t) {
            timeout_passed = true;
        }
        let terminating = terminations > 0 || timeout_passed;
        let mut sel = Select::new();
        let i_ev =
            (!done && (pending_bytes < MAX_PENDING_BYTES || terminating)).then(|| sel.recv(events));
        let i_sig = sel.recv(sig_rx);
        let i_broken = (!done && !sigpipe_sent).then(|| sel.recv(&broken_rx));
        let i_send = match (&out_tx, pending.is_empty()) {
            (Some(tx), false) => Some(sel.send(tx)),
            _ => None,
        };
        let i_done = match (&out_tx, &writer) {
            (None, Some(w)) => Some(sel.recv(w.done())),
            _ => None,
        };
        // Asked to stop and PROGRAM is gone: the last output gets `grace` to be written, so a
        // consumer that stopped reading cannot keep pidring alive.
        if done && terminating && flush_deadline.is_none() {
            flush_deadline = Some(Instant::now() + grace.max(Duration::from_secs(1)));
        }
        let wake = match (flush_deadline, timeout_at.filter(|_| !timeout_passed)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let op = match wake {
            Some(deadline) => match sel.select_deadline(deadline) {
                Ok(op) => op,
                Err(_) if flush_deadline.is_some_and(|f| Instant::now() >= f) => {
                    tracing::info!(
                        "output not written within the grace period: exiting without it"
                    );
                    for c in pending.drain(..) {
                        counters.add(c.fd, c.bytes.len() as u64);
                    }
                    break;
                }
                Err(_) => continue, // the timeout passed: look again
            },
            None => sel.select(),
        };
        let idx = Some(op.index());

        if idx == i_ev {
            match op.recv(events) {
                Ok(Event::Output {
                    task,
                    stream,
                    bytes,
                }) if task == handle.id() => {
                    let fd = if stream == StreamId::STDOUT {
                        1
                    } else if stream == StreamId::STDERR {
                        2
                    } else {
                        continue;
                    };
                    ended.seen[fd as usize - 1] += bytes.len() as u64;
                    if terminating && pending_bytes >= MAX_PENDING_TERMINATING {
                        counters.add(fd, bytes.len() as u64);
                        continue;
                    }
                    pending_bytes += bytes.len();
                    pending.push_back(Chunk {
                        fd,
                        bytes: bytes.into_vec(),
                    });
                    if writer.is_none() && inline.is_none() {
                        match output::Writer::start(16, broken_tx.clone(), Arc::clone(&counters)) {
                            Ok((tx, w)) => {
                                out_tx = Some(tx);
                                writer = Some(w);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "no output thread: writing inline");
                                inline = Some([false; 3]);
                            }
                        }
                    }
                }
                Ok(Event::Exited { task, status }) if task == handle.id() => {
                    tracing::info!(?status, "PROGRAM exited");
                }
                Ok(Event::Done { task, outcome }) if task == handle.id() => {
                    tracing::debug!(?outcome, "task done");
                    ended.outcome = Some(outcome);
                }
                Ok(_) => {}
                Err(_) => {
                    ended.error = Some("the supervisor stopped before PROGRAM ended".into());
                    break;
                }
            }
        } else if idx == Some(i_sig) {
            let Ok(sig) = op.recv(sig_rx) else { continue };
            if done {
                // PROGRAM is gone; only our own output is left to write. A stuck consumer must
                // not keep pidring alive against a request to stop.
                if TERMINATING.contains(&sig) {
                    tracing::info!(
                        sig,
                        "signal while writing the last output: exiting without it"
                    );
                    ended.received_signal.get_or_insert(sig);
                    for c in pending.drain(..) {
                        counters.add(c.fd, c.bytes.len() as u64);
                    }
                    break;
                }
                continue;
            }
            if TERMINATING.contains(&sig) {
                terminations += 1;
                ended.received_signal.get_or_insert(sig);
                if terminations == 1 {
                    tracing::info!(sig, "terminating the tree");
                    log_control(handle.terminate());
                } else if sig != libc::SIGHUP {
                    tracing::info!(sig, "second signal: killing the tree");
                    log_control(handle.kill());
                }
            } else {
                tracing::debug!(sig, "forwarding");
                log_control(handle.signal(sig));
            }
        } else if idx == i_broken {
            let _ = op.recv(&broken_rx);
            // pidring's own stdout/stderr reader is gone: PROGRAM gets the SIGPIPE it would
            // have had writing to that pipe itself (its further output is dropped).
            sigpipe_sent = true;
            tracing::info!("output closed by its reader: sending SIGPIPE to PROGRAM");
            log_control(handle.signal(libc::SIGPIPE));
        } else if idx == i_send {
            let chunk = pending.pop_front().unwrap_or(Chunk {
                fd: -1,
                bytes: Vec::new(),
            });
            pending_bytes -= chunk.bytes.len();
            // `i_send` is registered only while there is a sender.
            if let Some(tx) = &out_tx {
                if let Err(e) = op.send(tx, chunk) {
                    counters.add(e.0.fd, e.0.bytes.len() as u64);
                }
            }
        } else if idx == i_done {
            if let Some(w) = &writer {
                let _ = op.recv(w.done());
            }
            break;
        } else {
            // Every registered operation is handled above.
            tracing::error!("internal: unknown select index");
            break;
        }
    }
    if let Some(w) = writer {
        w.finish(false);
    }
    (ended, counters.get())
}

fn log_control(r: Result<(), pidring::ControlError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "request to the task failed");
    }
}
