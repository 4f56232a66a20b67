//! Carrying out what the machines decide: driver operations, events, release.

use super::*;
use crate::task::{Action, Notice, Op};

impl<D: Driver> Worker<D> {
    /// Counts a rejected input, then carries out whatever the machine now wants.
    pub(super) fn after_input(&mut self, key: usize, result: Result<(), Rejected>) {
        if let Err(rejected) = result {
            self.count_rejected(key, rejected);
        }
        if self.tasks.contains(key) {
            self.drive(key);
        }
    }

    pub(super) fn drive(&mut self, key: usize) {
        let mut release = false;
        while let Some(action) = self.tasks[key].machine.poll_action() {
            self.act(key, action, &mut release);
        }
        if release {
            self.release(key);
            return;
        }
        let task = &mut self.tasks[key];
        let deadline = task.machine.poll_timeout();
        self.timers
            .set(key as u32, &mut task.wakeups, WakeKind::Machine, deadline);
    }

    fn act(&mut self, key: usize, action: Action, release: &mut bool) {
        let task = &mut self.tasks[key];
        match action {
            Action::SubmitRead(stream) => self.submit_read(key, stream),
            // Flow control and the end of a stream both end the read op early; the machine
            // tells the two apart when the op ends.
            Action::StopRead(stream) | Action::Cancel(Op::Read(stream)) => {
                let user_data = task.tag(key, OpTag::Read(stream.0));
                self.driver.cancel(user_data);
            }
            Action::SubmitWrite(stream) => self.submit_write(key, stream),
            Action::Cancel(Op::Write(stream)) => {
                let user_data = task.tag(key, OpTag::Write(stream.0));
                self.driver.cancel(user_data);
            }
            Action::SubmitWait => {
                let user_data = task.tag(key, OpTag::Exit);
                self.driver.watch_exit(task.pidfd, user_data);
            }
            Action::WatchTree => {
                let step = task.watch.start(self.watch_mode);
                self.watch_step(key, step);
            }
            Action::SignalMain(signal) => {
                if let Some(signal) = signal_byte(signal) {
                    self.lend(key, PidfdUse::SignalMain(signal));
                }
            }
            Action::SignalTree(signal) => {
                if let Some(signal) = signal_byte(signal) {
                    self.signal_tree_now_or_lend(key, signal);
                }
            }
            Action::Cancel(Op::TreeWatch) => {
                let step = task.watch.cancel();
                self.watch_step(key, step);
            }
            // The wait ends only with the process: it is never cancelled.
            Action::Cancel(Op::Wait) => {}
            Action::Close(stream) => self.close_stream(key, stream),
            Action::Emit(Notice::Exited(status)) => {
                let event = Event::Exited {
                    task: task.id,
                    status,
                };
                self.deliver(event);
            }
            Action::Emit(Notice::Done(mut outcome)) => {
                outcome.descendants_killed = task.descendants_killed;
                let event = Event::Done {
                    task: task.id,
                    outcome,
                };
                self.deliver(event);
            }
            Action::Release => *release = true,
        }
    }

    pub(super) fn deliver(&mut self, event: Event) {
        if !self.sink.deliver(event, &self.shared.counters) {
            self.sink_gone = true;
        }
    }

    pub(super) fn submit_read(&mut self, key: usize, stream: StreamId) {
        let task = &mut self.tasks[key];
        let user_data = task.tag(key, OpTag::Read(stream.0));
        let Some(s) = task.stream(stream) else {
            return;
        };
        let handle = s.handle;
        self.driver.read(handle, user_data);
    }

    /// The machine's terminal transition: everything of the task goes, once.
    pub(super) fn release(&mut self, key: usize) {
        let mut task = self.tasks.remove(key);
        self.generations[key] = self.generations[key].wrapping_add(1);
        self.shared.counters.live.fetch_sub(1, Ordering::Relaxed);
        self.timers.clear(key as u32, &mut task.wakeups);
        for s in &task.streams {
            // The machine closes every stream before Release; this only guards a bug.
            tracing::error!(task = %task.id, handle = s.handle, "stream still open at release");
            self.driver.release(s.handle);
        }
        self.driver.release(task.pidfd);
        if let Some(handle) = task.tree_events.take() {
            tracing::error!(task = %task.id, "tree watch still open at release");
            self.driver.release(handle);
        }
        if let Some(orphans) = &self.orphans {
            orphans.task_released(task.pid);
            // Its escapers may be killed now.
            self.orphans_pending = true;
        }
        if let Some(tree) = task.tree {
            self.remove_cgroup(task.id, tree);
        }
        tracing::trace!(task = %task.id, slot = key, "released");
    }
}
