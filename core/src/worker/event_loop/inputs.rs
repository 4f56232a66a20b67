//! What feeds the machines: due wake-ups and driver completions.

use std::os::fd::{AsFd, OwnedFd};

use super::*;
use crate::sys::pidfd;
use crate::task::{ExitStatus, Op};
use crate::worker::driver::{Outcome, ReadEnd};
use crate::worker::tree_watch::Checked;
use crate::worker::user_data::unpack;

impl<D: Driver> Worker<D> {
    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((slot, kind)) = self.timers.pop_due(now) {
            let key = slot as usize;
            let Some(task) = self.tasks.get_mut(key) else {
                // Wake-ups are removed at release; this only guards a bug.
                tracing::error!(slot, ?kind, "wake-up for a released task");
                continue;
            };
            Timers::fired(&mut task.wakeups, kind);
            let span = task.span.clone();
            let _entered = span.enter();
            match kind {
                WakeKind::Machine => self.input(key, Input::Timeout),
                WakeKind::WatchSleep => {
                    let step = task.watch.sleep_over();
                    self.watch_step(key, step);
                }
                WakeKind::Retry => {
                    for pidfd_use in std::mem::take(&mut task.retries) {
                        self.lend(key, pidfd_use);
                    }
                }
            }
        }
    }

    // ---- completions ----------------------------------------------------------------

    pub(super) fn complete(&mut self, completion: Completion) {
        let Some(tag) = unpack(completion.user_data) else {
            tracing::warn!(
                user_data = completion.user_data,
                "completion with an unknown tag"
            );
            return;
        };
        if let Outcome::Removed(path, result) = completion.outcome {
            self.removed(path, result);
            return;
        }
        let key = tag.slot as usize;
        if self
            .tasks
            .get(key)
            .is_none_or(|task| task.generation != tag.generation)
        {
            // It outlived its task (or the slot's new task): dropping it closes a lent pidfd
            // and frees its bytes.
            self.shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let span = self.tasks[key].span.clone();
        let _entered = span.enter();
        let now = Instant::now();
        match (tag.op, completion.outcome) {
            (OpTag::Read(stream), outcome) => {
                let result = self.complete_read(key, StreamId(stream), outcome, now);
                self.after_input(key, result);
            }
            (OpTag::Write(stream), outcome) => {
                let result = self.write_done(key, StreamId(stream), outcome, now);
                self.after_input(key, result);
            }
            // The pidfd is readable: the process exited. Reap it through a lent pidfd.
            (OpTag::Exit, _) => self.lend(key, PidfdUse::Reap),
            (OpTag::Pidfd(pidfd_use), Outcome::Pidfd(Ok(fd))) => self.use_pidfd(key, pidfd_use, fd),
            (OpTag::Pidfd(pidfd_use), Outcome::Pidfd(Err(errno))) => {
                self.lend_failed(key, pidfd_use, errno)
            }
            (OpTag::TreeWatch, Outcome::Priority(result)) => {
                let step = self.tasks[key].watch.poll_ended(result);
                self.watch_step(key, step);
            }
            (op, outcome) => {
                tracing::error!(?op, ?outcome, "completion does not match its operation");
            }
        }
    }

    fn complete_read(
        &mut self,
        key: usize,
        stream: StreamId,
        outcome: Outcome,
        now: Instant,
    ) -> Result<(), Rejected> {
        match outcome {
            Outcome::Data { bytes, more } => self.data_read(key, stream, bytes, more, now),
            Outcome::ReadEnd(end) => {
                let task = &mut self.tasks[key];
                let Some(slot) = task.stream(stream) else {
                    return Err(Rejected::UnknownStream(stream));
                };
                if let ReadEnd::Error(errno) = end {
                    slot.read_error = Some(errno);
                }
                let machine = &mut task.machine;
                match end {
                    ReadEnd::Eof => machine.handle_eof(stream, now),
                    ReadEnd::Stopped => machine.handle_read_stopped(stream, now),
                    // The machine knows whether it stopped the read (flow control) or
                    // cancelled it for good.
                    ReadEnd::Cancelled => machine.handle_cancelled(Op::Read(stream), now),
                    ReadEnd::Error(errno) => machine.handle_io_error(stream, errno, now),
                }
            }
            other => {
                tracing::error!(?other, "read completion without data or end");
                Ok(())
            }
        }
    }

    /// Asks the driver for the task's pidfd, for one use.
    pub(super) fn lend(&mut self, key: usize, pidfd_use: PidfdUse) {
        let task = &self.tasks[key];
        let user_data = task.tag(key, OpTag::Pidfd(pidfd_use));
        self.driver.lend_pidfd(task.pidfd, user_data);
    }

    /// No pidfd could be lent (`EMFILE` when the process fd table is full, an io_uring
    /// without `FIXED_FD_INSTALL`): the use is tried again after a backoff, for as long as
    /// the task lives. A probe goes back to its watch, which sleeps and probes again.
    fn lend_failed(&mut self, key: usize, pidfd_use: PidfdUse, errno: i32) {
        self.shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        let task = &mut self.tasks[key];
        tracing::warn!(task = %task.id, ?pidfd_use, errno, "cannot lend the pidfd; trying again");
        if pidfd_use == PidfdUse::Probe {
            let step = task.watch.checked(self.watch_mode, Checked::Failed);
            self.watch_step(key, step);
            return;
        }
        if !task.retries.contains(&pidfd_use) {
            task.retries.push(pidfd_use);
        }
        let at = Instant::now() + task.retry_delay;
        task.retry_delay = (task.retry_delay * 2).min(RETRY_MAX_DELAY);
        self.timers
            .set(key as u32, &mut task.wakeups, WakeKind::Retry, Some(at));
    }

    fn use_pidfd(&mut self, key: usize, pidfd_use: PidfdUse, fd: OwnedFd) {
        self.tasks[key].retry_delay = RETRY_FIRST_DELAY;
        match pidfd_use {
            PidfdUse::Reap => self.reap(key, &fd),
            PidfdUse::SignalMain(signal) => {
                if self.tasks[key].reaped {
                    return;
                }
                if let Err(e) = pidfd::send_signal(fd.as_fd(), i32::from(signal), false) {
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        tracing::warn!(task = %self.tasks[key].id, signal, error = %e, "signal failed");
                    }
                }
            }
            PidfdUse::SignalTree(signal) => {
                self.signal_tree(key, Some(fd.as_fd()), i32::from(signal))
            }
            PidfdUse::Probe => {
                let found = self.probe_tree(key, fd.as_fd());
                let step = self.tasks[key].watch.checked(self.watch_mode, found);
                self.watch_step(key, step);
            }
        }
        // `fd` closes here: the process fd table holds lent pidfds only for this long.
    }

    fn reap(&mut self, key: usize, fd: &OwnedFd) {
        let now = Instant::now();
        match pidfd::reap(fd.as_fd()) {
            Ok(Some(status)) => self.exited(key, status, now),
            Ok(None) => {
                // Readable but not exited yet (it cannot happen; be safe): watch again.
                let task = &self.tasks[key];
                let user_data = task.tag(key, OpTag::Exit);
                self.driver.watch_exit(task.pidfd, user_data);
            }
            Err(e) => {
                tracing::warn!(task = %self.tasks[key].id, error = %e, "reap failed; exit status unknown");
                self.exited(key, ExitStatus::Unknown, now)
            }
        }
    }

    fn exited(&mut self, key: usize, status: ExitStatus, now: Instant) {
        let pid = self.tasks[key].pid;
        self.tasks[key].reaped = true;
        self.forget_runner(pid);
        // A runner's death may orphan its descendants: look soon, not on every exit.
        self.orphans_pending = true;
        let result = self.tasks[key].machine.handle_process_exited(status, now);
        self.after_input(key, result);
    }
}
