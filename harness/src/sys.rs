//! The harness's system layer: every system call of `run` and `bench` that is not already a
//! safe call of std or rustix goes through here, as a safe function. This is the only module
//! of the crate allowed `unsafe` (besides the self-contained `raw` module of `helper.rs`);
//! each block says why it is sound. Signals to processes go through pidfds, never `kill(2)`
//! on a bare pid.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitOptions, WaitStatus};

/// The C entry point. The binary is `#![no_main]`: Rust's runtime start-up (`lang_start`)
/// would set SIGPIPE to `SIG_IGN` before `main`, and pidring must see the dispositions it was
/// started with to hand them on to PROGRAM (`(trap '' PIPE; pidring run -- yes) | head`
/// must give `yes` an ignored SIGPIPE, as GNU timeout does). Everything else of std works
/// without it (glibc hands the arguments to std through `.init_array`); the one thing given
/// up is std's stack-overflow message (a stack overflow is a plain SIGSEGV).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // std::process::exit flushes std's stdout buffer (which a plain return would not).
    std::process::exit(crate::entry())
}

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

/// The kernel's `struct sigaction` on x86_64 and aarch64 (not glibc's, whose mask is 128
/// bytes and whose wrapper refuses glibc's own signals 32 and 33).
#[repr(C)]
#[derive(Clone, Copy)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The kernel's signal-set size for `rt_sig*` calls: 64 signals.
const KERNEL_SIGSET_SIZE: usize = 8;

/// The handler address of `sig` (`SIG_DFL` 0, `SIG_IGN` 1, or a function), through the raw
/// `rt_sigaction` so that every signal 1..=64 can be asked about. `None` for an invalid
/// signal.
fn signal_handler(sig: i32) -> Option<usize> {
    let mut old = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a null new action makes rt_sigaction a pure query that only writes `old`, a
    // valid, writable kernel sigaction owned by this frame, of the size the kernel expects
    // for a sigsetsize of 8.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<KernelSigaction>(),
            &mut old as *mut KernelSigaction,
            KERNEL_SIGSET_SIZE,
        )
    };
    (rc == 0).then_some(old.handler)
}

/// Whether `sig`'s disposition is `SIG_IGN` right now (e.g. inherited through exec from
/// whoever started us).
pub fn signal_ignored(sig: i32) -> bool {
    signal_handler(sig) == Some(libc::SIG_IGN)
}

/// Whether `sig`'s disposition is `SIG_DFL` right now.
pub fn signal_default(sig: i32) -> bool {
    signal_handler(sig) == Some(libc::SIG_DFL)
}

/// Sets `sig`'s disposition to `SIG_DFL` (`ignore` false) or `SIG_IGN` (`ignore` true),
/// without handler, flags or mask. Errors (an invalid or uncatchable signal) are ignored.
pub fn set_signal_disposition(sig: i32, ignore: bool) {
    let new = KernelSigaction {
        handler: if ignore { libc::SIG_IGN } else { libc::SIG_DFL },
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: `new` is a valid kernel sigaction with no handler function (SIG_DFL or
    // SIG_IGN need no restorer), read by the kernel only; no old action is asked for.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &new as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            KERNEL_SIGSET_SIZE,
        );
    }
}

/// Changes the calling thread's signal mask (`how`: `SIG_BLOCK`, `SIG_UNBLOCK`,
/// `SIG_SETMASK`) and returns the previous one, as bits (bit n-1 is signal n). The raw
/// system call, so that glibc's signals 32 and 33 can be blocked too.
fn sigprocmask(how: i32, set: Option<u64>) -> u64 {
    let mut old: u64 = 0;
    let new = set.unwrap_or(0);
    // SAFETY: `new` and `old` are 8-byte sigsets owned by this frame, matching the sigsetsize
    // passed; a null new set (None) makes it a pure query.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            if set.is_some() {
                &new as *const u64
            } else {
                std::ptr::null()
            },
            &mut old as *mut u64,
            KERNEL_SIGSET_SIZE,
        );
    }
    old
}

/// The calling thread's blocked signals, as bits.
pub fn blocked_signals() -> u64 {
    sigprocmask(libc::SIG_BLOCK, None)
}

/// Blocks `set` (bits) in the calling thread; threads created afterwards inherit the mask.
pub fn block_signals(set: u64) {
    sigprocmask(libc::SIG_BLOCK, Some(set));
}

/// Unblocks `set` (bits) in the calling thread.
pub fn unblock_signals(set: u64) {
    sigprocmask(libc::SIG_UNBLOCK, Some(set));
}

/// One signal read from a [`SignalFd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalInfo {
    pub signo: i32,
    /// `si_code`: `SI_USER` (0) for kill(2), `CLD_*` for SIGCHLD, ...
    pub code: i32,
    /// The sender (or the child, for SIGCHLD), in our PID namespace.
    pub pid: i32,
    /// For SIGCHLD: the exit status or the signal that stopped the child.
    pub status: i32,
}

