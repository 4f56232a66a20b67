//! The io_uring backend: every per-task descriptor is a direct descriptor in the ring's
//! sparse fixed-file table (the process fd table holds none), reads take a buffer of a
//! provided buffer ring shared by the worker only when data is there (an idle task holds no
//! buffer), one read in flight per stream, and a pidfd is
//! lent as an ordinary descriptor only for the moment it is used
//! (`IORING_OP_FIXED_FD_INSTALL`), with a bounded number lent at once.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::fixed_slots::FixedSlots;
use super::{
    Completion, Driver, DriverStats, FdRole, Handle, Outcome, ReadBytes, ReadEnd, WriteBuf,
};
use crate::pool::BackendKind;
use crate::sys::ring::{self, ops, Ring};
use crate::worker::user_data::{pack, unpack, OpTag, Tag};
use crate::worker::RingSizes;

/// Pidfds lent (installs submitted and not yet completed; epoll: duplicates made in one turn
/// of the loop) at most at once. Each lent pidfd is used and closed by the loop within the
/// same batch, so the process fd table holds at most about twice this many, whatever the
/// number of tasks.
pub(crate) const MAX_LENT: usize = 64;

/// Slot number used in tags that belong to no task.
const NO_SLOT: u32 = u32::MAX;

pub(crate) struct UringDriver {
    ring: Ring,
    fixed: FixedSlots,
    /// The worker's eventfd, shared with the threads that wake it.
    wake: Arc<OwnedFd>,
    raw: Vec<ring::Completion>,
    /// Lend requests waiting for room under [`MAX_LENT`]: (fixed slot, user_data).
    lend_queue: VecDeque<(Handle, u64)>,
    lends_in_flight: usize,
    /// Provided buffers lent to the loop by the last `wait` (`ReadBytes::Lent`), given back
    /// to the kernel at the start of the next one.
    lent_buffers: Vec<u16>,
    /// Fixed slots holding a socket (read with `recv`), by slot.
    sockets: Vec<bool>,
    stats: DriverStats,
}

impl UringDriver {
    pub(crate) fn new(sizes: RingSizes, wake: Arc<OwnedFd>) -> io::Result<UringDriver> {
        let ring = Ring::new(
            sizes.sq_entries,
            sizes.cq_entries,
            sizes.fixed_files,
            sizes.buffers,
            sizes.buffer_size,
        )?;
        let mut driver = UringDriver {
            fixed: FixedSlots::new(ring.fixed_files()),
            ring,
            wake,
            raw: Vec::with_capacity(1024),
            lend_queue: VecDeque::new(),
            lends_in_flight: 0,
            lent_buffers: Vec::new(),
            sockets: Vec::new(),
            stats: DriverStats::default(),
        };
        driver.arm_wake();
        driver.ring.submit()?;
        Ok(driver)
    }

    fn arm_wake(&mut self) {
        let tag = pack(Tag {
            slot: NO_SLOT,
            generation: 0,
            op: OpTag::Wake,
        });
        self.ring
            .push(ops::poll_in_multishot(self.wake.as_raw_fd(), tag));
    }

    /// Submits queued lend requests while there is room under [`MAX_LENT`].
    fn pump_lends(&mut self) {
        while self.lends_in_flight < MAX_LENT {
            let Some((fixed, user_data)) = self.lend_queue.pop_front() else {
                return;
            };
            self.lends_in_flight += 1;
            self.stats.lent_pidfds_peak =
                self.stats.lent_pidfds_peak.max(self.lends_in_flight as u64);
            self.ring.push(ops::install_fixed(fixed, user_data));
        }
    }

    /// Turns one ring completion into what the loop sees; driver-internal ones (wake-ups,
    /// closes, cancellations) are handled here and yield nothing.
    fn translate(&mut self, c: ring::Completion) -> Option<Completion> {
        let Some(tag) = unpack(c.user_data) else {
            tracing::warn!(user_data = c.user_data, "completion with an unknown tag");
            return None;
        };
        let outcome = match tag.op {
            OpTag::Wake => {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(self.wake.as_fd(), &mut counter);
                if !c.more() {
                    self.arm_wake();
                }
                return None;
            }
            OpTag::CloseFixed => {
                if c.result < 0 {
                    // The slot may still hold the file: empty it synchronously before reuse.
                    let _ = self.ring.unregister_file(tag.slot);
                }
                let _ = self.fixed.give_back(tag.slot);
                return None;
            }
            OpTag::Cancel => return None,
            OpTag::Rmdir => {
                let path = self.ring.take_path(c.user_data)?;
                let result = if c.result >= 0 {
                    Ok(())
                } else {
                    Err(-c.result)
                };
                Outcome::Removed(path, result)
            }
            OpTag::Exit => {
                if c.result < 0 {
                    tracing::warn!(errno = -c.result, "pidfd poll failed; reaping anyway");
                }
                Outcome::Exit
            }
            OpTag::Read(_) => {
                if c.result > 0 {
                    match c.buffer_id() {
                        Some(bid) => {
                            self.lent_buffers.push(bid);
                            Outcome::Data {
                                bytes: ReadBytes::Lent {
                                    id: bid,
                                    len: c.result as usize,
                                },
                                more: c.more(),
                            }
                        }
                        None => Outcome::ReadEnd(ReadEnd::Error(libc::EIO)),
                    }
                } else {
                    if let Some(bid) = c.buffer_id() {
                        self.ring.recycle(bid);
                    }
                    Outcome::ReadEnd(match -c.result {
                        0 => ReadEnd::Eof,
                        libc::ENOBUFS => ReadEnd::Stopped,
                        libc::ECANCELED => ReadEnd::Cancelled,
                        errno => ReadEnd::Error(errno),
                    })
                }
            }
            OpTag::Write(_) => {
                let (bytes, start) = self.ring.take_write(c.user_data)?;
                if c.result == -libc::EPIPE {
                    // A pipe write raises SIGPIPE on the thread that ran it: this one.
                    crate::sys::signals::discard_sigpipe();
                }
                Outcome::Written {
                    buf: WriteBuf { bytes, start },
                    result: if c.result >= 0 {
                        Ok(c.result as usize)
                    } else {
                        Err(-c.result)
                    },
                }
            }
            OpTag::TreeWatch => Outcome::Priority(if c.result >= 0 {
                Ok(())
            } else {
                Err(-c.result)
            }),
            OpTag::Pidfd(_) => {
                self.lends_in_flight = self.lends_in_flight.saturating_sub(1);
                Outcome::Pidfd(if c.result >= 0 {
                    Ok(crate::sys::fd::adopt_installed(c.result))
                } else {
                    Err(-c.result)
                })
            }
        };
        Some(Completion {
            user_data: c.user_data,
            outcome,
        })
    }
}

