//! Process-group containment: the task-runner is a session and group leader (the spawn
//! calls `setsid()`), and tree signals go to its group through its pidfd
//! (`PIDFD_SIGNAL_PROCESS_GROUP`, Linux 6.9+; this works after the leader was reaped, for
//! the members that remain).
//!
//! A descendant that calls `setsid()` (or `setpgid()`) leaves the group: while its ancestry
//! still leads to the leader, a tree signal finds and reaches it (`escapers`). Limit: one
//! orphaned before the tree is signalled (a double-forked daemon) escapes this mode; only a
//! cgroup contains those (or a subreaper pool's orphan sweep, after its task).
use std::io;
use std::os::fd::BorrowedFd;

use crate::sys::pidfd::send_signal;

/// Signals the leader's process group. Returns 1 when the group received it (the kernel
/// does not say how many members it has), 0 when it is empty.
pub(crate) fn signal(leader: BorrowedFd<'_>, signal: i32) -> io::Result<u64> {
    match send_signal(leader, signal, true) {
        Ok(()) => Ok(1),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Whether any member of the leader's group is alive (signal 0; `ESRCH` means empty).
pub(crate) fn is_populated(leader: BorrowedFd<'_>) -> io::Result<bool> {
    match send_signal(leader, 0, true) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        // Someone exists that we may not signal: populated.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(true),
        Err(e) => Err(e),
    }
}
