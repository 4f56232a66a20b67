//! The harness's system layer: every system call of `run` and `bench` that is not already a
//! safe call of std or rustix goes through here, as a safe function. This is the only module
//! of the crate allowed `unsafe` (besides the self-contained `raw` module of `helper.rs`);
//! each block says why it is sound. Signals to processes go through pidfds, never `kill(2)`
//! on a bare pid.

use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions, WaitStatus};

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the test helper's `monotonic` step prints.
/// (libc: rustix's `time` module is not enabled in this workspace.)
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec owned by this frame; clock_gettime only
    // writes it. CLOCK_MONOTONIC always exists on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU time of this process (all its threads; not its children), from
/// `getrusage(RUSAGE_SELF)`; `None` if the call fails. (libc: rustix has no getrusage.)
pub fn rusage_self_cpu() -> Option<Duration> {
    // SAFETY: rusage is a plain C struct of integers and timevals, for which all-zero bytes
    // are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage owned by this frame; getrusage only writes it.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// A broken-down local time (`localtime_r`): year with century, month 1..=12, day 1..=31.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    pub month: i32,
    pub day: i32,
    pub hour: i32,
    pub minute: i32,
    pub second: i32,
}

/// `unix_secs` in the local time zone. If `localtime_r` fails, the fields are those of an
/// all-zero `struct tm` (year 1900, month 1, day 0). (libc: rustix has no time zones.)
pub fn local_time(unix_secs: i64) -> LocalTime {
    let now = unix_secs as libc::time_t;
    // SAFETY: tm is a plain C struct of integers and one pointer (`tm_zone`), for which
    // all-zero bytes (a null pointer) are a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `now` and `tm` are valid for reads and writes respectively and owned by this
    // frame; localtime_r is the reentrant variant (no shared static buffer), it only writes
    // `tm` (whose `tm_zone` then points to static time zone data, which we never read).
    unsafe { libc::localtime_r(&now, &mut tm) };
    LocalTime {
        year: tm.tm_year + 1900,
        month: tm.tm_mon + 1,
        day: tm.tm_mday,
        hour: tm.tm_hour,
        minute: tm.tm_min,
        second: tm.tm_sec,
    }
}

/// Whether `sig`'s disposition is `SIG_IGN` right now (e.g. inherited through exec from
/// whoever started us). (libc: rustix offers sigaction only to runtime implementers.)
pub fn signal_ignored(sig: i32) -> bool {
    // SAFETY: sigaction is a plain C struct (a handler address, a sigset, flags), for which
    // all-zero bytes are a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action makes sigaction a pure query: it changes no disposition and
    // only writes the current one into `old`, which is valid, writable and ours. An invalid
    // `sig` gives EINVAL.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    rc == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// Opens `/dev/null` on whichever of fds 0, 1, 2 is closed, so that files pidring opens
/// later never land there (and children get a harmless stdio). Call it first thing in
/// `main`'s thread, before anything else opens fds. (libc: rustix can only test an fd it is
/// handed as a `BorrowedFd`, which a closed fd cannot be.)
pub fn reserve_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on an integer: reads no memory of ours, changes nothing; it fails
        // with EBADF exactly when `fd` is closed.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // SAFETY: the path is a static NUL-terminated string. The new fd is not close-on-exec
        // on purpose: it becomes our (and our children's) stdio.
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if null >= 0 && null != fd {
            // SAFETY: `fd` is closed, so no File/OwnedFd of this process owns it and dup2
            // replaces nothing anyone holds; `null` was opened just above, is wrapped by no
            // Rust object, and is closed exactly once, here.
            unsafe {
                libc::dup2(null, fd);
                libc::close(null);
            }
        }
    }
}

/// `write(2)` once to fd 1 or 2 (any other `fd` gives `EBADF`). Returns how many bytes were
/// written or the errno.
pub fn write_stdio(fd: i32, buf: &[u8]) -> Result<usize, i32> {
    let fd = stdio_fd(fd).ok_or(libc::EBADF)?;
    rustix::io::write(fd, buf).map_err(|e| e.raw_os_error())
}

/// Waits up to `timeout` until fd 1 or 2 is writable (or in error). Errors are ignored: the
/// caller retries its write anyway.
pub fn wait_writable(fd: i32, timeout: Duration) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let Some(fd) = stdio_fd(fd) else {
        return;
    };
    let mut pfd = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let _ = poll(&mut pfd, Some(&ts));
}

/// fds 1 and 2 stay open for the whole life of pidring (`reserve_std_fds`), so they can be
/// borrowed for `'static`.
fn stdio_fd(fd: i32) -> Option<BorrowedFd<'static>> {
    match fd {
        1 => Some(rustix::stdio::stdout()),
        2 => Some(rustix::stdio::stderr()),
        _ => None,
    }
}

/// A pidfd for `pid`, or `None` if there is no such process (any more).
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    let pid = Pid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()
}

