//! The epoll backend, for where io_uring is refused (default Docker, Podman and containerd
//! seccomp profiles, `kernel.io_uring_disabled`, gVisor): the same operations with
//! readiness instead of completions.
//!
//! - Per-task descriptors stay in the process fd table (there is no other place): a task
//!   with stdout and stderr holds 3 of them (pidfd and two pipe ends), 4 while its cgroup's
//!   `cgroup.events` is watched. The density is therefore `RLIMIT_NOFILE / 3` tasks per
//!   process (about 6,600 under a 20,000 limit), against one ring's `RLIMIT_NOFILE / 3`
//!   *per worker* with io_uring.
//! - A descriptor is in the epoll set only while an operation on it is armed (so a hung-up
//!   pipe nobody reads cannot make `epoll_wait` spin), level-triggered: an armed read keeps
//!   reporting until it is cancelled or reaches end of file.
//! - Reads go straight into a chunk buffer of [`READ_SIZE`] from the worker's buffer pool
//!   (an idle task holds no memory; the chunk handed to the application is that buffer, so
//!   each byte is copied once), [`READS_PER_WAKEUP`] per stream and wake-up, so one chatty
//!   task cannot starve the others and a task whose budget fills up gets at most one more
//!   read before its read is stopped, and at most [`READ_PER_WAIT`] bytes per wait in all
//!   (the rest stays ready, level-triggered, for the next wait).
//! - Writes are tried at once; what a full pipe or socket does not take waits for
//!   `EPOLLOUT` (a descriptor's read and write interests are one epoll registration).
//!   Sockets are written with `MSG_NOSIGNAL`; a pipe write's `SIGPIPE` is discarded.
//! - A pidfd is lent as a duplicate (`F_DUPFD_CLOEXEC`), closed by the loop after use; at
//!   most `MAX_LENT` per turn of the loop, so a kill-all does not fill the fd table.
//! - Directories are not removed here ([`Driver::remove_dir`] hands them back).

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::epoll;
use slab::Slab;

use super::uring::MAX_LENT;
use super::{
    Completion, Driver, DriverStats, FdRole, Handle, Outcome, ReadBytes, ReadEnd, WriteBuf,
};
use crate::pool::BackendKind;
use crate::sys::spawn;
use crate::worker::buffers::BufferPool;

/// Bytes read from a stream in one `read(2)`, as io_uring's provided buffers.
pub(crate) const READ_SIZE: usize = 16 * 1024;
/// Reads of one stream per wake-up, at most.
pub(crate) const READS_PER_WAKEUP: usize = 1;
/// Bytes read in one wait, at most (the io_uring driver's provided buffers hold as much).
pub(crate) const READ_PER_WAIT: usize = 4 << 20;
/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;
/// The epoll token of the wake-up eventfd (slab keys are far below it).
const WAKE_TOKEN: u64 = u64::MAX;

/// What an adopted descriptor has armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    Nothing,
    Exit(u64),
    Read(u64),
    Priority(u64),
}

/// A write waiting for `EPOLLOUT`.
struct PendingWrite {
    tag: u64,
    buf: WriteBuf,
    socket: bool,
}

struct Entry {
    fd: OwnedFd,
    role: FdRole,
    armed: Armed,
    write: Option<PendingWrite>,
    /// The interest registered in the epoll set (`None`: not in the set).
    registered: Option<epoll::EventFlags>,
}

/// A task's stdin and channel ends stay in the process fd table for the task's life, guarded
/// so that a child stuck before exec never holds them (`sys::spawn::guarded`); the mark goes
/// with the fd.
impl Drop for Entry {
    fn drop(&mut self) {
        spawn::unguard(self.fd.as_raw_fd());
    }
}

impl Entry {
    /// The interest the armed operations need.
    fn interest(&self) -> epoll::EventFlags {
        let mut flags = match self.armed {
            Armed::Nothing => epoll::EventFlags::empty(),
            Armed::Exit(_) | Armed::Read(_) => epoll::EventFlags::IN,
            Armed::Priority(_) => epoll::EventFlags::PRI | epoll::EventFlags::ERR,
        };
        if self.write.is_some() {
            flags |= epoll::EventFlags::OUT;
        }
        flags
    }
}

