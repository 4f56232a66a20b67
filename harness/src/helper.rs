//! `pidring helper STEP...`: the test helper that children run (hidden from `--help`).
//!
//! The harness, the bench and every test start it as the supervised program. It starts fast:
//! `main` recognises `argv[1] == "helper"` before clap, tracing or any runtime is set up, and
//! this module uses raw `write(2)` (nothing is buffered, so `exit=` or a signal loses nothing
//! already written, and a `fork` never duplicates pending output).
//!
//! All steps are parsed and checked first (including the nested steps of `spawn=` and
//! `daemon=`); a bad step prints one line on stderr and exits with status 2 before anything
//! runs. Then the steps run in order, each one argv word:
//!
//! | step | effect |
//! |---|---|
//! | `out=N` | write N pattern bytes to stdout (byte i is `b'a' + i % 26`) |
//! | `err=N` | write N pattern bytes to stderr |
//! | `lines=N` | write N lines `line <i>\n` to stdout, i from 0 to N-1 |
//! | `chan=FD:N` | write N pattern bytes to fd FD |
//! | `sleep=MS` | sleep MS milliseconds |
//! | `ignore-term` | SIGTERM → `SIG_IGN` (inherited by later `spawn=`/`forktree=` processes) |
//! | `exit=CODE` | exit at once with CODE (0..=255) |
//! | `raise=SIG` | restore SIG's default disposition, unblock it and raise it (`15`, `TERM` or `SIGTERM`); if the process survives (a signal whose default is to ignore), the next step runs |
//! | `setsid` | `setsid()`; an error (already a group leader) is ignored |
//! | `pidfile=PATH` | append `<pid>\n` to PATH (`O_APPEND`, one write) |
//! | `monotonic` | write `CLOCK_MONOTONIC` in nanoseconds, decimal, and `\n` to stdout |
//! | `spawn=STEPS` | start `pidring helper` with STEPS split on `;` as its arguments, inheriting stdio (so it holds the pipes), not waited for |
//! | `daemon=STEPS` | fork; that child `setsid()`s and forks again and exits; the grandchild reopens fds 0, 1, 2 on `/dev/null` and runs STEPS (a daemon that escapes the process group and the session) |
//! | `forktree=N` | fork N extra processes (no exec) as a tree, each node forking up to 4 children; each records its pid in the last `pidfile=` given before this step, then sleeps forever; the original continues once all N have recorded their pid |
//! | `wait-lines=PATH:N` | wait until PATH holds at least N lines (e.g. pids of other helpers), polling every millisecond |
//! | `ppid-loop=PATH:MS` | forever: write this process's ppid and `\n` to PATH (replaced atomically by rename) every MS ms |
//! | `frame=CH:N` | send one frame of N pattern bytes on framed channel CH (`pidring::child`, from `PIDRING_CHANNEL_FDS`) |
//! | `partial-frame=CH:N:K` | on channel CH, a header announcing N bytes followed by only K of them |
//! | `close-chan=CH` | close framed channel CH |
//! | `reqrep=CH:ROUNDS:SIZE` | ROUNDS request/reply round trips on channel CH, then one last request: request `seq` is SIZE bytes (at least 16): `seq` and the previous round trip in ns (u64 big-endian each, 0 for the first), then the pattern from byte `seq % 26`; each reply must be the request itself, byte for byte (else exit 4) |
//!
//! After the last step the helper exits 0. Like a C program (and unlike a Rust one), it runs
//! with SIGPIPE at its default disposition, so writing to a pipe without a reader kills it
//! with SIGPIPE; any other write error ends it with status 3. It never panics.
//!
//! Example: `pidring helper out=1000 spawn='pidfile=/tmp/p;sleep=60000' exit=3` writes 1000
//! bytes, starts a grandchild that records its pid and holds stdout for a minute, and exits 3.

use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

/// One parsed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Out(u64),
    Err(u64),
    Lines(u64),
    Chan(i32, u64),
    Sleep(u64),
    IgnoreTerm,
    Exit(i32),
    Raise(i32),
    Setsid,
    Pidfile(CString),
    Monotonic,
    Spawn(Vec<OsString>),
    Daemon(Vec<Step>),
    ForkTree(u64),
    PpidLoop(CString, u64),
    WaitLines(std::path::PathBuf, u64),
    Frame(u8, u64),
    PartialFrame(u8, u64, u64),
    CloseChan(u8),
    Reqrep(u8, u64, u64),
}

