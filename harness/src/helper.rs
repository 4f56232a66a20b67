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
//!
//! After the last step the helper exits 0. Like a C program (and unlike a Rust one), it runs
//! with SIGPIPE at its default disposition, so writing to a pipe without a reader kills it
//! with SIGPIPE; any other write error ends it with status 3. It never panics.
//!
//! Example: `pidring helper out=1000 spawn='pidfile=/tmp/p;sleep=60000' exit=3` writes 1000
//! bytes, starts a grandchild that records its pid and holds stdout for a minute, and exits 3.

use std::ffi::{CString, OsString};
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
}

/// Entry point from `main`: `args` are the words after `helper`. Never returns.
pub fn main(args: Vec<OsString>) -> ! {
    // The Rust runtime ignores SIGPIPE; the programs the helper stands in for do not.
    // SAFETY: plain libc call, single-threaded.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
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
    for step in steps {
        match step {
            Step::Out(n) => write_pattern_or_exit(1, *n),
            Step::Err(n) => write_pattern_or_exit(2, *n),
            Step::Chan(fd, n) => write_pattern_or_exit(*fd, *n),
            Step::Lines(n) => write_lines(*n),
            Step::Sleep(ms) => sleep_ms(*ms),
            Step::IgnoreTerm => unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            },
            Step::Exit(code) => exit_now(*code),
            Step::Raise(sig) => unsafe {
                libc::signal(*sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, *sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(*sig);
            },
            Step::Setsid => unsafe {
                libc::setsid();
            },
            Step::Pidfile(path) => {
                pidfile = Some(path);
                record_pid(path);
            }
            Step::Monotonic => {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
                let ns = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
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
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if errno == libc::EINTR {
                continue;
            }
            return Err(errno);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

fn sleep_ms(ms: u64) {
    // std's sleep restarts after EINTR with the remaining time.
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn exit_now(code: i32) -> ! {
    unsafe { libc::_exit(code) }
}

fn record_pid(path: &CString) {
    let line = format!("{}\n", std::process::id());
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        let msg = format!(
            "pidring helper: pidfile {}: {}\n",
            path.to_string_lossy(),
            std::io::Error::last_os_error()
        );
        let _ = write_all(2, msg.as_bytes());
        return;
    }
    let _ = write_all(fd, line.as_bytes());
    unsafe { libc::close(fd) };
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
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            let _ = write_all(2, b"pidring helper: fork failed\n");
            return;
        }
        if pid > 0 {
            // Reap the intermediate process, which exits at once.
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            return;
        }
        // Intermediate: a new session, then the daemon itself, then leave.
        libc::setsid();
        let pid = libc::fork();
        if pid != 0 {
            libc::_exit(0);
        }
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
    run_steps(steps);
    exit_now(0);
}

/// Forks `n` processes in a tree (fan-out up to 4). Returns in the original process after
/// every forked process has recorded its pid.
fn fork_tree(n: u64, pidfile: Option<&CString>) {
    if n == 0 {
        return;
    }
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        let _ = write_all(2, b"pidring helper: pipe failed\n");
        return;
    }
    let (rd, wr) = (fds[0], fds[1]);
    let started = fork_children(n, pidfile, rd, wr);
    unsafe { libc::close(wr) };
    // One byte per forked process, once its pid is recorded. EOF early means some died.
    let mut got = 0u64;
    let mut buf = [0u8; 256];
    while got < started {
        let r = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if r == 0 {
            break;
        }
        got += r as u64;
    }
    unsafe { libc::close(rd) };
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
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let _ = write_all(2, b"pidring helper: fork failed\n");
            break;
        }
        if pid == 0 {
            tree_node(share - 1, pidfile, rd, wr);
        }
        forked += share;
    }
    forked
}

fn tree_node(descendants: u64, pidfile: Option<&CString>, rd: i32, wr: i32) -> ! {
    unsafe { libc::close(rd) };
    if let Some(p) = pidfile {
        record_pid(p);
    }
    let _ = write_all(wr, b"x");
    if descendants > 0 {
        // Our children report on the same pipe; if a fork fails the original sees EOF early.
        fork_children(descendants, pidfile, -1, wr);
    }
    unsafe { libc::close(wr) };
    loop {
        unsafe { libc::pause() };
    }
}

fn ppid_loop(path: &CString, ms: u64) -> ! {
    let mut tmp = path.as_bytes().to_vec();
    tmp.extend_from_slice(format!(".tmp.{}", std::process::id()).as_bytes());
    let tmp = match CString::new(tmp) {
        Ok(t) => t,
        Err(_) => exit_now(2),
    };
    loop {
        let line = format!("{}\n", unsafe { libc::getppid() });
        let fd = unsafe {
            libc::open(
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd >= 0 {
            let _ = write_all(fd, line.as_bytes());
            unsafe {
                libc::close(fd);
                libc::rename(tmp.as_ptr(), path.as_ptr());
            }
        }
        sleep_ms(ms);
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
