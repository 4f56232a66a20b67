//! The supervision of one PROGRAM, shared by the three personalities: start the pool and the
//! task, then one thread waits on a signalfd and the pool's events until the task is done,
//! and leaves nothing of the tree alive.
//!
//! Signals to PROGRAM go through pidfds: to the whole tree through the pool (`terminate`:
//! SIGTERM to the task's cgroup or process group and SIGKILL after the grace period; `kill`:
//! SIGKILL to all of it), and, for a signal passed on *as itself*, through the main process's
//! pidfd, to it or (`PIDFD_SIGNAL_PROCESS_GROUP`) to the process group it leads.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use pidring::{
    BuildError, Event, ExitStatus, Outcome, Pool, Reason, SpawnError, Stdio, TaskHandle, TaskSpec,
};

use super::config::{Config, Entry, Voice};
use super::exit;
use super::relay::{self, Relays, Totals};
use super::report::Report;
use super::signals::{self, Action, Personality, Policy, SigSet};
use super::sweep;
use super::terminal::{self, Terminal};
use crate::sys::{self, SignalFd, SignalInfo, Wake};

/// How long pidring keeps killing orphans that come back to it before it gives up.
const SWEEP_LIMIT: Duration = Duration::from_secs(5);

/// How pidring ends: an exit status, or (GNU timeout) dying of PROGRAM's signal itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    pub code: u8,
    pub die_of: Option<i32>,
}

impl Finish {
    pub fn code(code: u8) -> Finish {
        Finish { code, die_of: None }
    }
}