/// Entry point from `main`: `args` are the words after `helper`. Never returns.
pub fn main(args: Vec<OsString>) -> ! {
    // The Rust runtime ignores SIGPIPE; the programs the helper stands in for do not.
    raw::default_signal(libc::SIGPIPE);
    let steps = match parse_steps(&args) {
        Ok(steps) => steps,
        Err(msg) => {
            let line = format!("pidring helper: {msg}\n");
            let _ = write_all(2, line.as_bytes());
            exit_now(2);
        }
    };
    run_steps(&steps);
    exit_now(0);
}

/// Parses every step word (and the nested words of `spawn=`/`daemon=`).
pub fn parse_steps(args: &[OsString]) -> Result<Vec<Step>, String> {
    let mut steps = Vec::with_capacity(args.len());
    let mut pidfile: Option<CString> = None;
    for arg in args {
        let step = parse_step(arg.as_bytes(), &mut pidfile)?;
        steps.push(step);
    }
    Ok(steps)
}

fn parse_step<'w>(word: &'w [u8], pidfile: &mut Option<CString>) -> Result<Step, String> {
    let shown = String::from_utf8_lossy(word).into_owned();
    let bad = |why: &str| format!("bad step '{shown}': {why}");
    let (key, value) = match word.iter().position(|&b| b == b'=') {
        Some(i) => (&word[..i], Some(&word[i + 1..])),
        None => (word, None),
    };
    let need = |v: Option<&'w [u8]>| -> Result<&'w [u8], String> {
        v.ok_or_else(|| bad("missing '=VALUE'"))
    };
    let num = |v: &[u8]| -> Result<u64, String> {
        std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("expected a non-negative integer"))
    };
    let path = |v: &[u8]| -> Result<CString, String> {
        if v.is_empty() {
            return Err(bad("empty path"));
        }
        CString::new(v.to_vec()).map_err(|_| bad("path contains a NUL byte"))
    };
    let no_value = |step: Step| {
        if value.is_some() {
            Err(bad("takes no value"))
        } else {
            Ok(step)
        }
    };
    match key {
        b"out" => Ok(Step::Out(num(need(value)?)?)),
        b"err" => Ok(Step::Err(num(need(value)?)?)),
        b"lines" => Ok(Step::Lines(num(need(value)?)?)),
        b"chan" => {
            let v = need(value)?;
            let colon = v
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| bad("expected FD:N"))?;
            let fd = num(&v[..colon])?;
            let fd = i32::try_from(fd).map_err(|_| bad("fd out of range"))?;
            Ok(Step::Chan(fd, num(&v[colon + 1..])?))
        }
        b"frame" | b"partial-frame" | b"close-chan" | b"reqrep" => {
            let v = need(value)?;
            let parts: Vec<u64> = v
                .split(|&b| b == b':')
                .map(&num)
                .collect::<Result<_, _>>()?;
            let ch = |i: usize| -> Result<u8, String> {
                parts
                    .get(i)
                    .and_then(|&c| u8::try_from(c).ok())
                    .ok_or_else(|| bad("channel must be 0..=255"))
            };
            let arg = |i: usize| parts.get(i).copied().ok_or_else(|| bad("missing a field"));
            match (key, parts.len()) {
                (b"frame", 2) => Ok(Step::Frame(ch(0)?, arg(1)?)),
                (b"partial-frame", 3) => Ok(Step::PartialFrame(ch(0)?, arg(1)?, arg(2)?)),
                (b"close-chan", 1) => Ok(Step::CloseChan(ch(0)?)),
                (b"reqrep", 3) if arg(2)? >= 16 => Ok(Step::Reqrep(ch(0)?, arg(1)?, arg(2)?)),
                _ => Err(bad(
                    "expected CH:N, CH:N:K, CH or CH:ROUNDS:SIZE (SIZE >= 16)",
                )),
            }
        }
        b"sleep" => Ok(Step::Sleep(num(need(value)?)?)),
        b"ignore-term" => no_value(Step::IgnoreTerm),
        b"exit" => {
            let code = num(need(value)?)?;
            if code > 255 {
                return Err(bad("exit code must be 0..=255"));
            }
            Ok(Step::Exit(code as i32))
        }
        b"raise" => {
            let v = need(value)?;
            parse_signal(v)
                .map(Step::Raise)
                .ok_or_else(|| bad("unknown signal"))
        }
        b"setsid" => no_value(Step::Setsid),
        b"pidfile" => {
            let p = path(need(value)?)?;
            *pidfile = Some(p.clone());
            Ok(Step::Pidfile(p))
        }
        b"monotonic" => no_value(Step::Monotonic),
        b"spawn" | b"daemon" => {
            let v = need(value)?;
            let words: Vec<OsString> = v
                .split(|&b| b == b';')
                .filter(|w| !w.is_empty())
                .map(|w| OsString::from(std::ffi::OsStr::from_bytes(w)))
                .collect();
            // Check the nested steps now: the child's complaint would go unseen.
            let nested = parse_steps(&words).map_err(|e| bad(&format!("in nested steps: {e}")))?;
            if key == b"spawn" {
                Ok(Step::Spawn(words))
            } else {
                Ok(Step::Daemon(nested))
            }
        }
        b"forktree" => Ok(Step::ForkTree(num(need(value)?)?.min(1 << 20))),
        b"wait-lines" => {
            let v = need(value)?;
            let colon = v
                .iter()
                .rposition(|&b| b == b':')
                .ok_or_else(|| bad("expected PATH:N"))?;
            let p = path(&v[..colon])?;
            let p = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(p.as_bytes()));
            Ok(Step::WaitLines(p, num(&v[colon + 1..])?))
        }
        b"ppid-loop" => {
            let v = need(value)?;
            let colon = v
                .iter()
                .rposition(|&b| b == b':')
                .ok_or_else(|| bad("expected PATH:MS"))?;
            Ok(Step::PpidLoop(path(&v[..colon])?, num(&v[colon + 1..])?))
        }
        _ => Err(bad("unknown step")),
    }
}

