//! PROVISIONAL signatures: signals, reaping and exit info through pidfds.
#![allow(unused_variables, dead_code)]
use std::io;
use std::os::fd::BorrowedFd;

use crate::task::ExitStatus;

/// `pidfd_send_signal`; with `group`, to the process group led by the pidfd's process.
pub(crate) fn send_signal(pidfd: BorrowedFd<'_>, signal: i32, group: bool) -> io::Result<()> { todo!() }

/// `waitid(P_PIDFD, WEXITED | WNOHANG)`: `Ok(None)` while it runs. A foreign reaper
/// (`ECHILD`) falls back to `PIDFD_GET_INFO`, then to `ExitStatus::Unknown`.
pub(crate) fn reap(pidfd: BorrowedFd<'_>) -> io::Result<Option<ExitStatus>> { todo!() }