pub(crate) struct EpollDriver {
    epoll: OwnedFd,
    /// The worker's eventfd, shared with the threads that wake it.
    wake: Arc<OwnedFd>,
    entries: Slab<Entry>,
    /// The descriptor each armed operation's `user_data` names (for `cancel`).
    by_tag: HashMap<u64, Handle>,
    /// Descriptors the driver may still adopt (the process fd table is shared with the
    /// rest of the program: this is the pool's share).
    budget: usize,
    events: Vec<epoll::Event>,
    /// Read buffers: each read goes straight into one, which becomes the chunk's bytes.
    buffers: Arc<BufferPool>,
    /// Completions made without waiting (lent pidfds, cancellations), handed out by the
    /// next `wait`, which then does not sleep.
    ready: VecDeque<Completion>,
    /// Lend requests beyond [`MAX_LENT`] in this turn: (pidfd handle, user_data).
    lend_queue: VecDeque<(Handle, u64)>,
    /// Duplicates lent since the last `wait` (the loop closes each before it waits again).
    lent_now: u64,
    /// Bytes read in the current wait ([`READ_PER_WAIT`]).
    read_this_wait: usize,
    stats: DriverStats,
}

impl EpollDriver {
    /// A driver that adopts at most `budget` descriptors, woken through `wake` (an eventfd).
    pub(crate) fn new(
        budget: usize,
        wake: Arc<OwnedFd>,
        buffers: Arc<BufferPool>,
    ) -> io::Result<EpollDriver> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            &*wake,
            epoll::EventData::new_u64(WAKE_TOKEN),
            epoll::EventFlags::IN,
        )?;
        Ok(EpollDriver {
            epoll,
            wake,
            entries: Slab::new(),
            by_tag: HashMap::new(),
            budget,
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            buffers,
            ready: VecDeque::new(),
            lend_queue: VecDeque::new(),
            lent_now: 0,
            read_this_wait: 0,
            stats: DriverStats::default(),
        })
    }

    /// Arms `handle` for `armed` (it must have nothing armed).
    fn arm(&mut self, handle: Handle, armed: Armed) {
        let tag = match armed {
            Armed::Exit(t) | Armed::Read(t) | Armed::Priority(t) => t,
            Armed::Nothing => return,
        };
        let Some(entry) = self.entries.get_mut(handle as usize) else {
            tracing::error!(handle, "operation on a descriptor that is not adopted");
            self.ready.push_back(Completion {
                user_data: tag,
                outcome: failure(armed, libc::EBADF),
            });
            return;
        };
        if entry.armed != Armed::Nothing {
            tracing::error!(
                handle,
                "a second operation on a descriptor that has one armed"
            );
            self.ready.push_back(Completion {
                user_data: tag,
                outcome: failure(armed, libc::EBUSY),
            });
            return;
        }
        entry.armed = armed;
        match self.sync(handle) {
            Ok(()) => {
                self.by_tag.insert(tag, handle);
            }
            Err(errno) => {
                if let Some(entry) = self.entries.get_mut(handle as usize) {
                    entry.armed = Armed::Nothing;
                }
                let _ = self.sync(handle);
                self.ready.push_back(Completion {
                    user_data: tag,
                    outcome: failure(armed, errno),
                });
            }
        }
    }

    /// Makes the epoll registration of `handle` match what it has armed.
    fn sync(&mut self, handle: Handle) -> Result<(), i32> {
        let Some(entry) = self.entries.get_mut(handle as usize) else {
            return Ok(());
        };
        let want = entry.interest();
        let data = epoll::EventData::new_u64(u64::from(handle));
        let result = match entry.registered {
            None if want.is_empty() => Ok(()),
            None => epoll::add(&self.epoll, &entry.fd, data, want),
            Some(_) if want.is_empty() => epoll::delete(&self.epoll, &entry.fd),
            Some(had) if had == want => Ok(()),
            Some(_) => epoll::modify(&self.epoll, &entry.fd, data, want),
        };
        match result {
            Ok(()) => {
                entry.registered = (!want.is_empty()).then_some(want);
                Ok(())
            }
            Err(e) => Err(e.raw_os_error()),
        }
    }

    /// Ends what `handle` has armed (not its write); returns it.
    fn disarm(&mut self, handle: Handle) -> Armed {
        let Some(entry) = self.entries.get_mut(handle as usize) else {
            return Armed::Nothing;
        };
        let armed = std::mem::replace(&mut entry.armed, Armed::Nothing);
        if armed != Armed::Nothing {
            if let Armed::Exit(t) | Armed::Read(t) | Armed::Priority(t) = armed {
                self.by_tag.remove(&t);
            }
            // Fails only if the fd is not in the set, which `armed` rules out.
            let _ = self.sync(handle);
        }
        armed
    }

    /// Ends `handle`'s pending write; returns it.
    fn take_write(&mut self, handle: Handle) -> Option<PendingWrite> {
        let pending = self.entries.get_mut(handle as usize)?.write.take()?;
        self.by_tag.remove(&pending.tag);
        let _ = self.sync(handle);
        Some(pending)
    }

    /// Writes what `pending` holds, as much as the descriptor takes now.
    fn try_write(fd: &OwnedFd, pending: &PendingWrite) -> Result<usize, rustix::io::Errno> {
        loop {
            let bytes = pending.buf.remaining();
            let result = if pending.socket {
                rustix::net::send(fd, bytes, rustix::net::SendFlags::NOSIGNAL)
            } else {
                rustix::io::write(fd, bytes)
            };
            match result {
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::PIPE) if !pending.socket => {
                    crate::sys::signals::discard_sigpipe();
                    return Err(rustix::io::Errno::PIPE);
                }
                other => return other,
            }
        }
    }

    /// `handle` is writable: the pending write goes as far as it can.
    fn write_ready(&mut self, handle: Handle, out: &mut Vec<Completion>) {
        let Some(entry) = self.entries.get(handle as usize) else {
            return;
        };
        let Some(pending) = &entry.write else {
            return;
        };
        let result = Self::try_write(&entry.fd, pending);
        if result == Err(rustix::io::Errno::AGAIN) {
            return;
        }
        if let Some(pending) = self.take_write(handle) {
            out.push(Completion {
                user_data: pending.tag,
                outcome: Outcome::Written {
                    buf: pending.buf,
                    result: result.map_err(|e| e.raw_os_error()),
                },
            });
        }
    }

    /// A readiness event on `handle`.
    fn ready_event(&mut self, handle: Handle, flags: epoll::EventFlags, out: &mut Vec<Completion>) {
        let Some(entry) = self.entries.get(handle as usize) else {
            return;
        };
        let writable = epoll::EventFlags::OUT | epoll::EventFlags::ERR | epoll::EventFlags::HUP;
        if entry.write.is_some() && flags.intersects(writable) {
            self.write_ready(handle, out);
        }
        let Some(entry) = self.entries.get(handle as usize) else {
            return;
        };
        let readable = epoll::EventFlags::IN
            | epoll::EventFlags::PRI
            | epoll::EventFlags::ERR
            | epoll::EventFlags::HUP;
        if !flags.intersects(readable) {
            return;
        }
        match entry.armed {
            Armed::Nothing => {}
            Armed::Exit(tag) => {
                self.disarm(handle);
                out.push(Completion {
                    user_data: tag,
                    outcome: Outcome::Exit,
                });
            }
            Armed::Priority(tag) => {
                self.disarm(handle);
                out.push(Completion {
                    user_data: tag,
                    outcome: Outcome::Priority(Ok(())),
                });
            }
            Armed::Read(tag) => self.read_ready(handle, tag, out),
        }
    }

    fn read_ready(&mut self, handle: Handle, tag: u64, out: &mut Vec<Completion>) {
        for _ in 0..READS_PER_WAKEUP {
            if self.read_this_wait >= READ_PER_WAIT {
                // Still ready (level-triggered): read again after the loop's turn.
                return;
            }
            let Some(entry) = self.entries.get(handle as usize) else {
                return;
            };
            let mut buf = self.buffers.empty();
            match rustix::io::read(&entry.fd, rustix::buffer::spare_capacity(&mut buf)) {
                Ok(0) => {
                    self.buffers.give_back(buf);
                    self.disarm(handle);
                    out.push(Completion {
                        user_data: tag,
                        outcome: Outcome::ReadEnd(ReadEnd::Eof),
                    });
                    return;
                }
                Ok(n) => {
                    self.read_this_wait += n;
                    out.push(Completion {
                        user_data: tag,
                        outcome: Outcome::Data {
                            bytes: ReadBytes::Owned(buf),
                            more: true,
                        },
                    })
                }
                Err(rustix::io::Errno::AGAIN) => {
                    self.buffers.give_back(buf);
                    return;
                }
                Err(rustix::io::Errno::INTR) => {
                    self.buffers.give_back(buf);
                    continue;
                }
                Err(e) => {
                    self.buffers.give_back(buf);
                    self.disarm(handle);
                    out.push(Completion {
                        user_data: tag,
                        outcome: Outcome::ReadEnd(ReadEnd::Error(e.raw_os_error())),
                    });
                    return;
                }
            }
        }
        // Budget spent: the stream stays armed (level-triggered) and is read again on the
        // next wake-up, after the other ready streams had their turn.
    }
}