/// `15`, `TERM` or `SIGTERM` (case-insensitive names).
pub fn parse_signal(v: &[u8]) -> Option<i32> {
    let s = std::str::from_utf8(v).ok()?;
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    };
    Some(n)
}

fn run_steps(steps: &[Step]) {
    let mut pidfile: Option<&CString> = None;
    let mut channels: Option<Vec<Option<pidring::child::Channel>>> = None;
    for step in steps {
        match step {
            Step::Frame(ch, n) => {
                let c = channel(&mut channels, *ch);
                check_io(c.send(&pattern_bytes(0, *n as usize)));
            }
            Step::PartialFrame(ch, n, k) => {
                let c = channel(&mut channels, *ch);
                let mut bytes = (*n as u32).to_be_bytes().to_vec();
                bytes.extend(pattern_bytes(0, *k as usize));
                check_write(write_all(c.as_raw_fd(), &bytes));
            }
            Step::CloseChan(ch) => {
                channel(&mut channels, *ch);
                if let Some(slot) = channels.as_mut().and_then(|c| c.get_mut(usize::from(*ch))) {
                    drop(slot.take());
                }
            }
            Step::Reqrep(ch, rounds, size) => {
                reqrep(channel(&mut channels, *ch), *rounds, *size as usize)
            }
            Step::Out(n) => write_pattern_or_exit(1, *n),
            Step::Err(n) => write_pattern_or_exit(2, *n),
            Step::Chan(fd, n) => write_pattern_or_exit(*fd, *n),
            Step::Lines(n) => write_lines(*n),
            Step::Sleep(ms) => sleep_ms(*ms),
            Step::IgnoreTerm => raw::ignore_signal(libc::SIGTERM),
            Step::Exit(code) => exit_now(*code),
            Step::Raise(sig) => raw::raise_unblocked(*sig),
            Step::Setsid => raw::setsid(),
            Step::Pidfile(path) => {
                pidfile = Some(path);
                record_pid(path);
            }
            Step::Monotonic => {
                let ns = raw::monotonic_ns();
                let line = format!("{ns}\n");
                check_write(write_all(1, line.as_bytes()));
            }
            Step::Spawn(words) => spawn_helper(words),
            Step::Daemon(nested) => daemon(nested),
            Step::ForkTree(n) => fork_tree(*n, pidfile),
            Step::PpidLoop(path, ms) => ppid_loop(path, *ms),
            Step::WaitLines(path, n) => {
                while (std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
                    as u64)
                    < *n
                {
                    sleep_ms(1);
                }
            }
        }
    }
}