/// Runs `cfg.command` to the end of its tree; fills `report`.
pub fn supervise(
    cfg: &Config,
    entry: &Entry,
    handled: SigSet,
    voice: &Voice,
    report: &mut Report,
) -> Finish {
    let failed = exit::failure_code(cfg.personality);
    let fail = |report: &mut Report, msg: String| -> Finish {
        voice.error(&msg);
        report.error = Some(msg);
        Finish::code(failed)
    };
    let signals = match SignalFd::new(handled.0) {
        Ok(s) => s,
        Err(e) => return fail(report, format!("cannot read signals (signalfd): {e}")),
    };
    let wake = match Wake::new() {
        Ok(w) => Arc::new(w),
        Err(e) => return fail(report, format!("cannot create an eventfd: {e}")),
    };
    if let Some(sig) = cfg.parent_death_signal {
        if let Err(e) = sys::set_parent_death_signal(sig) {
            return fail(report, format!("Failed to set up parent death signal: {e}"));
        }
    }

    let (events_tx, events) = crossbeam_channel::unbounded::<Event>();
    let pool_wake = Arc::clone(&wake);
    let built = Pool::builder()
        .workers(1)
        .submission_queue(16)
        .subreaper(true)
        .containment(cfg.containment)
        .backend(cfg.backend)
        .on_event(move |event| {
            let _ = events_tx.send(event);
            pool_wake.notify();
        })
        .build();
    let pool = match built {
        Ok(pool) => pool,
        Err(e) => {
            let msg = match &e {
                BuildError::BackendUnavailable(name, why) => {
                    format!("--backend {name} is not available: {why}")
                }
                BuildError::Containment(c) => format!("--containment: {c}"),
                other => format!("cannot start the supervisor: {other}"),
            };
            return fail(report, msg);
        }
    };
    report.containment = Some(pool.containment().as_str());
    report.containment_reason = Some(pool.containment_reason().to_owned());
    report.backend = Some(pool.backend().as_str());
    report.backend_reason = Some(pool.backend_reason().to_owned());
    tracing::info!(
        containment = pool.containment().as_str(),
        containment_reason = pool.containment_reason(),
        backend = pool.backend().as_str(),
        backend_reason = pool.backend_reason(),
        "supervisor ready"
    );

    // Output relays (only `pidring run` relays; see relay.rs), then the session.
    let plan = match cfg.personality {
        Personality::Run => relay::plan(cfg.stdio, cfg.report.is_some()),
        _ => relay::Plan::default(),
    };
    let mut relays = match Relays::install(plan) {
        Ok(r) => r,
        Err(e) => {
            pool.shutdown();
            return fail(report, format!("cannot set up the output relay: {e}"));
        }
    };
    let (session, terminal) = terminal::choose(
        [false, plan.stdout, plan.stderr],
        entry.ignored.contains(libc::SIGINT),
    );
    tracing::debug!(?session, ?plan, "session and stdio");

    let program = cfg.command.first().cloned().unwrap_or_default();
    let spec = TaskSpec::new(&program)
        .args(cfg.command.iter().skip(1))
        .stdin(Stdio::Inherit)
        .stdout(Stdio::Inherit)
        .stderr(Stdio::Inherit)
        .grace(cfg.grace)
        .drain(cfg.drain)
        .session(session)
        .ignore_signals(entry.ignored_for_program().iter())
        .block_signals(entry.blocked.iter().filter(|&s| !signals::uncatchable(s)));
    let started = Instant::now();
    let spawned = if program.is_empty() {
        // execve("") is ENOENT; say so without asking the kernel.
        Err(SpawnError::NotFound(String::new()))
    } else {
        pool.spawn(spec)
    };
    relays.started(&wake);
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => {
            let finish = spawn_failed(cfg, voice, &e, report);
            report.duration_ms = ms(started.elapsed());
            drop(relays);
            pool.shutdown();
            return finish;
        }
    };
    let main_pid = handle.pid() as i32;
    report.pid = Some(handle.pid());
    tracing::info!(pid = main_pid, task = %handle.id(), "started");
    voice.tini(
        2,
        &format!(
            "Spawned child process '{}' with pid '{main_pid}'",
            cfg.program_shown()
        ),
    );

    let mut run = Running {
        cfg,
        voice,
        policy: cfg.policy(),
        entry,
        handle: &handle,
        main_pid,
        pidfd: sys::open_child_pidfd(main_pid),
        terminal,
        events: &events,
        started,
        timeout_at: cfg.timeout.and_then(|t| started.checked_add(t)),
        kill_at: None,
        term_signal: cfg.timeout_signal,
        kill_after: cfg.kill_after,
        timed_out: false,
        terminations: 0,
        received_signal: None,
        main_status: None,
        outcome: None,
        own_pid: sys::own_pid(),
    };
    run.event_loop(&signals, &wake);

    // The tree is done (or the pool stopped). Orphans that escaped the containment (a
    // setsid daemon in process-group mode) came back to pidring: kill them; then let the
    // relays pass on the last bytes (bounded: a stalled reader must not keep pidring).
    if let Some(t) = &run.terminal {
        t.take_back_from(main_pid);
    }
    let orphans = sweep::kill_remaining_children(SWEEP_LIMIT, &entry.children);
    if orphans > 0 {
        tracing::info!(
            orphans,
            "killed descendants that had left the task's containment"
        );
    }
    let flush_limit = if run.terminations > 0 || run.timed_out {
        cfg.grace
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    } else {
        Duration::from_secs(60)
    };
    run.wait_relays(&relays, &signals, &wake, flush_limit);
    pool.shutdown();
    let totals = relays.finish();
    run.finish(report, orphans, totals)
}

/// `Pool::spawn` failed: the personality's message and status.
fn spawn_failed(cfg: &Config, voice: &Voice, e: &SpawnError, report: &mut Report) -> Finish {
    let program = cfg.program_shown();
    let errno = spawn_errno(e);
    let why = errno.map(strerror).unwrap_or_else(|| e.to_string());
    let (msg, code) = match cfg.personality {
        Personality::Run => (
            format!("cannot run '{program}': {e}"),
            exit::from_spawn_error(e),
        ),
        Personality::Timeout => (
            format!(
                "failed to run command {}: {why}",
                super::config::quote(&program)
            ),
            match errno {
                Some(libc::ENOENT) => exit::NOT_FOUND,
                Some(_) => exit::CANNOT_EXECUTE,
                None => exit::PIDRING_FAILED,
            },
        ),
        Personality::Tini => (
            format!("exec {program} failed: {why}"),
            match errno {
                Some(libc::ENOENT) => exit::NOT_FOUND,
                Some(libc::EACCES) => exit::CANNOT_EXECUTE,
                _ => 1,
            },
        ),
    };
    voice.error(&msg);
    report.reason = "spawn_failed";
    report.error = Some(msg);
    Finish::code(code)
}