impl EpollDriver {
    /// Lends queued pidfds (as duplicates) while fewer than [`MAX_LENT`] were lent since the
    /// last `wait`: whatever the number of tasks signalled or reaped at once, the process fd
    /// table holds at most that many duplicates.
    fn pump_lends(&mut self) {
        while self.lent_now < MAX_LENT as u64 {
            let Some((pidfd, user_data)) = self.lend_queue.pop_front() else {
                return;
            };
            let result = match self.entries.get(pidfd as usize) {
                Some(entry) if entry.role == FdRole::Pidfd => entry
                    .fd
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
                _ => Err(libc::EBADF),
            };
            if result.is_ok() {
                self.lent_now += 1;
                self.stats.lent_pidfds_peak = self.stats.lent_pidfds_peak.max(self.lent_now);
            }
            self.ready.push_back(Completion {
                user_data,
                outcome: Outcome::Pidfd(result),
            });
        }
    }
}

/// The completion of an operation that could not even be armed.
fn failure(armed: Armed, errno: i32) -> Outcome {
    match armed {
        Armed::Read(_) => Outcome::ReadEnd(ReadEnd::Error(errno)),
        Armed::Priority(_) => Outcome::Priority(Err(errno)),
        // A pidfd that cannot be watched: report the exit; the reap then tells the truth
        // (a process still running is watched again).
        Armed::Exit(_) | Armed::Nothing => Outcome::Exit,
    }
}