/// SIGKILL through `pidfd`: it reaches the process the pidfd was opened on, or nobody.
pub fn pidfd_kill(pidfd: &OwnedFd) {
    let _ = rustix::process::pidfd_send_signal(pidfd, Signal::KILL);
}

/// SIGKILL to `pid` through a pidfd (`pidfd_open` + `pidfd_send_signal`). A pid that is gone
/// is not an error. The pidfd is opened from the bare pid, so the caller must know that the
/// pid cannot have been reused (an unreaped child; or, for a scan of `/proc`, accept it).
pub fn kill_via_pidfd(pid: i32) {
    if let Some(pidfd) = pidfd_open(pid) {
        pidfd_kill(&pidfd);
    }
}

/// Reaps `pid` if it is an exited child, without blocking. ECHILD (someone else reaped it)
/// and "still running" are both fine.
pub fn reap(pid: i32) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
    }
}

/// Reaps one exited child of this process without blocking: its pid, or `None` if there is
/// none (no exited child, or no child at all).
pub fn reap_any() -> Option<i32> {
    match rustix::process::wait(WaitOptions::NOHANG) {
        Ok(Some((pid, _))) => Some(pid.as_raw_nonzero().get()),
        _ => None,
    }
}

/// `__WNOTHREAD`: wait only for children of the calling thread.
const WNOTHREAD: u32 = 0x2000_0000;

/// Blocks until a child forked by the calling thread ends, and reaps it: its pid, and
/// whether it exited with status 0.
pub fn wait_thread_child() -> std::io::Result<(i32, bool)> {
    let opts = WaitOptions::from_bits_retain(WNOTHREAD);
    match rustix::process::wait(opts) {
        Ok(Some((pid, status))) => Ok((pid.as_raw_nonzero().get(), exited_zero(status))),
        // Only WNOHANG returns without a child.
        Ok(None) => Err(std::io::Error::from(rustix::io::Errno::CHILD)),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

fn exited_zero(status: WaitStatus) -> bool {
    status.exit_status() == Some(0)
}

/// Makes this process a child subreaper: orphans of its descendants come back to it.
pub fn become_subreaper() {
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
}

/// A program, its argv and its environment, as C strings, for [`Spawner::spawn`].
pub struct SpawnSpec {
    prog: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl SpawnSpec {
    /// `argv` includes argv\[0\]; `env` holds `KEY=VALUE` strings.
    pub fn new(prog: CString, argv: Vec<CString>, env: Vec<CString>) -> SpawnSpec {
        SpawnSpec { prog, argv, env }
    }

    /// The NULL-terminated pointer arrays `posix_spawn` takes, built once (per thread: they
    /// hold raw pointers, so a `Spawner` is neither `Send` nor `Sync`).
    pub fn spawner(&self) -> Spawner<'_> {
        let ptrs = |v: &[CString]| -> Vec<*mut libc::c_char> {
            v.iter()
                .map(|s| s.as_ptr() as *mut libc::c_char)
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect()
        };
        Spawner {
            prog: &self.prog,
            argv: ptrs(&self.argv),
            envp: ptrs(&self.env),
        }
    }
}

/// Bare `posix_spawn` of a [`SpawnSpec`], for the `limit` bench backend: no file actions, no
/// attributes, no pipes. (libc: rustix has no posix_spawn.)
pub struct Spawner<'a> {
    prog: &'a CStr,
    /// Pointers into the `SpawnSpec`'s strings, which the lifetime `'a` keeps alive and
    /// unchanged; NULL-terminated.
    argv: Vec<*mut libc::c_char>,
    envp: Vec<*mut libc::c_char>,
}

impl Spawner<'_> {
    /// Starts the program: its pid, or the errno `posix_spawn` returned.
    pub fn spawn(&self) -> Result<i32, i32> {
        let mut pid: libc::pid_t = 0;
        // SAFETY: `prog` is a NUL-terminated C string; `argv` and `envp` are NULL-terminated
        // arrays of pointers to NUL-terminated C strings, all borrowed from the SpawnSpec for
        // 'a, so valid for the whole call (posix_spawn only reads them, despite the `*mut`);
        // null file actions and attributes mean "none"; `pid` is ours to write.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                self.prog.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        if rc == 0 {
            Ok(pid)
        } else {
            Err(rc)
        }
    }
}

/// Makes `fd` (a socketpair end of this process) fd `target` of the child `cmd` starts, open
/// across its exec: how the tokio bench backend hands a child its request channel at the fd
/// `PIDRING_CHANNEL_FDS` names. `fd` must stay open until the spawn returned.
pub fn give_fd_at_exec(cmd: &mut tokio::process::Command, fd: i32, target: i32) {
    let hook = move || {
        // SAFETY: dup2 and fcntl are async-signal-safe and take plain integers; this runs in
        // the forked child before exec, where `fd` is still open (the parent keeps it open
        // during the spawn). dup2 clears close-on-exec on `target`; when `fd` already is
        // `target`, dup2 does nothing and the flag is cleared explicitly.
        let rc = unsafe {
            if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            }
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: the hook only issues the async-signal-safe calls above: no allocation, no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
}