/// Framed channel `ch` (the channels are taken from the environment at the first use).
fn channel(
    channels: &mut Option<Vec<Option<pidring::child::Channel>>>,
    ch: u8,
) -> &pidring::child::Channel {
    let list = channels.get_or_insert_with(|| match pidring::child::channels() {
        Ok(list) => list.into_iter().map(Some).collect(),
        Err(e) => fail(&format!("channels: {e}"), 3),
    });
    match list.get(usize::from(ch)) {
        Some(Some(c)) => c,
        _ => fail(&format!("no framed channel {ch}"), 3),
    }
}

/// `n` pattern bytes starting at byte `from` of the pattern.
fn pattern_bytes(from: usize, n: usize) -> Vec<u8> {
    (from..from + n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The `reqrep` step: see the module docs.
fn reqrep(c: &pidring::child::Channel, rounds: u64, size: usize) {
    let mut rtt = 0u64;
    for seq in 0..=rounds {
        let mut request = Vec::with_capacity(size);
        request.extend_from_slice(&seq.to_be_bytes());
        request.extend_from_slice(&rtt.to_be_bytes());
        request.extend(pattern_bytes((seq % 26) as usize, size - 16));
        let sent = raw::monotonic_ns();
        let reply = match c.request(&request) {
            Ok(reply) => reply,
            Err(e) => fail(&format!("reqrep round {seq}: {e}"), 3),
        };
        rtt = raw::monotonic_ns()
            .saturating_sub(sent)
            .min(u128::from(u64::MAX)) as u64;
        if reply != request {
            fail(
                &format!(
                    "reqrep round {seq}: the reply ({} bytes) is not the request ({size} bytes)",
                    reply.len()
                ),
                4,
            );
        }
    }
}

fn check_io(r: std::io::Result<()>) {
    if let Err(e) = r {
        fail(&format!("channel write failed: {e}"), 3);
    }
}

fn fail(msg: &str, code: i32) -> ! {
    let line = format!("pidring helper: {msg}\n");
    let _ = write_all(2, line.as_bytes());
    exit_now(code)
}

/// The pattern, a whole number of 26-byte periods long, so every chunk starts at 'a'.
fn pattern_chunk() -> Vec<u8> {
    (0..26 * 2520).map(|i| b'a' + (i % 26) as u8).collect()
}

fn write_pattern_or_exit(fd: i32, n: u64) {
    if n == 0 {
        return;
    }
    let chunk = pattern_chunk();
    let mut left = n;
    while left > 0 {
        let len = left.min(chunk.len() as u64) as usize;
        check_write(write_all(fd, &chunk[..len]));
        left -= len as u64;
    }
}

fn write_lines(n: u64) {
    let mut buf = Vec::with_capacity(1 << 16);
    for i in 0..n {
        buf.extend_from_slice(b"line ");
        buf.extend_from_slice(i.to_string().as_bytes());
        buf.push(b'\n');
        if buf.len() >= (1 << 16) - 32 {
            check_write(write_all(1, &buf));
            buf.clear();
        }
    }
    check_write(write_all(1, &buf));
}

fn check_write(r: Result<(), i32>) {
    if let Err(errno) = r {
        let line = format!(
            "pidring helper: write failed: {}\n",
            std::io::Error::from_raw_os_error(errno)
        );
        let _ = write_all(2, line.as_bytes());
        exit_now(3);
    }
}

/// `write(2)` until done, across partial writes and `EINTR`. Err(errno) otherwise.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        let n = match raw::write(fd, buf) {
            Ok(n) => n,
            Err(libc::EINTR) => continue,
            Err(errno) => return Err(errno),
        };
        if n == 0 {
            return Err(libc::EIO);
        }
        buf = &buf[n..];
    }
    Ok(())
}

fn sleep_ms(ms: u64) {
    // std's sleep restarts after EINTR with the remaining time.
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn exit_now(code: i32) -> ! {
    raw::exit_now(code)
}

fn record_pid(path: &CString) {
    let line = format!("{}\n", std::process::id());
    let fd = match raw::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND) {
        Ok(fd) => fd,
        Err(e) => {
            let msg = format!(
                "pidring helper: pidfile {}: {}\n",
                path.to_string_lossy(),
                e
            );
            let _ = write_all(2, msg.as_bytes());
            return;
        }
    };
    let _ = write_all(fd, line.as_bytes());
    raw::close(fd);
}

