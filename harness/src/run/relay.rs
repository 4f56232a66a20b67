//! Relaying PROGRAM's stdout/stderr when pidring needs the bytes (their count in
//! `--report`): PROGRAM writes into a pipe of pidring's, a thread copies it to pidring's own
//! stdout/stderr.
//!
//! A relay must not change what PROGRAM observes, so:
//! - it is only used where PROGRAM would see a pipe or a socket anyway (never a terminal,
//!   a file or `/dev/null`: see [`plan`]);
//! - when pidring's reader goes away (EPIPE), the relay closes its end of PROGRAM's pipe:
//!   PROGRAM's next write meets the broken pipe itself (EPIPE, or SIGPIPE by its own
//!   disposition), as it would have without pidring;
//! - a slow reader slows PROGRAM down (the relay blocks, PROGRAM's pipe fills), nothing is
//!   buffered without bound and nothing is dropped while the reader reads;
//! - when stdout and stderr are the same pipe (`2>&1`), one relay carries both, so their
//!   interleaving is kept.
//!
//! PROGRAM gets the write end of the relay's pipe as its fd 1 (and/or 2) by inheritance:
//! pidring puts it on its own fd 1 just for the spawn ([`Relays::install`]) and puts its real
//! stdout back right after ([`Relays::started`]). No other thread writes to fd 1 or 2 then
//! (pidring's own log lines on fd 2 during that window would be relayed, not lost).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sys::{self, Wake};

/// How stdout and stderr reach PROGRAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StdioMode {
    /// Relayed when `--report` is given and the stream is a pipe or a socket; passed
    /// through otherwise.
    Auto,
    /// Always passed through: PROGRAM gets pidring's own stdout and stderr.
    Inherit,
    /// Relayed unless the stream is a terminal (a terminal is always passed through).
    Relay,
}

/// Which of fds 1 and 2 are relayed, and whether they share one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    pub stdout: bool,
    pub stderr: bool,
    /// stdout and stderr are the same pipe: one relay, its bytes counted as stdout.
    pub shared: bool,
}

/// Decides what to relay (see [`StdioMode`]).
pub fn plan(mode: StdioMode, report: bool) -> Plan {
    if mode == StdioMode::Inherit || (mode == StdioMode::Auto && !report) {
        return Plan::default();
    }
    let kinds = [sys::stdio_kind(1), sys::stdio_kind(2)];
    let wanted = |fd: i32| -> bool {
        let kind = kinds[fd as usize - 1];
        match mode {
            StdioMode::Inherit => false,
            StdioMode::Auto => report && kind.is_some_and(|k| k.pipe_or_socket),
            StdioMode::Relay => kind.is_some() && !sys::is_terminal(fd),
        }
    };
    let (stdout, stderr) = (wanted(1), wanted(2));
    let shared = stdout
        && stderr
        && matches!((kinds[0], kinds[1]), (Some(a), Some(b)) if a.dev_ino == b.dev_ino);
    Plan {
        stdout,
        stderr,
        shared,
    }
}

/// Bytes one relay read from PROGRAM and could not pass on.
#[derive(Debug, Default)]
pub struct Counters {
    pub read: AtomicU64,
    pub written: AtomicU64,
    pub done: AtomicBool,
}

/// One relay: PROGRAM's pipe for one or both of fds 1 and 2.
struct Relay {
    /// The fd of pidring's that PROGRAM's bytes go to (1, or 1 for the shared case).
    target: i32,
    /// PROGRAM's fds that get the pipe's write end.
    program_fds: Vec<i32>,
    read_end: Option<OwnedFd>,
    write_end: Option<OwnedFd>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

/// The relays of one run.
#[derive(Default)]
pub struct Relays {
    relays: Vec<Relay>,
    /// pidring's real fds 1 and 2 while the pipes stand in for them.
    saved: Vec<(i32, OwnedFd)>,
}

/// Bytes read and dropped per stream, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub stdout: Option<(u64, u64)>,
    pub stderr: Option<(u64, u64)>,
}

impl Relays {
    /// Makes the pipes of `plan` and puts their write ends on fds 1 and/or 2, for the spawn.
    pub fn install(plan: Plan) -> std::io::Result<Relays> {
        let mut relays = Relays::default();
        let mut groups: Vec<Vec<i32>> = Vec::new();
        if plan.shared {
            groups.push(vec![1, 2]);
        } else {
            if plan.stdout {
                groups.push(vec![1]);
            }
            if plan.stderr {
                groups.push(vec![2]);
            }
        }
        for fds in groups {
            let (read_end, write_end) = sys::relay_pipe()?;
            relays.relays.push(Relay {
                target: fds[0],
                program_fds: fds,
                read_end: Some(read_end),
                write_end: Some(write_end),
                counters: Arc::new(Counters::default()),
                thread: None,
            });
        }
        for relay in &relays.relays {
            for &fd in &relay.program_fds {
                relays.saved.push((fd, sys::save_stdio(fd)?));
            }
        }
        for relay in &relays.relays {
            if let Some(w) = &relay.write_end {
                for &fd in &relay.program_fds {
                    if let Err(e) = sys::restore_stdio(fd, w.as_fd()) {
                        relays.put_back();
                        return Err(e);
                    }
                }
            }
        }
        Ok(relays)
    }

    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// Puts pidring's real fds 1 and 2 back (after the spawn, or after a failed one).
    pub fn put_back(&mut self) {
        for (fd, saved) in self.saved.drain(..) {
            if let Err(e) = sys::restore_stdio(fd, saved.as_fd()) {
                tracing::error!(fd, error = %e, "cannot put back pidring's own stdio");
            }
        }
        for relay in &mut self.relays {
            relay.write_end = None;
        }
    }