/// A signalfd for a set of (blocked) signals: how the event loop receives every signal,
/// without a handler or a thread. Non-blocking and close-on-exec.
pub struct SignalFd(OwnedFd);

impl SignalFd {
    pub fn new(set: u64) -> io::Result<SignalFd> {
        // SAFETY: `set` is an 8-byte sigset owned by this frame, matching the size passed;
        // -1 asks for a new fd, which is returned and owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_signalfd4,
                -1,
                &set as *const u64,
                KERNEL_SIGSET_SIZE,
                libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        Ok(SignalFd(unsafe {
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
        }))
    }

    /// The next pending signal, or `None` when there is none (or the read failed).
    pub fn read(&self) -> Option<SignalInfo> {
        // struct signalfd_siginfo: 128 bytes; the fields used are at fixed offsets.
        let mut buf = [0u8; 128];
        match rustix::io::read(&self.0, &mut buf) {
            Ok(128) => {}
            _ => return None,
        }
        let u32_at = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        Some(SignalInfo {
            signo: u32_at(0) as i32,
            code: u32_at(8) as i32,
            pid: u32_at(12) as i32,
            status: u32_at(40) as i32,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// An eventfd that wakes the event loop (from the pool's callback, the relay threads).
pub struct Wake(OwnedFd);

impl Wake {
    pub fn new() -> io::Result<Wake> {
        use rustix::event::{eventfd, EventfdFlags};
        Ok(Wake(eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?))
    }
    pub fn notify(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut buf);
    }
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no limit); returns
/// which are readable. EINTR counts as "nothing yet".
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Vec<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    let ts = timeout.map(|t| Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as _,
        tv_nsec: t.subsec_nanos() as _,
    });
    match poll(&mut pfds, ts.as_ref()) {
        Ok(_) => pfds.iter().map(|p| !p.revents().is_empty()).collect(),
        Err(_) => vec![false; fds.len()],
    }
}

/// Raises `sig` on this process for good: default disposition, unblocked, no core dump
/// (`PR_SET_DUMPABLE` 0, as GNU timeout does before it re-raises its child's signal). If the
/// signal does not end the process, it exits with 128 + `sig`.
pub fn die_of_signal(sig: i32) -> ! {
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    set_signal_disposition(sig, false);
    if (1..=64).contains(&sig) {
        // raise(3) makes it thread-directed, so unblocking it in this thread is enough.
        unblock_signals(1u64 << (sig - 1));
        // SAFETY: raise(3) sends `sig` to the calling thread; no memory is involved.
        unsafe { libc::raise(sig) };
    }
    std::process::exit(128 + sig.clamp(0, 127))
}

/// Stops this process (SIGSTOP to itself) until someone sends SIGCONT. As PID 1 of a PID
/// namespace the kernel drops it: nothing happens.
pub fn stop_self() {
    // SAFETY: raise(3) sends SIGSTOP to the calling thread (which stops the whole process);
    // no memory is involved.
    unsafe { libc::raise(libc::SIGSTOP) };
}

/// `PR_SET_PDEATHSIG`: `sig` is sent to this process when its parent dies (tini's `-p`).
pub fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes integers only.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

/// A pidfd for `pid` if it is a child of this process (running or a zombie not yet reaped),
/// else `None`. The pidfd pins the process; asking `waitid(P_PIDFD, WNOWAIT)` about it then
/// proves it is ours (another process's child gives ECHILD), without `/proc`, whose pids may
/// belong to another PID namespace.
pub fn open_child_pidfd(pid: i32) -> Option<OwnedFd> {
    let fd = pidfd_open(pid)?;
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    match rustix::process::waitid(WaitId::PidFd(fd.as_fd()), opts) {
        Ok(_) => Some(fd),
        Err(_) => None,
    }
}

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9): the signal goes to the pidfd's process group.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 4;