fn spawn_helper(words: &[OsString]) {
    use std::os::unix::process::CommandExt;
    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("pidring"));
    // /proc/self/exe works even when the binary was replaced on disk after we started.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0(arg0).arg("helper").args(words);
    match cmd.spawn() {
        Ok(child) => drop(child), // not waited for
        Err(e) => {
            let msg = format!("pidring helper: spawn failed: {e}\n");
            let _ = write_all(2, msg.as_bytes());
        }
    }
}

fn daemon(steps: &[Step]) {
    let intermediate = raw::fork(|| {
        // Intermediate: a new session, then the daemon itself, then leave.
        raw::setsid();
        raw::fork(|| {
            raw::stdio_to_dev_null();
            run_steps(steps);
            exit_now(0)
        });
        exit_now(0)
    });
    match intermediate {
        // Reap the intermediate process, which exits at once.
        Some(pid) => raw::wait_child(pid),
        None => {
            let _ = write_all(2, b"pidring helper: fork failed\n");
        }
    }
}

/// Forks `n` processes in a tree (fan-out up to 4). Returns in the original process after
/// every forked process has recorded its pid.
fn fork_tree(n: u64, pidfile: Option<&CString>) {
    if n == 0 {
        return;
    }
    let Some((rd, wr)) = raw::pipe_cloexec() else {
        let _ = write_all(2, b"pidring helper: pipe failed\n");
        return;
    };
    let started = fork_children(n, pidfile, rd, wr);
    raw::close(wr);
    // One byte per forked process, once its pid is recorded. EOF early means some died.
    let mut got = 0u64;
    let mut buf = [0u8; 256];
    while got < started {
        match raw::read(rd, &mut buf) {
            Ok(0) => break,
            Ok(r) => got += r as u64,
            Err(libc::EINTR) => continue,
            Err(_) => break,
        }
    }
    raw::close(rd);
}

/// Forks up to 4 children sharing `budget` processes between them (each child's own share
/// includes itself). Returns how many processes were forked in total (by this call's subtree,
/// as seen from the caller: the caller counts the children it forked plus their planned shares).
fn fork_children(budget: u64, pidfile: Option<&CString>, rd: i32, wr: i32) -> u64 {
    let k = budget.min(4);
    let mut forked = 0;
    for j in 0..k {
        // Share `budget` as evenly as possible between k subtrees.
        let share = budget / k + u64::from(j < budget % k);
        if raw::fork(|| tree_node(share - 1, pidfile, rd, wr)).is_none() {
            let _ = write_all(2, b"pidring helper: fork failed\n");
            break;
        }
        forked += share;
    }
    forked
}

fn tree_node(descendants: u64, pidfile: Option<&CString>, rd: i32, wr: i32) -> ! {
    raw::close(rd);
    if let Some(p) = pidfile {
        record_pid(p);
    }
    let _ = write_all(wr, b"x");
    if descendants > 0 {
        // Our children report on the same pipe; if a fork fails the original sees EOF early.
        fork_children(descendants, pidfile, -1, wr);
    }
    raw::close(wr);
    raw::pause_forever()
}

fn ppid_loop(path: &CString, ms: u64) -> ! {
    let mut tmp = path.as_bytes().to_vec();
    tmp.extend_from_slice(format!(".tmp.{}", std::process::id()).as_bytes());
    let tmp = match CString::new(tmp) {
        Ok(t) => t,
        Err(_) => exit_now(2),
    };
    loop {
        let line = format!("{}\n", raw::getppid());
        if let Ok(fd) = raw::open(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) {
            let _ = write_all(fd, line.as_bytes());
            raw::close(fd);
            raw::rename(&tmp, path);
        }
        sleep_ms(ms);
    }
}