impl Driver for UringDriver {
    fn kind(&self) -> BackendKind {
        BackendKind::Uring
    }

    fn has_room(&self, n: usize) -> bool {
        self.fixed.available() >= n
    }

    fn adopt(&mut self, fd: OwnedFd, role: FdRole) -> io::Result<Handle> {
        let slot = self
            .fixed
            .take(1)
            .and_then(|v| v.first().copied())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMFILE))?;
        match self.ring.register_file(slot, fd) {
            Ok(()) => {
                let i = slot as usize;
                if self.sockets.len() <= i {
                    self.sockets.resize(i + 1, false);
                }
                self.sockets[i] = role == FdRole::Channel;
                Ok(slot)
            }
            Err(e) => {
                let _ = self.fixed.give_back(slot);
                Err(e)
            }
        }
    }

    fn release(&mut self, handle: Handle) {
        let user_data = pack(Tag {
            slot: handle,
            generation: 0,
            op: OpTag::CloseFixed,
        });
        self.ring.push(ops::close_fixed(handle, user_data));
    }

    fn watch_exit(&mut self, pidfd: Handle, user_data: u64) {
        self.ring.push(ops::poll_in_fixed(pidfd, user_data));
    }

    fn lend_pidfd(&mut self, pidfd: Handle, user_data: u64) {
        self.lend_queue.push_back((pidfd, user_data));
        self.pump_lends();
    }

    fn read(&mut self, stream: Handle, user_data: u64) {
        let (group, len) = (self.ring.buffer_group(), self.ring.buffer_size());
        let socket = self.sockets.get(stream as usize).copied().unwrap_or(false);
        self.ring.push(if socket {
            ops::recv_select(stream, group, len, user_data)
        } else {
            ops::read_select(stream, group, len, user_data)
        });
    }

    fn data<'a>(&'a self, bytes: &'a ReadBytes) -> &'a [u8] {
        match bytes {
            ReadBytes::Owned(v) => v,
            ReadBytes::Lent { id, len } => self.ring.lent_buffer(*id, *len),
        }
    }

    fn write(&mut self, stream: Handle, buf: WriteBuf, socket: bool, user_data: u64) {
        self.ring
            .push_write(stream, buf.bytes, buf.start, socket, user_data);
    }

    fn watch_priority(&mut self, fd: Handle, user_data: u64) {
        self.ring.push(ops::poll_pri_fixed(fd, user_data));
    }

    fn cancel(&mut self, target: u64) {
        let user_data = pack(Tag {
            slot: NO_SLOT,
            generation: 0,
            op: OpTag::Cancel,
        });
        self.ring.push(ops::cancel(target, user_data));
    }

    fn remove_dir(&mut self, path: CString, user_data: u64) -> Result<(), CString> {
        self.ring.push_rmdir(path, user_data);
        Ok(())
    }

    fn dirs_in_flight(&self) -> usize {
        self.ring.rmdirs_in_flight()
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        // The loop is done with the bytes of the last batch.
        for bid in self.lent_buffers.drain(..) {
            self.ring.recycle(bid);
        }
        self.ring.submit_and_wait(timeout)?;
        loop {
            self.ring.drain_completions(&mut self.raw);
            if self.raw.is_empty() {
                break;
            }
            let mut raw = std::mem::take(&mut self.raw);
            for c in raw.drain(..) {
                if let Some(c) = self.translate(c) {
                    out.push(c);
                }
            }
            self.raw = raw;
            // Completions freed room for lends and made the backlog submittable.
            self.pump_lends();
            if self.ring.backlog() == 0 {
                break;
            }
            self.ring.submit()?;
        }
        Ok(())
    }

    fn stats(&self) -> DriverStats {
        self.stats
    }
}