/// Sends `sig` (0 checks for existence) through `pidfd`: to that process, or with `group` to
/// every process of the process group it leads (it must lead one). Err(errno): ESRCH when
/// nothing is left to signal; EINVAL where the kernel lacks group signals.
pub fn pidfd_send(pidfd: BorrowedFd<'_>, sig: i32, group: bool) -> Result<(), i32> {
    let flags = if group { PIDFD_SIGNAL_PROCESS_GROUP } else { 0 };
    // SAFETY: pidfd_send_signal(fd, sig, NULL, flags): a valid borrowed fd, integers, and a
    // null siginfo (the kernel fills in a kill-like one).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}

/// An exited child of this process, not reaped (`waitid(P_ALL, WNOWAIT)`): its pid.
/// (libc: rustix's waitid status does not tell the pid.)
pub fn peek_exited_child() -> Option<i32> {
    // SAFETY: siginfo_t is a plain C struct (integers and a union of them), for which
    // all-zero bytes are a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid only writes `info`, a valid, writable siginfo_t owned by this frame;
    // WNOWAIT leaves the child unreaped.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful waitid, si_pid is set (0 when no child has exited).
    let pid = unsafe { info.si_pid() };
    (pid > 0).then_some(pid)
}

/// Whether this process has any child at all (running or not yet reaped): one
/// `waitid(P_ALL, WNOWAIT)` that fails with ECHILD when there is none. Cheaper than reading
/// `/proc`, and the same in every PID namespace.
pub fn has_children() -> bool {
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    !matches!(
        rustix::process::waitid(WaitId::All, opts),
        Err(rustix::io::Errno::CHILD)
    )
}

/// Reaps our exited child `pid` without blocking; true if it was reaped here.
pub fn reap_exited(pid: i32) -> bool {
    let Some(p) = Pid::from_raw(pid) else {
        return false;
    };
    matches!(
        rustix::process::waitid(
            WaitId::Pid(p),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG
        ),
        Ok(Some(_))
    )
}

/// This process's pid, in its own PID namespace (`getpid`; `/proc` may belong to another).
pub fn own_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// Our process group and session.
pub fn own_process_group() -> i32 {
    rustix::process::getpgrp().as_raw_nonzero().get()
}

pub fn own_session() -> Option<i32> {
    rustix::process::getsid(None)
        .ok()
        .map(|p| p.as_raw_nonzero().get())
}

/// Whether fd 0, 1 or 2 is a terminal.
pub fn is_terminal(fd: i32) -> bool {
    let Some(fd) = std_fd(fd) else { return false };
    // SAFETY: isatty(3) only queries the (open, borrowed) fd.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// The session of the terminal on fd 0, 1 or 2 (`tcgetsid`): it is our controlling terminal
/// when this is our session.
pub fn terminal_session(fd: i32) -> Option<i32> {
    let fd = std_fd(fd)?;
    // SAFETY: tcgetsid(3) is an ioctl query on the (open, borrowed) fd.
    let sid = unsafe { libc::tcgetsid(fd.as_raw_fd()) };
    (sid > 0).then_some(sid)
}

/// The terminal's foreground process group (`tcgetpgrp`).
pub fn foreground_group(fd: i32) -> Option<i32> {
    let fd = std_fd(fd)?;
    // SAFETY: tcgetpgrp(3) is an ioctl query on the (open, borrowed) fd.
    let pgrp = unsafe { libc::tcgetpgrp(fd.as_raw_fd()) };
    (pgrp > 0).then_some(pgrp)
}

/// Makes `pgrp` the terminal's foreground process group (`tcsetpgrp`). pidring has SIGTTOU
/// blocked, so this works from a background group too.
pub fn set_foreground_group(fd: i32, pgrp: i32) -> io::Result<()> {
    let fd = std_fd(fd).ok_or(io::ErrorKind::InvalidInput)?;
    // SAFETY: tcsetpgrp(3) is an ioctl on the (open, borrowed) fd with an integer argument.
    if unsafe { libc::tcsetpgrp(fd.as_raw_fd(), pgrp) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What kind of file fd 0, 1 or 2 is, and which (device, inode): a relay is used only for
/// pipes and sockets, and stdout and stderr on the same one share a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdioKind {
    pub pipe_or_socket: bool,
    pub dev_ino: (u64, u64),
}

pub fn stdio_kind(fd: i32) -> Option<StdioKind> {
    let fd = std_fd(fd)?;
    let st = rustix::fs::fstat(fd).ok()?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    Some(StdioKind {
        pipe_or_socket: matches!(
            kind,
            rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket
        ),
        dev_ino: (st.st_dev, st.st_ino),
    })
}

/// A pipe for a relay: (read end, write end), both close-on-exec.
pub fn relay_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A close-on-exec copy of fd 1 or 2 (above 2), to put back with [`restore_stdio`].
pub fn save_stdio(fd: i32) -> io::Result<OwnedFd> {
    let fd = std_fd(fd).ok_or(io::ErrorKind::InvalidInput)?;
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Makes fd 1 or 2 a copy of `to` (`dup2`; the copy is inherited by children).
pub fn restore_stdio(fd: i32, to: BorrowedFd<'_>) -> io::Result<()> {
    match fd {
        1 => Ok(rustix::stdio::dup2_stdout(to)?),
        2 => Ok(rustix::stdio::dup2_stderr(to)?),
        _ => Err(io::ErrorKind::InvalidInput.into()),
    }
}

/// `read(2)`, retried on EINTR: Ok(0) at end of file.
pub fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, i32> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.raw_os_error()),
        }
    }
}

/// fds 0, 1 and 2 stay open for the whole life of pidring (`reserve_std_fds`), so they can
/// be borrowed for `'static`.
fn std_fd(fd: i32) -> Option<BorrowedFd<'static>> {
    match fd {
        0 => Some(rustix::stdio::stdin()),
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

/// Gives `cmd` the safety a supervisor wants in its children, the way a `std` or tokio user
/// would: a `pre_exec` hook that calls `setsid()` and `prctl(PR_SET_PDEATHSIG, SIGKILL)`.
/// Any `pre_exec` makes std fork instead of `posix_spawn` (the `tokio-safe` bench row).
pub fn add_safety_pre_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and calls only setsid(2) and
    // prctl(2), which are async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
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