/// The helper's raw system calls, behind safe functions. This module is the helper's only
/// `unsafe` (it stays inside this file, which the tests crate compiles on its own as well).
///
/// The helper is a single-threaded test program: `helper::main` is entered before any thread
/// exists (pidring's `main` dispatches to it before anything else; the tests'
/// `pidring-helper` binary does nothing else) and it never starts a thread. Several blocks
/// below rely on that; they say so.
///
/// File descriptors are plain integers here, as in the C programs the helper stands in for:
/// only fds the helper opened itself (and 0, 1, 2) are passed in; no `File`/`OwnedFd` owns
/// any of them. A stale or bad fd makes the call fail with `EBADF`, which touches no memory.
#[allow(unsafe_code)]
mod raw {
    use std::ffi::CStr;

    /// The errno of the last failed call, `EIO` if there is none.
    fn errno() -> i32 {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    }

    /// `signal(sig, SIG_DFL)`; an invalid `sig` is ignored (EINVAL).
    pub fn default_signal(sig: i32) {
        // SAFETY: installs no handler function, only the default disposition, so no code can
        // run asynchronously because of it; signal() reads no memory of ours.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }

    /// `signal(sig, SIG_IGN)`; an invalid `sig` is ignored (EINVAL).
    pub fn ignore_signal(sig: i32) {
        // SAFETY: as in `default_signal`: SIG_IGN runs no code of ours.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }

    /// Restores `sig`'s default disposition, unblocks it and raises it. Returns only if the
    /// process survives it (a signal whose default action is to ignore or stop/continue).
    pub fn raise_unblocked(sig: i32) {
        default_signal(sig);
        // SAFETY: sigset_t is a plain bit array, for which all-zero bytes are a valid value
        // (sigemptyset then initialises it properly).
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is ours, valid and writable; sigprocmask only reads it, and a null
        // old set means "do not report". Unblocking a signal whose disposition is the
        // default runs no handler. The process is single-threaded, so the mask that
        // sigprocmask changes is the whole process's. raise() then delivers `sig` to us.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
    }

    /// `setsid()`; an error (already a group leader) is ignored.
    pub fn setsid() {
        // SAFETY: no arguments, no memory; it only changes our session and process group.
        unsafe { libc::setsid() };
    }

    /// `getppid()`.
    pub fn getppid() -> i32 {
        // SAFETY: no arguments, no memory, cannot fail.
        unsafe { libc::getppid() }
    }

    /// `CLOCK_MONOTONIC` in nanoseconds.
    pub fn monotonic_ns() -> u128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is ours, valid and writable; clock_gettime only writes it.
        // CLOCK_MONOTONIC always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
    }

    /// One `write(2)`: how many bytes were written, or the errno.
    pub fn write(fd: i32, buf: &[u8]) -> Result<usize, i32> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call; write()
        // only reads it. See the module docs on fds.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| errno())
    }

