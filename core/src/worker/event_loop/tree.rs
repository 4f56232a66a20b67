//! The task's process tree: carrying out its watch (`super::super::tree_watch`) and the
//! signals the machine sends it.

use std::os::fd::BorrowedFd;

use super::*;
use crate::task::Op;
use crate::worker::driver::FdRole;
use crate::worker::tree_watch::{Checked, Report, Step};

impl<D: Driver> Worker<D> {
    /// Carries out one step of a task's tree watch.
    pub(super) fn watch_step(&mut self, key: usize, step: Step) {
        match step {
            Step::Nothing => {}
            Step::CheckNow => {
                let found = self.check_cgroup(key);
                let step = self.tasks[key].watch.checked(self.watch_mode, found);
                // `checked` never asks for another immediate check: this recursion is one deep.
                self.watch_step(key, step);
            }
            Step::LendProbe => self.lend(key, PidfdUse::Probe),
            Step::ArmPoll => {
                let task = &self.tasks[key];
                match task.tree_events {
                    Some(handle) => {
                        let user_data = task.tag(key, OpTag::TreeWatch);
                        self.driver.watch_priority(handle, user_data);
                    }
                    None => {
                        // `check_cgroup` found it populated, so it opened the file: a bug.
                        tracing::error!(task = %task.id, "tree watch without cgroup.events");
                        let step = self.tasks[key].watch.poll_ended(Err(libc::EBADF));
                        self.watch_step(key, step);
                    }
                }
            }
            Step::CancelPoll => {
                let task = &self.tasks[key];
                self.driver.cancel(task.tag(key, OpTag::TreeWatch));
            }
            Step::Sleep => {
                let task = &mut self.tasks[key];
                let at = Instant::now() + task.probe_delay;
                task.probe_delay = (task.probe_delay * 2).min(PROBE_MAX_DELAY);
                self.timers.set(
                    key as u32,
                    &mut task.wakeups,
                    WakeKind::WatchSleep,
                    Some(at),
                );
            }
            Step::Report(report) => {
                let task = &mut self.tasks[key];
                task.probe_delay = PROBE_FIRST_DELAY;
                if let Some(handle) = task.tree_events.take() {
                    self.driver.release(handle);
                }
                let input = match report {
                    Report::Empty => Input::TreeEmpty,
                    Report::Occupied => Input::TreeOccupied,
                    Report::Cancelled => Input::Cancelled(Op::TreeWatch),
                };
                self.later(key, input);
            }
        }
    }

    /// cgroup mode: opens a fresh `cgroup.events` (releasing the one a fired watch used),
    /// then reads through it whether the tree is populated. Opening first means a change
    /// after the read still wakes the watch armed on that file.
    fn check_cgroup(&mut self, key: usize) -> Checked {
        let task = &mut self.tasks[key];
        if let Some(handle) = task.tree_events.take() {
            self.driver.release(handle);
        }
        let Some(tree) = task.tree.as_ref() else {
            return Checked::Empty;
        };
        let events = match tree.open_events() {
            Ok(Some(fd)) => fd,
            Ok(None) => return Checked::Failed,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "cannot open cgroup.events");
                return Checked::Failed;
            }
        };
        match tree.populated_from(std::os::fd::AsFd::as_fd(&events)) {
            Ok(false) => return Checked::Empty,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "cannot read the tree's state");
                return Checked::Failed;
            }
        }
        match self.driver.adopt(events, FdRole::Events) {
            Ok(handle) => {
                self.tasks[key].tree_events = Some(handle);
                Checked::Populated
            }
            Err(e) => {
                tracing::warn!(task = %self.tasks[key].id, error = %e, "cannot watch the tree");
                Checked::Failed
            }
        }
    }

    /// Process-group mode: whether anyone is left in the group, asked through the leader's
    /// pidfd.
    pub(super) fn probe_tree(&mut self, key: usize, leader: BorrowedFd<'_>) -> Checked {
        let task = &self.tasks[key];
        let Some(tree) = task.tree.as_ref() else {
            return Checked::Empty;
        };
        match tree.is_populated(Some(leader)) {
            Ok(true) => Checked::Populated,
            Ok(false) => Checked::Empty,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "cannot probe the process group");
                Checked::Failed
            }
        }
    }

    /// Signals the tree: at once where the tree's containment does not need the leader's
    /// pidfd (cgroup mode), else through a lent pidfd.
    pub(super) fn signal_tree_now_or_lend(&mut self, key: usize, signal: u8) {
        let needs_leader = self.tasks[key]
            .tree
            .as_ref()
            .is_some_and(|tree| tree.needs_leader());
        if needs_leader {
            self.lend(key, PidfdUse::SignalTree(signal));
        } else {
            self.signal_tree(key, None, i32::from(signal));
        }
    }

    pub(super) fn signal_tree(&mut self, key: usize, leader: Option<BorrowedFd<'_>>, signal: i32) {
        let task = &mut self.tasks[key];
        let Some(tree) = task.tree.as_ref() else {
            return;
        };
        match tree.signal_tree(leader, signal) {
            Ok(count) => {
                let main_alive = !task.reaped;
                let descendants = count.saturating_sub(u64::from(main_alive));
                task.descendants_killed = task.descendants_killed.max(descendants);
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => tracing::warn!(task = %task.id, signal, error = %e, "tree signal failed"),
        }
    }
}