    /// After the spawn: real fds back, and one thread per relay copying PROGRAM's bytes.
    /// `wake` is notified when a relay ends.
    pub fn started(&mut self, wake: &Arc<Wake>) {
        self.put_back();
        for relay in &mut self.relays {
            let Some(read_end) = relay.read_end.take() else {
                continue;
            };
            let counters = Arc::clone(&relay.counters);
            let target = relay.target;
            let wake = Arc::clone(wake);
            let spawned = std::thread::Builder::new()
                .name("pidring-relay".into())
                .stack_size(128 << 10)
                .spawn(move || copy(read_end, target, &counters, &wake));
            match spawned {
                Ok(t) => relay.thread = Some(t),
                Err(e) => {
                    // The read end went with the closure: PROGRAM's writes now fail with
                    // EPIPE, as if nobody read its output. Say so.
                    tracing::error!(error = %e, "cannot start a relay thread");
                    relay.counters.done.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Every relay reached the end of PROGRAM's output (or gave up on its reader).
    pub fn all_done(&self) -> bool {
        self.relays
            .iter()
            .all(|r| r.counters.done.load(Ordering::Acquire))
    }

    /// Joins the relays that finished; a relay blocked on a stalled reader is left behind
    /// (the process exits without it).
    pub fn finish(self) -> Totals {
        let mut totals = Totals::default();
        for mut relay in self.relays {
            if relay.counters.done.load(Ordering::Acquire) {
                if let Some(t) = relay.thread.take() {
                    let _ = t.join();
                }
            }
            let read = relay.counters.read.load(Ordering::Acquire);
            let written = relay.counters.written.load(Ordering::Acquire);
            let entry = Some((read, read.saturating_sub(written)));
            if relay.target == 1 {
                totals.stdout = entry;
                if relay.program_fds.contains(&2) {
                    totals.stderr = Some((0, 0));
                }
            } else {
                totals.stderr = entry;
            }
        }
        totals
    }
}

/// The relay thread: PROGRAM's pipe to pidring's fd `target`, until end of file, or until
/// pidring's reader goes away (then the pipe is closed under PROGRAM).
fn copy(read_end: OwnedFd, target: i32, counters: &Counters, wake: &Wake) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match sys::read_fd(read_end.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(errno) => {
                tracing::warn!(
                    target,
                    error = %std::io::Error::from_raw_os_error(errno),
                    "relay: cannot read PROGRAM's output"
                );
                break;
            }
        };
        counters.read.fetch_add(n as u64, Ordering::AcqRel);
        if let Err(errno) = write_all(target, &buf[..n], counters) {
            tracing::debug!(
                target,
                error = %std::io::Error::from_raw_os_error(errno),
                "relay: pidring's output is closed; closing PROGRAM's pipe"
            );
            break;
        }
    }
    drop(read_end);
    counters.done.store(true, Ordering::Release);
    wake.notify();
}

/// `write(2)` all of `buf` to fd 1 or 2, counting what was written.
fn write_all(fd: i32, mut buf: &[u8], counters: &Counters) -> Result<(), i32> {
    while !buf.is_empty() {
        let n = match sys::write_stdio(fd, buf) {
            Ok(n) => n,
            Err(libc::EINTR) => continue,
            // Someone set O_NONBLOCK on a description we share: wait until writable.
            Err(libc::EAGAIN) => {
                sys::wait_writable(fd, Duration::from_secs(1));
                continue;
            }
            Err(errno) => return Err(errno),
        };
        if n == 0 {
            return Err(libc::EIO);
        }
        counters.written.fetch_add(n as u64, Ordering::AcqRel);
        buf = &buf[n..];
    }
    Ok(())
}

/// pidring's own lines (errors, `--verbose`) on stderr: raw, unbuffered, errors ignored (a
/// closed or full stderr must not make pidring fail or panic).
pub fn write_stderr(bytes: &[u8]) {
    let mut buf = bytes;
    while !buf.is_empty() {
        match sys::write_stdio(2, buf) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(libc::EINTR) => continue,
            Err(libc::EAGAIN) => sys::wait_writable(2, Duration::from_millis(100)),
            Err(_) => return,
        }
    }
}

/// The same for stdout (tini prints its INFO lines there).
pub fn write_stdout(bytes: &[u8]) {
    let mut buf = bytes;
    while !buf.is_empty() {
        match sys::write_stdio(1, buf) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(libc::EINTR) => continue,
            Err(libc::EAGAIN) => sys::wait_writable(1, Duration::from_millis(100)),
            Err(_) => return,
        }
    }
}
