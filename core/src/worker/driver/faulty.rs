//! A fault-injecting driver for tests: it runs the real worker loop on a real driver and
//! makes that driver's rare outcomes happen on demand, so they are ordinary test cases:
//! a pidfd that cannot be lent (`EMFILE`), a cancellation that loses its race with the
//! operation's own end, completions replayed after their task was released (a reused slot),
//! duplicated completions.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::{Completion, Driver, DriverStats, FdRole, Handle, Outcome, ReadBytes, WriteBuf};
use crate::pool::BackendKind;
use crate::worker::user_data::{unpack, OpTag};

/// What to break, shared with the test that watches the counters.
#[derive(Default, Debug)]
pub(crate) struct Faults {
    /// The next this many `lend_pidfd` calls fail with `EMFILE`.
    pub(crate) failing_lends: AtomicUsize,
    /// Every `cancel` of a tree watch loses its race: the watch "fires" first.
    pub(crate) cancels_lose_race: std::sync::atomic::AtomicBool,
    /// Tree-watch notifications are lost (the loop must still end the watch, by its
    /// timeout and a cancellation).
    pub(crate) swallow_notifications: std::sync::atomic::AtomicBool,
    /// Every exit and end-of-file completion is delivered again, once right away (a
    /// duplicate) and once several waits later (after its task's release: a stale one).
    pub(crate) replay: std::sync::atomic::AtomicBool,
    /// Counts of what was injected.
    pub(crate) lends_failed: AtomicU64,
    pub(crate) races_lost: AtomicU64,
    pub(crate) replayed: AtomicU64,
}

pub(crate) struct Faulty<D> {
    inner: D,
    faults: std::sync::Arc<Faults>,
    /// Completions made here, handed out by the next `wait`.
    injected: VecDeque<Completion>,
    /// Replays due after this many more waits: (waits left, completion).
    delayed: VecDeque<(u32, Completion)>,
    watches: std::collections::HashSet<u64>,
}

impl<D: Driver> Faulty<D> {
    pub(crate) fn new(inner: D, faults: std::sync::Arc<Faults>) -> Self {
        Faulty {
            inner,
            faults,
            injected: VecDeque::new(),
            delayed: VecDeque::new(),
            watches: Default::default(),
        }
    }
}

/// A copy of a completion that carries no resource (exits and ends of file).
fn replayable(c: &Completion) -> Option<Completion> {
    let outcome = match &c.outcome {
        Outcome::Exit => Outcome::Exit,
        Outcome::ReadEnd(end) => Outcome::ReadEnd(*end),
        _ => return None,
    };
    Some(Completion {
        user_data: c.user_data,
        outcome,
    })
}

impl<D: Driver> Driver for Faulty<D> {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn has_room(&self, n: usize) -> bool {
        self.inner.has_room(n)
    }

    fn adopt(&mut self, fd: OwnedFd, role: FdRole) -> io::Result<Handle> {
        self.inner.adopt(fd, role)
    }

    fn release(&mut self, handle: Handle) {
        self.inner.release(handle)
    }

    fn watch_exit(&mut self, pidfd: Handle, user_data: u64) {
        self.inner.watch_exit(pidfd, user_data)
    }

    fn lend_pidfd(&mut self, pidfd: Handle, user_data: u64) {
        let failing = self
            .faults
            .failing_lends
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            self.faults.lends_failed.fetch_add(1, Ordering::Relaxed);
            self.injected.push_back(Completion {
                user_data,
                outcome: Outcome::Pidfd(Err(libc::EMFILE)),
            });
        } else {
            self.inner.lend_pidfd(pidfd, user_data)
        }
    }

    fn read(&mut self, stream: Handle, user_data: u64) {
        self.inner.read(stream, user_data)
    }

    fn data<'a>(&'a self, bytes: &'a ReadBytes) -> &'a [u8] {
        self.inner.data(bytes)
    }

    fn write(&mut self, stream: Handle, buf: WriteBuf, socket: bool, user_data: u64) {
        self.inner.write(stream, buf, socket, user_data)
    }

    fn watch_priority(&mut self, fd: Handle, user_data: u64) {
        self.watches.insert(user_data);
        self.inner.watch_priority(fd, user_data)
    }

    fn cancel(&mut self, target: u64) {
        let is_watch = unpack(target).is_some_and(|t| t.op == OpTag::TreeWatch);
        if is_watch
            && self.faults.cancels_lose_race.load(Ordering::Relaxed)
            && self.watches.remove(&target)
        {
            // The watch fired just before the cancellation reached it; the cancellation then
            // finds nothing (the inner driver's own end of the watch arrives later and must
            // be ignored by the loop).
            self.faults.races_lost.fetch_add(1, Ordering::Relaxed);
            self.injected.push_back(Completion {
                user_data: target,
                outcome: Outcome::Priority(Ok(())),
            });
        }
        self.inner.cancel(target)
    }

    fn remove_dir(&mut self, path: CString, user_data: u64) -> Result<(), CString> {
        self.inner.remove_dir(path, user_data)
    }

    fn dirs_in_flight(&self) -> usize {
        self.inner.dirs_in_flight()
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        let pending = !self.injected.is_empty() || !self.delayed.is_empty();
        let timeout = if pending {
            Some(timeout.map_or(Duration::from_millis(1), |t| {
                t.min(Duration::from_millis(1))
            }))
        } else {
            timeout
        };
        let start = out.len();
        self.inner.wait(timeout, out)?;
        let swallow = self.faults.swallow_notifications.load(Ordering::Relaxed);
        let mut i = start;
        while i < out.len() {
            let is_watch = unpack(out[i].user_data).is_some_and(|t| t.op == OpTag::TreeWatch);
            if is_watch && swallow && matches!(out[i].outcome, Outcome::Priority(Ok(()))) {
                // Still counted as armed here, so that its cancellation can lose a race.
                out.remove(i);
                continue;
            }
            if is_watch {
                self.watches.remove(&out[i].user_data);
            }
            i += 1;
        }
        if self.faults.replay.load(Ordering::Relaxed) {
            let copies: Vec<Completion> = out[start..].iter().filter_map(replayable).collect();
            for c in copies {
                self.faults.replayed.fetch_add(2, Ordering::Relaxed);
                if let Some(again) = replayable(&c) {
                    self.delayed.push_back((20, again));
                }
                self.injected.push_back(c);
            }
        }
        out.extend(self.injected.drain(..));
        for entry in self.delayed.iter_mut() {
            entry.0 = entry.0.saturating_sub(1);
        }
        while self.delayed.front().is_some_and(|(left, _)| *left == 0) {
            if let Some((_, c)) = self.delayed.pop_front() {
                out.push(c);
            }
        }
        Ok(())
    }

    fn stats(&self) -> DriverStats {
        self.inner.stats()
    }
}