impl Driver for EpollDriver {
    fn kind(&self) -> BackendKind {
        BackendKind::Epoll
    }

    fn has_room(&self, n: usize) -> bool {
        self.entries.len() + n <= self.budget
    }

    fn adopt(&mut self, fd: OwnedFd, role: FdRole) -> io::Result<Handle> {
        // Refused, the fd closes here: no mark may outlive it (see `Entry`'s drop).
        let refuse = |fd: OwnedFd, e: io::Error| {
            spawn::unguard(fd.as_raw_fd());
            Err(e)
        };
        if self.entries.len() >= self.budget {
            return refuse(fd, io::Error::from_raw_os_error(libc::EMFILE));
        }
        if matches!(role, FdRole::Stream | FdRole::Channel) {
            let set = rustix::fs::fcntl_getfl(&fd).and_then(|flags| {
                rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)
            });
            if let Err(e) = set {
                return refuse(fd, e.into());
            }
        }
        let key = self.entries.insert(Entry {
            fd,
            role,
            armed: Armed::Nothing,
            write: None,
            registered: None,
        });
        Handle::try_from(key).map_err(|_| {
            self.entries.remove(key);
            io::Error::from_raw_os_error(libc::EMFILE)
        })
    }

    fn release(&mut self, handle: Handle) {
        self.disarm(handle);
        self.take_write(handle);
        if let Some(entry) = self.entries.get(handle as usize) {
            if entry.registered.is_some() {
                let _ = epoll::delete(&self.epoll, &entry.fd);
            }
        }
        if self.entries.contains(handle as usize) {
            // Dropping the entry closes the descriptor.
            self.entries.remove(handle as usize);
        }
    }

    fn watch_exit(&mut self, pidfd: Handle, user_data: u64) {
        self.arm(pidfd, Armed::Exit(user_data));
    }

    fn lend_pidfd(&mut self, pidfd: Handle, user_data: u64) {
        self.lend_queue.push_back((pidfd, user_data));
        self.pump_lends();
    }

    fn read(&mut self, stream: Handle, user_data: u64) {
        self.arm(stream, Armed::Read(user_data));
    }

    fn data<'a>(&'a self, bytes: &'a ReadBytes) -> &'a [u8] {
        match bytes {
            ReadBytes::Owned(v) => v,
            // This driver never lends its buffer.
            ReadBytes::Lent { .. } => &[],
        }
    }

    fn write(&mut self, stream: Handle, buf: WriteBuf, socket: bool, user_data: u64) {
        let Some(entry) = self.entries.get_mut(stream as usize) else {
            self.ready.push_back(Completion {
                user_data,
                outcome: Outcome::Written {
                    buf,
                    result: Err(libc::EBADF),
                },
            });
            return;
        };
        if entry.write.is_some() {
            tracing::error!(
                stream,
                "a second write on a descriptor that has one pending"
            );
            self.ready.push_back(Completion {
                user_data,
                outcome: Outcome::Written {
                    buf,
                    result: Err(libc::EBUSY),
                },
            });
            return;
        }
        let pending = PendingWrite {
            tag: user_data,
            buf,
            socket,
        };
        match Self::try_write(&entry.fd, &pending) {
            Err(rustix::io::Errno::AGAIN) => {
                entry.write = Some(pending);
                match self.sync(stream) {
                    Ok(()) => {
                        self.by_tag.insert(user_data, stream);
                    }
                    Err(errno) => {
                        if let Some(pending) = self.take_write(stream) {
                            self.ready.push_back(Completion {
                                user_data,
                                outcome: Outcome::Written {
                                    buf: pending.buf,
                                    result: Err(errno),
                                },
                            });
                        }
                    }
                }
            }
            result => self.ready.push_back(Completion {
                user_data,
                outcome: Outcome::Written {
                    buf: pending.buf,
                    result: result.map_err(|e| e.raw_os_error()),
                },
            }),
        }
    }

    fn watch_priority(&mut self, fd: Handle, user_data: u64) {
        self.arm(fd, Armed::Priority(user_data));
    }

    fn cancel(&mut self, target: u64) {
        let Some(&handle) = self.by_tag.get(&target) else {
            // Not armed: it already ended (its end is on its way) or never was.
            return;
        };
        if self
            .entries
            .get(handle as usize)
            .and_then(|e| e.write.as_ref())
            .is_some_and(|w| w.tag == target)
        {
            if let Some(pending) = self.take_write(handle) {
                self.ready.push_back(Completion {
                    user_data: target,
                    outcome: Outcome::Written {
                        buf: pending.buf,
                        result: Err(libc::ECANCELED),
                    },
                });
            }
            return;
        }
        let outcome = match self.disarm(handle) {
            Armed::Read(_) => Outcome::ReadEnd(ReadEnd::Cancelled),
            Armed::Priority(_) => Outcome::Priority(Err(libc::ECANCELED)),
            // The loop never cancels an exit watch; if it did, the watch just stays.
            Armed::Exit(t) => {
                self.arm(handle, Armed::Exit(t));
                return;
            }
            Armed::Nothing => return,
        };
        self.ready.push_back(Completion {
            user_data: target,
            outcome,
        });
    }

    fn remove_dir(&mut self, path: CString, _user_data: u64) -> Result<(), CString> {
        Err(path)
    }

    fn dirs_in_flight(&self) -> usize {
        0
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        // Lent pidfds of the previous batch were closed by the loop by now.
        self.lent_now = 0;
        self.pump_lends();
        self.read_this_wait = 0;
        let timeout = if self.ready.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let ts = timeout.map(|t| rustix::event::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        self.events.clear();
        match epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut self.events),
            ts.as_ref(),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        out.extend(self.ready.drain(..));
        let events = std::mem::take(&mut self.events);
        for event in &events {
            let token = event.data.u64();
            if token == WAKE_TOKEN {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(&*self.wake, &mut counter);
                continue;
            }
            if let Ok(handle) = Handle::try_from(token) {
                self.ready_event(handle, event.flags, out);
            }
        }
        self.events = events;
        Ok(())
    }

    fn stats(&self) -> DriverStats {
        self.stats
    }
}
