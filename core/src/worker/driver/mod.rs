//! The driver seam: what a worker needs from an I/O backend, and the backends.
//!
//! The worker loop (`super::event_loop`) owns the tasks, their state machines, timers,
//! back-pressure and release; a [`Driver`] only turns the loop's requests into system calls
//! and their results into [`Completion`]s. Both backends run the same loop and the same
//! `TaskMachine`; neither `task/` nor the `Pool` knows which one runs.
//!
//! # What every backend provides
//!
//! - **Descriptors.** [`Driver::adopt`] takes ownership of a task's pidfd, stream ends and
//!   `cgroup.events` and names each by a [`Handle`]; [`Driver::release`] closes one. The
//!   loop releases a handle only when no operation on it is in flight (the machine's
//!   contract), so a backend never sees an operation on a released handle.
//! - **Operations**, each tagged with the loop's `user_data` (slot, generation, op) and
//!   answered by completions carrying that tag. Submitting never fails: a failure comes
//!   back as a completion, so nothing the loop asks for is silently dropped.
//!   - [`Driver::watch_exit`]: one [`Outcome::Exit`] once the pidfd is readable.
//!   - [`Driver::lend_pidfd`]: one [`Outcome::Pidfd`], an ordinary pidfd the loop uses at
//!     once (to reap, signal or probe) and closes; or the errno when none could be made.
//!     A backend bounds how many lent pidfds exist at once, so the process fd table stays
//!     flat when thousands of tasks are signalled together.
//!   - [`Driver::read`]: zero or more [`Outcome::Data`] (at most one buffer each; `more`
//!     says the read is still armed), then, unless `more` was false on the last data, one
//!     [`Outcome::ReadEnd`]. Reads of one stream are delivered in order. The bytes of a
//!     `Data` are reached through [`Driver::data`] until the next [`Driver::wait`]: the
//!     loop copies them once, straight into what it hands the user (io_uring lends its
//!     provided buffer itself; epoll hands over the bytes it read).
//!   - [`Driver::write`]: one [`Outcome::Written`] giving the buffer back with the number
//!     of bytes written (maybe fewer than asked: the loop writes the rest next) or the
//!     errno (`ECANCELED` when cancelled). The buffer stays alive, owned by the driver,
//!     until that completion. Writing to a pipe or socket nobody reads gives `EPIPE`, never
//!     a `SIGPIPE` to the supervisor: sockets are written with `MSG_NOSIGNAL`, and the
//!     worker thread blocks `SIGPIPE` and discards the one a pipe write raises on it.
//!   - [`Driver::watch_priority`]: one [`Outcome::Priority`] when the descriptor signals
//!     `POLLPRI` (`cgroup.events` changed), or the cancellation.
//!   - [`Driver::cancel`]: asks the op with that tag to end early; it then ends with
//!     `ReadEnd(Cancelled)` / `Priority(Err(ECANCELED))`, or it may still end on its own if
//!     it was already finishing (the loop handles both).
//!   - [`Driver::remove_dir`]: removes a released task's cgroup off the loop, or hands the
//!     path back when the backend cannot (the loop's cleanup thread then does it).
//!   - [`Driver::cancel`] also ends a read or write early for flow control or a stream's
//!     end.
//! - **Waiting.** [`Driver::wait`] sleeps until a completion, a wake-up (the eventfd the
//!   driver was built with, written by other threads after they queue a command), or the
//!   timeout. It never blocks longer, and fails only when the backend itself is broken.
//!
//! Backends: [`uring`] (io_uring: direct descriptors, reads into a provided
//! buffer ring) and [`epoll`] (the process fd table, non-blocking reads into one bounded
//! buffer). Which one a pool uses is decided once, by [`select`].

pub(crate) mod epoll;
#[cfg(test)]
pub(crate) mod faulty;
mod fixed_slots;
pub(crate) mod select;
pub(crate) mod uring;

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::pool::BackendKind;

/// A descriptor adopted by a driver: a fixed-file slot (io_uring) or a table index (epoll).
pub(crate) type Handle = u32;

/// What an adopted descriptor is, which decides how a backend registers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdRole {
    /// A pidfd: exit notifications and lending.
    Pidfd,
    /// The supervisor's end of a pipe: reads (stdout, stderr) or writes (stdin).
    Stream,
    /// The supervisor's end of a socketpair channel: reads and writes.
    Channel,
    /// `cgroup.events`: `POLLPRI` watches.
    Events,
}