fn spawn_errno(e: &SpawnError) -> Option<i32> {
    match e {
        SpawnError::NotFound(_) => Some(libc::ENOENT),
        SpawnError::PermissionDenied(_) => Some(libc::EACCES),
        SpawnError::NotExecutable(_) => Some(libc::ENOEXEC),
        SpawnError::TooManyFiles => Some(libc::EMFILE),
        SpawnError::TooManyProcesses => Some(libc::EAGAIN),
        SpawnError::Io(io) => io.raw_os_error(),
        _ => None,
    }
}

/// The C library's text for `errno`, without Rust's " (os error N)".
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The state of one supervision while PROGRAM runs.
struct Running<'a> {
    cfg: &'a Config,
    voice: &'a Voice,
    policy: Policy,
    entry: &'a Entry,
    handle: &'a TaskHandle,
    main_pid: i32,
    /// The main process's pidfd, for signals passed on as themselves (`None` if it ended
    /// before pidring could open it).
    pidfd: Option<OwnedFd>,
    terminal: Option<Terminal>,
    events: &'a Receiver<Event>,
    started: Instant,
    /// The timeout, while the main process runs.
    timeout_at: Option<Instant>,
    /// SIGKILL to the tree (`timeout -k`, or `pidring run -s SIG` after `--grace`).
    kill_at: Option<Instant>,
    /// GNU timeout's `term_signal`: the signal the (next) timeout sends; SIGKILL once the
    /// kill-after timer is armed.
    term_signal: i32,
    /// GNU timeout's `kill_after`: armed by the first signal passed on, then cleared.
    kill_after: Option<Duration>,
    timed_out: bool,
    terminations: u32,
    received_signal: Option<i32>,
    main_status: Option<ExitStatus>,
    outcome: Option<Outcome>,
    own_pid: i32,
}

