//! Signals, reaping and exit info through pidfds.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::task::ExitStatus;

/// `pidfd_send_signal`; with `group`, to the process group led by the pidfd's process
/// (`PIDFD_SIGNAL_PROCESS_GROUP`, Linux 6.9+; works after the leader was reaped). Signal 0
/// probes: `ESRCH` means nobody is left.
pub(crate) fn send_signal(pidfd: BorrowedFd<'_>, signal: i32, group: bool) -> io::Result<()> {
    let flags: libc::c_uint = if group {
        libc::PIDFD_SIGNAL_PROCESS_GROUP
    } else {
        0
    };
    // SAFETY: pidfd_send_signal(2) with a valid fd borrowed for the call, a NULL siginfo
    // (the kernel fills in a default one) and plain integer flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `pidfd_open(pid)`: a blocking, close-on-exec pidfd.
pub(crate) fn open(pid: i32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Decodes a raw wait status (as `waitpid` gives it).
pub(crate) fn decode_wait_status(raw: i32) -> ExitStatus {
    if libc::WIFEXITED(raw) {
        ExitStatus::Code(libc::WEXITSTATUS(raw))
    } else if libc::WIFSIGNALED(raw) {
        ExitStatus::Signal(libc::WTERMSIG(raw))
    } else {
        ExitStatus::Unknown
    }
}

/// `waitid(P_PIDFD, WEXITED | WNOHANG)`: `Ok(None)` while it runs. A foreign reaper
/// (`ECHILD`) falls back to `PIDFD_GET_INFO`, then to `ExitStatus::Unknown`.
pub(crate) fn reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<ExitStatus>> {
    loop {
        // SAFETY: `siginfo_t` is plain data; all-zero is its "nothing happened" state, which
        // is how WNOHANG reports a child that is still running (si_pid stays 0).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) with a valid fd borrowed for the call and a pointer to a live
        // `siginfo_t` that the kernel fills.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => {
                    // Reaped by someone else (or never our child): ask the pidfd.
                    return Ok(Some(exit_info(pidfd)?.unwrap_or(ExitStatus::Unknown)));
                }
                _ => return Err(err),
            }
        }
        // SAFETY: the kernel filled `info` for a SIGCHLD-class event (or left it zeroed);
        // si_pid / si_status are valid to read for those.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => ExitStatus::Code(status),
            libc::CLD_KILLED | libc::CLD_DUMPED => ExitStatus::Signal(status),
            _ => ExitStatus::Unknown,
        }));
    }
}

/// `ioctl(PIDFD_GET_INFO)` with `PIDFD_INFO_EXIT`: the exit status of a process that was
/// reaped (by anyone). `Ok(None)` if it has not exited and been reaped yet, or the kernel
/// does not keep exit info (before 6.15: `ENOTTY`/`EINVAL`).
pub(crate) fn exit_info(pidfd: BorrowedFd<'_>) -> io::Result<Option<ExitStatus>> {
    // SAFETY: `pidfd_info` is plain integers (and non-exhaustive in libc, hence zeroed
    // instead of a literal); all-zero is a valid request apart from `mask`, set next.
    let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = libc::PIDFD_INFO_EXIT as u64;
    // SAFETY: ioctl(PIDFD_GET_INFO) with a valid fd borrowed for the call and a pointer to
    // a live `pidfd_info` of the size encoded in the request number.
    let ret = unsafe { libc::ioctl(pidfd.as_raw_fd(), libc::PIDFD_GET_INFO, &mut info) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ESRCH | libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP) => Ok(None),
            _ => Err(err),
        };
    }
    if info.mask & libc::PIDFD_INFO_EXIT as u64 == 0 {
        return Ok(None);
    }
    Ok(Some(decode_wait_status(info.exit_code)))
}

/// The pid of a live (or not yet reaped) process, in this process's PID namespace:
/// `ioctl(PIDFD_GET_INFO)` (Linux 6.13+), else the `Pid:` line of its fdinfo. `None` once it
/// is reaped or where neither tells.
pub(crate) fn pid(pidfd: BorrowedFd<'_>) -> Option<i32> {
    // SAFETY: as in `exit_info`: plain integers, zeroed, the mask set next.
    let mut info: libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = libc::PIDFD_INFO_PID as u64;
    // SAFETY: as in `exit_info`.
    let ret = unsafe { libc::ioctl(pidfd.as_raw_fd(), libc::PIDFD_GET_INFO, &mut info) };
    if ret == 0 {
        return i32::try_from(info.pid).ok().filter(|&p| p > 0);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP) => {}
        _ => return None,
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    let pid: i32 = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()?;
    (pid > 0).then_some(pid)
}

/// `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`: the pid of some child of this process
/// (any thread's) that has exited and waits to be reaped, without reaping it. `Ok(None)`
/// when there is none (or no child at all).
pub(crate) fn peek_exited_child() -> io::Result<Option<i32>> {
    loop {
        // SAFETY: `siginfo_t` is plain data; all-zero is how WNOHANG reports "none".
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) with a pointer to a live `siginfo_t`; WNOWAIT leaves the child
        // as it is.
        let ret = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => Ok(None),
                _ => Err(err),
            };
        }
        // SAFETY: the kernel filled `info` for a child event, or left it zeroed.
        let pid = unsafe { info.si_pid() };
        return Ok((pid != 0).then_some(pid));
    }
}

#[cfg(test)]
mod tests;