/// How a read ended for good (its last completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadEnd {
    /// End of file.
    Eof,
    /// The read stopped without ending the stream (io_uring: `-ENOBUFS`, or the kernel ended
    /// a multishot read); the loop submits it again.
    Stopped,
    /// Ended by [`Driver::cancel`].
    Cancelled,
    /// Failed with this errno.
    Error(i32),
}

/// The bytes of one [`Outcome::Data`], reached through [`Driver::data`].
#[derive(Debug)]
pub(crate) enum ReadBytes {
    /// Bytes the driver copied out of its own buffer (epoll): handed over as they are.
    Owned(Vec<u8>),
    /// `len` bytes in the driver's buffer `id` (io_uring's provided buffer), lent until the
    /// next [`Driver::wait`].
    Lent { id: u16, len: usize },
}

impl ReadBytes {
    pub(crate) fn len(&self) -> usize {
        match self {
            ReadBytes::Owned(v) => v.len(),
            ReadBytes::Lent { len, .. } => *len,
        }
    }
}

/// Bytes to write: `bytes[start..]`.
#[derive(Debug, Default)]
pub(crate) struct WriteBuf {
    pub(crate) bytes: Vec<u8>,
    pub(crate) start: usize,
}

impl WriteBuf {
    pub(crate) fn remaining(&self) -> &[u8] {
        self.bytes.get(self.start..).unwrap_or(&[])
    }
}

/// The result of one operation, or one step of a read.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The pidfd became readable: the process exited.
    Exit,
    /// A lent pidfd (`O_CLOEXEC`), or the errno when none could be made.
    Pidfd(Result<OwnedFd, i32>),
    /// Bytes read; `more`: the read is still armed.
    Data { bytes: ReadBytes, more: bool },
    /// A write ended: its buffer back, and the bytes written or the errno.
    Written {
        buf: WriteBuf,
        result: Result<usize, i32>,
    },
    /// The read ended (see [`ReadEnd`]).
    ReadEnd(ReadEnd),
    /// The priority watch fired (`Ok`), or ended with this errno (`ECANCELED` when
    /// cancelled).
    Priority(Result<(), i32>),
    /// A [`Driver::remove_dir`] finished: the path and its result.
    Removed(CString, Result<(), i32>),
}

/// One completion: the tag of the operation and what happened.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) user_data: u64,
    pub(crate) outcome: Outcome,
}

/// Counters a driver keeps about itself (for `PoolStats` and the bench).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DriverStats {
    /// Pidfds lent and not yet given back, right now and at most.
    pub(crate) lent_pidfds_peak: u64,
}

/// The contract of a backend; see the module docs.
pub(crate) trait Driver {
    fn kind(&self) -> BackendKind;

    /// Whether `n` more descriptors can be adopted.
    fn has_room(&self, n: usize) -> bool;

    /// Takes ownership of `fd`. On error the descriptor is closed.
    fn adopt(&mut self, fd: OwnedFd, role: FdRole) -> io::Result<Handle>;

    /// Closes an adopted descriptor (no operation on it may be in flight).
    fn release(&mut self, handle: Handle);

    fn watch_exit(&mut self, pidfd: Handle, user_data: u64);

    fn lend_pidfd(&mut self, pidfd: Handle, user_data: u64);

    fn read(&mut self, stream: Handle, user_data: u64);

    /// The bytes of a `Data` completion of the last [`wait`](Driver::wait).
    fn data<'a>(&'a self, bytes: &'a ReadBytes) -> &'a [u8];

    /// Writes `buf.remaining()` to `stream` (`socket`: a socketpair channel, written with
    /// `MSG_NOSIGNAL`; otherwise a pipe).
    fn write(&mut self, stream: Handle, buf: WriteBuf, socket: bool, user_data: u64);

    fn watch_priority(&mut self, fd: Handle, user_data: u64);

    fn cancel(&mut self, target: u64);

    /// Starts removing the directory at `path`; `Err(path)` when this backend cannot do it
    /// off the loop.
    fn remove_dir(&mut self, path: CString, user_data: u64) -> Result<(), CString>;

    /// [`remove_dir`](Driver::remove_dir) calls whose completion has not been seen yet.
    fn dirs_in_flight(&self) -> usize;

    /// Waits for completions (appended to `out`), a wake-up, or `timeout`.
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()>;

    fn stats(&self) -> DriverStats;
}