impl Running<'_> {
    fn event_loop(&mut self, signals: &SignalFd, wake: &Wake) {
        while self.outcome.is_none() {
            let now = Instant::now();
            let next = [self.timeout_at, self.kill_at].into_iter().flatten().min();
            let wait = next.map(|t| {
                t.saturating_duration_since(now)
                    .min(Duration::from_secs(3600))
            });
            sys::poll_readable(&[signals.fd(), wake.fd()], wait);
            while let Some(info) = signals.read() {
                self.on_signal(info);
            }
            wake.drain();
            if !self.drain_events() {
                break;
            }
            let now = Instant::now();
            if self.timeout_at.is_some_and(|t| now >= t) {
                self.timeout_at = None;
                tracing::info!("timeout");
                self.on_timeout();
            }
            if self.kill_at.is_some_and(|t| now >= t) {
                self.kill_at = None;
                self.kill_now();
            }
        }
    }

    /// Takes the pool's events; false if the pool stopped before the task ended.
    fn drain_events(&mut self) -> bool {
        loop {
            match self.events.try_recv() {
                Ok(Event::Exited { task, status }) if task == self.handle.id() => {
                    self.on_main_exit(status);
                }
                Ok(Event::Done { task, outcome }) if task == self.handle.id() => {
                    tracing::debug!(?outcome, "task done");
                    if self.main_status.is_none() {
                        self.on_main_exit(outcome.status);
                    }
                    self.outcome = Some(outcome);
                }
                Ok(_) => {}
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn on_main_exit(&mut self, status: ExitStatus) {
        tracing::info!(?status, "PROGRAM exited");
        self.main_status = Some(status);
        // GNU timeout stops at its child's exit: the timeout and the kill timer cover the
        // main process only; the rest of the tree is the drain's business.
        self.timeout_at = None;
        self.kill_at = None;
        if let Some(t) = &self.terminal {
            t.take_back_from(self.main_pid);
        }
        match status {
            ExitStatus::Code(c) => self.voice.tini(
                2,
                &format!("Main child exited normally (with status '{c}')"),
            ),
            ExitStatus::Signal(s) => self.voice.tini(
                2,
                &format!(
                    "Main child exited with signal (with signal '{}')",
                    signals::describe(s)
                ),
            ),
            ExitStatus::Unknown => {}
        }
    }

    fn main_running(&self) -> bool {
        self.main_status.is_none()
    }

    fn on_signal(&mut self, info: SignalInfo) {
        let sig = info.signo;
        // pidring's own write to a closed pipe or past RLIMIT_FSIZE: the write failed with
        // EPIPE/EFBIG and is handled there; the signal is not someone's request.
        if (sig == libc::SIGPIPE || sig == libc::SIGXFSZ)
            && info.pid == self.own_pid
            && info.code == libc::SI_USER
        {
            return;
        }
        if self.entry.ignored.contains(sig) && !self.policy.handles_ignored(sig) {
            tracing::debug!(sig, "signal ignored on entry: left ignored");
            return;
        }
        let action = self.policy.action(sig);
        tracing::debug!(sig, ?action, "signal");
        match action {
            Action::Terminate => self.terminate(sig),
            Action::TimeoutNow => self.on_timeout(),
            Action::ForwardMain => self.pass_on(sig, false),
            Action::ForwardGroup => self.pass_on(sig, true),
            Action::Stop => self.stop_tree_and_self(),
            Action::Continue => self.continue_tree(),
            Action::Child => self.on_child(info),
            Action::Ignore => {}
        }
    }

    /// `pidring run`'s terminating signals: SIGTERM to the whole tree, SIGKILL after the
    /// grace period; a second one (but SIGHUP) kills at once.
    fn terminate(&mut self, sig: i32) {
        self.terminations += 1;
        self.received_signal.get_or_insert(sig);
        if self.terminations == 1 {
            tracing::info!(sig, "terminating the tree");
            log_control(self.handle.terminate());
        } else if sig != libc::SIGHUP {
            tracing::info!(sig, "second signal: killing the tree");
            log_control(self.handle.kill());
        }
    }

    /// The timeout fired, or SIGALRM came (GNU timeout's `cleanup(SIGALRM)`).
    fn on_timeout(&mut self) {
        if !self.main_running() {
            return;
        }
        self.timed_out = true;
        let sig = self.term_signal;
        match self.cfg.personality {
            Personality::Run => {
                if sig == libc::SIGTERM {
                    // The pool's own termination: every process of the cgroup, SIGKILL after
                    // the grace period.
                    log_control(self.handle.terminate());
                } else if sig == libc::SIGKILL {
                    log_control(self.handle.kill());
                } else {
                    self.signal_group(sig);
                    self.continue_group(sig);
                    if self.kill_at.is_none() {
                        self.kill_at = Instant::now().checked_add(self.cfg.grace);
                    }
                }
            }
            Personality::Timeout => self.gnu_cleanup(sig),
            // tini has no timeout; SIGALRM is passed on (see Policy).
            Personality::Tini => self.pass_on(libc::SIGALRM, self.cfg.to_group),
        }
    }

    /// GNU timeout's `cleanup`: `sig` to the child and (without `--foreground`) its group,
    /// SIGCONT after it, and the kill-after timer armed by the first call.
    fn gnu_cleanup(&mut self, sig: i32) {
        if let Some(after) = self.kill_after.take() {
            self.term_signal = libc::SIGKILL;
            self.kill_at = Instant::now().checked_add(after);
        }
        self.voice.sending(sig, &self.cfg.program_shown());
        if sig == libc::SIGKILL {
            // The whole tree, cgroup included.
            log_control(self.handle.kill());
            return;
        }
        self.signal_main(sig);
        if !self.cfg.main_only {
            self.signal_group(sig);
            self.continue_group(sig);
        }
    }

    /// The kill timer: SIGKILL to the whole tree.
    fn kill_now(&mut self) {
        if !self.main_running() {
            return;
        }
        match self.cfg.personality {
            Personality::Timeout => {
                self.timed_out = true;
                self.gnu_cleanup(libc::SIGKILL);
            }
            _ => {
                tracing::info!("grace period over: killing the tree");
                log_control(self.handle.kill());
            }
        }
    }

    /// A signal passed on as itself.
    fn pass_on(&mut self, sig: i32, group: bool) {
        match self.cfg.personality {
            Personality::Timeout => {
                if !self.main_running() {
                    return;
                }
                self.gnu_cleanup(sig);
            }
            Personality::Tini => {
                self.voice
                    .tini(3, &format!("Passing signal: '{}'", signals::describe(sig)));
                let sent = if group {
                    self.signal_group(sig)
                } else {
                    self.signal_main(sig)
                };
                if !sent {
                    self.voice.tini(1, "Child was dead when forwarding signal");
                }
            }
            Personality::Run => {
                tracing::debug!(sig, "forwarding");
                if group {
                    self.signal_group(sig);
                } else {
                    self.signal_main(sig);
                }
            }
        }
    }

    /// `sig` to the main process through its pidfd; false if it is gone.
    fn signal_main(&self, sig: i32) -> bool {
        match &self.pidfd {
            Some(fd) => sys::pidfd_send(fd.as_fd(), sig, false).is_ok(),
            None => false,
        }
    }

    /// `sig` to the main process's process group (the tree, but for processes that left the
    /// group); false if nothing was left to signal. Where the kernel lacks group signals
    /// through a pidfd (before Linux 6.9), the main process alone gets it.
    fn signal_group(&self, sig: i32) -> bool {
        let Some(fd) = &self.pidfd else { return false };
        match sys::pidfd_send(fd.as_fd(), sig, true) {
            Ok(()) => true,
            Err(libc::EINVAL) => sys::pidfd_send(fd.as_fd(), sig, false).is_ok(),
            Err(_) => false,
        }
    }

    /// GNU timeout's SIGCONT after a signal, so that a stopped process gets it.
    fn continue_group(&self, sig: i32) {
        if sig != libc::SIGKILL && sig != libc::SIGCONT {
            self.signal_group(libc::SIGCONT);
        }
    }

    /// `^Z` while pidring's group has the terminal (PROGRAM has its own session or is in
    /// the background): stop PROGRAM's tree, then pidring.
    fn stop_tree_and_self(&mut self) {
        if self.main_running() {
            self.signal_group(libc::SIGSTOP);
        }
        if let Some(t) = &self.terminal {
            t.take_back_from(self.main_pid);
        }
        tracing::debug!("stopping");
        sys::stop_self();
    }

    /// pidring was continued: PROGRAM gets the terminal back if pidring has it, and its
    /// tree is continued.
    fn continue_tree(&mut self) {
        if !self.main_running() {
            return;
        }
        if let Some(t) = &self.terminal {
            t.give_to(self.main_pid);
        }
        self.signal_group(libc::SIGCONT);
    }

    /// SIGCHLD: reap orphans (pidring is their subreaper, or PID 1); when the main process
    /// was stopped by the terminal, stop pidring too (job control).
    fn on_child(&mut self, info: SignalInfo) {
        if self.cfg.personality == Personality::Tini {
            self.voice.tini(3, "Received SIGCHLD");
        }
        // The main process's own exit is the pool's to reap (and the pool then reaps the
        // orphans it may have left): nothing to do here for that one.
        let main_ended = info.pid == self.main_pid
            && matches!(
                info.code,
                libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED
            );
        let reaped = if main_ended {
            Vec::new()
        } else {
            sweep::reap_orphans(self.main_pid)
        };
        for pid in reaped {
            self.voice
                .tini(3, &format!("Reaped child with pid: '{pid}'"));
            if self.cfg.warn_on_reap {
                self.voice
                    .tini(1, &format!("Reaped zombie process with pid={pid}"));
            }
        }
        let stopped_by_terminal = info.code == libc::CLD_STOPPED
            && info.pid == self.main_pid
            && matches!(info.status, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
        if stopped_by_terminal && self.cfg.personality != Personality::Tini {
            tracing::debug!(signal = info.status, "PROGRAM stopped: stopping too");
            if let Some(t) = &self.terminal {
                t.take_back_from(self.main_pid);
            }
            sys::stop_self();
        }
    }

    /// After the task is done: waits (at most `limit`) for the relays to pass on the last
    /// bytes; a second terminating signal cuts it short.
    fn wait_relays(&mut self, relays: &Relays, signals: &SignalFd, wake: &Wake, limit: Duration) {
        if relays.is_empty() {
            return;
        }
        let deadline = Instant::now() + limit;
        while !relays.all_done() {
            let now = Instant::now();
            if now >= deadline {
                tracing::info!("output not written in time: exiting without it");
                return;
            }
            sys::poll_readable(&[signals.fd(), wake.fd()], Some(deadline - now));
            wake.drain();
            while let Some(info) = signals.read() {
                let action = self.policy.action(info.signo);
                if action == Action::Terminate && !self.entry.ignored.contains(info.signo) {
                    self.received_signal.get_or_insert(info.signo);
                    tracing::info!("signal while writing the last output: exiting without it");
                    return;
                }
                if action == Action::Child {
                    sweep::reap_orphans(self.main_pid);
                }
            }
        }
    }

    /// pidring's exit status (and the report) from the outcome.
    fn finish(&self, report: &mut Report, orphans: u64, totals: Totals) -> Finish {
        report.received_signal = self.received_signal;
        if let Some((read, dropped)) = totals.stdout {
            report.stdout_bytes = Some(read);
            report.stdout_dropped = Some(dropped);
        }
        if let Some((read, dropped)) = totals.stderr {
            report.stderr_bytes = Some(read);
            report.stderr_dropped = Some(dropped);
        }
        let Some(outcome) = &self.outcome else {
            let msg = "the supervisor stopped before PROGRAM ended".to_string();
            self.voice.error(&msg);
            report.error = Some(msg);
            report.descendants_killed = orphans;
            report.duration_ms = ms(self.started.elapsed());
            return Finish::code(exit::failure_code(self.cfg.personality));
        };
        let status = outcome.status;
        report.reason = if self.timed_out {
            "timed_out"
        } else if self.received_signal.is_some() && outcome.reason == Reason::Terminated {
            "terminated"
        } else {
            exit::reason_name(outcome.reason)
        };
        report.signal = match status {
            ExitStatus::Signal(s) => Some(s),
            _ => None,
        };
        report.status_code = match status {
            ExitStatus::Code(c) => Some(c),
            _ => None,
        };
        report.timed_out = self.timed_out;
        report.duration_ms = ms(outcome.duration);
        report.descendants_killed = outcome.descendants_killed + orphans;
        report.tree_signalled = outcome.tree_signalled || orphans > 0 || self.timed_out;
        let finish = match self.cfg.personality {
            Personality::Run => self.finish_run(outcome, report),
            Personality::Timeout => self.finish_timeout(status),
            Personality::Tini => self.finish_tini(status),
        };
        tracing::info!(reason = ?outcome.reason, ?status, code = finish.code, "done");
        finish
    }

    fn finish_run(&self, outcome: &Outcome, report: &mut Report) -> Finish {
        let reason = if self.timed_out {
            Reason::TimedOut
        } else {
            outcome.reason
        };
        let code = exit::from_outcome(reason, outcome.status, self.cfg.preserve_status);
        match outcome.reason {
            Reason::StatusUnknown => {
                let msg = "PROGRAM's exit status was lost (reaped by someone else)".to_string();
                self.voice.error(&msg);
                report.error = Some(msg);
            }
            Reason::SpawnFailed(errno) => {
                let msg = format!(
                    "cannot run '{}': {}",
                    self.cfg.program_shown(),
                    strerror(errno)
                );
                self.voice.error(&msg);
                report.error = Some(msg);
            }
            _ => {}
        }
        Finish::code(code)
    }

    /// GNU timeout's exit: 124 on timeout (unless `--preserve-status`); PROGRAM's status;
    /// when PROGRAM died of a signal (and no timeout), pidring dies of the same signal, core
    /// dumps off; 137 when the timeout ended in SIGKILL (GNU timeout is itself killed by
    /// its `kill(0, SIGKILL)` then, or says 137 with `--foreground`).
    fn finish_timeout(&self, status: ExitStatus) -> Finish {
        let mut preserve = self.cfg.preserve_status;
        let mut die_of = None;
        let code = match status {
            ExitStatus::Code(c) => (c & 0xff) as u8,
            ExitStatus::Signal(sig) => {
                if !self.timed_out {
                    die_of = Some(sig);
                }
                if self.timed_out && sig == libc::SIGKILL {
                    preserve = true;
                    if !self.cfg.main_only {
                        die_of = Some(libc::SIGKILL);
                    }
                }
                exit::from_status(status).unwrap_or(exit::PIDRING_FAILED)
            }
            ExitStatus::Unknown => exit::PIDRING_FAILED,
        };
        if self.timed_out && !preserve {
            return Finish::code(exit::TIMED_OUT);
        }
        Finish { code, die_of }
    }

    /// tini's exit: PROGRAM's status (128 + N for signal N), 0 for a status given with `-e`.
    fn finish_tini(&self, status: ExitStatus) -> Finish {
        let code = exit::from_status(status).unwrap_or(1);
        if self.cfg.remapped_to_zero(code) {
            Finish::code(0)
        } else {
            Finish::code(code)
        }
    }
}

fn log_control(r: Result<(), pidring::ControlError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "request to the task failed");
    }
}