    /// One `read(2)`: how many bytes were read (0 at EOF), or the errno.
    pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes and exclusively ours for the
        // whole call; read() writes at most that many bytes into it. See the module docs on
        // fds.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| errno())
    }

    /// `open(path, flags | O_CLOEXEC, 0644)`: the new fd, which the caller must `close`.
    pub fn open(path: &CStr, flags: i32) -> Result<i32, std::io::Error> {
        // SAFETY: `path` is a NUL-terminated C string valid for the call; open() only reads
        // it. The mode argument is read because `flags` may hold O_CREAT.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                flags | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    /// `close(fd)`; errors (e.g. `EBADF` for -1) are ignored.
    pub fn close(fd: i32) {
        // SAFETY: touches no memory. Callers pass fds they got from `open`/`pipe_cloexec`
        // and close each once; no Rust object owns them (see the module docs).
        unsafe { libc::close(fd) };
    }

    /// `rename(from, to)`; errors are ignored.
    pub fn rename(from: &CStr, to: &CStr) {
        // SAFETY: both are NUL-terminated C strings valid for the call; rename() only reads
        // them.
        unsafe { libc::rename(from.as_ptr(), to.as_ptr()) };
    }

    /// A close-on-exec pipe: (read end, write end).
    pub fn pipe_cloexec() -> Option<(i32, i32)> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is ours and has room for the two ints pipe2() writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return None;
        }
        Some((fds[0], fds[1]))
    }

    /// `_exit(code)`: ends the process at once, without running destructors or atexit
    /// handlers (there is nothing buffered to flush: the helper writes with raw write(2)).
    pub fn exit_now(code: i32) -> ! {
        // SAFETY: _exit never returns and touches no memory of ours; skipping destructors is
        // exactly what a forked child must do so that nothing of its parent runs twice.
        unsafe { libc::_exit(code) }
    }

    /// Sleeps until a signal ends the process.
    pub fn pause_forever() -> ! {
        loop {
            // SAFETY: no arguments, no memory; returns only when a handler ran (we install
            // none, so only after a signal that neither kills nor is ignored, e.g. SIGCONT).
            unsafe { libc::pause() };
        }
    }

    /// Waits for (and reaps) the child `pid`, retrying after `EINTR`; other errors end the
    /// wait.
    pub fn wait_child(pid: i32) {
        let mut status = 0;
        // SAFETY: `status` is ours, valid and writable; waitpid() only writes it.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
    }

    /// `fork()`. In the parent: `Some(child's pid)`, or `None` if the fork failed. In the
    /// child: runs `child`, which never returns (it ends with `_exit`, or never ends; its
    /// return type is the uninhabited `Infallible`, as `-> !` is not stable in bounds).
    pub fn fork(child: impl FnOnce() -> std::convert::Infallible) -> Option<i32> {
        // SAFETY: fork() duplicates the process; in Rust the danger is the child of a
        // multi-threaded process, which inherits locks held (and data being changed) by
        // threads that do not exist in it, and so may only make async-signal-safe calls
        // until it execs. The helper is single-threaded (module docs): the child is a whole,
        // consistent copy, so it may allocate, format and write like its parent, which it
        // does. It never comes back here: `child` diverges, ending in `_exit` (no destructor
        // of the parent's objects runs twice, no buffered output is flushed twice; the helper
        // buffers none) or in `pause_forever`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            child();
        }
        (pid > 0).then_some(pid)
    }

    /// Points fds 0, 1 and 2 at `/dev/null` (closes them if it cannot be opened): what a
    /// daemon does after its second fork.
    pub fn stdio_to_dev_null() {
        // SAFETY: the path is a static NUL-terminated string. fds 0..=2 are owned by no Rust
        // object of the helper (it writes them with raw write(2)), so replacing or closing
        // them leaves nobody with a dangling fd; `null` is ours and closed at most once (and
        // not if it is itself one of 0..=2, which it then stays).
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
                if null > 2 {
                    libc::close(null);
                }
            } else {
                for fd in 0..3 {
                    libc::close(fd);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<Vec<Step>, String> {
        let v: Vec<OsString> = words.iter().map(OsString::from).collect();
        parse_steps(&v)
    }

    #[test]
    fn parses_every_step() {
        let steps = p(&[
            "out=10",
            "err=0",
            "lines=3",
            "chan=5:7",
            "sleep=1",
            "ignore-term",
            "raise=TERM",
            "raise=sigkill",
            "raise=9",
            "setsid",
            "pidfile=/tmp/x",
            "monotonic",
            "spawn=out=1;;sleep=2;",
            "daemon=pidfile=/tmp/y;sleep=5",
            "forktree=5",
            "ppid-loop=/tmp/a:b:100",
            "wait-lines=/tmp/p:3",
            "exit=3",
        ])
        .unwrap();
        assert_eq!(steps[3], Step::Chan(5, 7));
        assert_eq!(steps[6], Step::Raise(15));
        assert_eq!(steps[7], Step::Raise(9));
        assert_eq!(
            steps[12],
            Step::Spawn(vec!["out=1".into(), "sleep=2".into()])
        );
        assert_eq!(
            steps[15],
            Step::PpidLoop(CString::new("/tmp/a:b").unwrap(), 100)
        );
        assert_eq!(steps[16], Step::WaitLines("/tmp/p".into(), 3));
        assert_eq!(steps[17], Step::Exit(3));
    }

    #[test]
    fn rejects_bad_steps() {
        for bad in [
            "",
            "out",
            "out=",
            "out=-1",
            "out=1x",
            "exit=256",
            "raise=FOO",
            "raise=0",
            "chan=1",
            "pidfile=",
            "ignore-term=1",
            "spawn=out=x",
            "daemon=nope",
            "sleep=99999999999999999999999",
            "bogus",
        ] {
            assert!(p(&[bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pattern_is_periodic() {
        let c = pattern_chunk();
        assert_eq!(c.len() % 26, 0);
        assert!(c
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8));
    }
}
