//! Carrying out what the machines decide: driver operations, events, back-pressure,
//! release.

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
            Action::SubmitRead(stream) => {
                if self.pressure.is_paused() && !task.reaped {
                    tracing::trace!(task = %task.id, stream = stream.0, "read deferred: event queue full");
                    if let Some(s) = task.stream(stream) {
                        s.deferred = true;
                    }
                    self.pressure.defer(key as u32, task.generation);
                } else {
                    self.submit_read(key, stream);
                }
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
            Action::Cancel(Op::Read(stream)) => {
                let Some(s) = task.stream(stream) else {
                    return;
                };
                if s.deferred {
                    // The read never reached the driver: its cancellation completes at once.
                    s.deferred = false;
                    self.later(key, Input::Cancelled(Op::Read(stream)));
                } else {
                    s.cancel_asked = true;
                    let user_data = task.tag(key, OpTag::Read(stream.0));
                    self.driver.cancel(user_data);
                }
            }
            Action::Cancel(Op::TreeWatch) => {
                let step = task.watch.cancel();
                self.watch_step(key, step);
            }
            // The wait ends only with the process: it is never cancelled.
            Action::Cancel(Op::Wait) => {}
            Action::Close(stream) => {
                if let Some(pos) = task.streams.iter().position(|s| s.id == stream) {
                    let handle = task.streams.swap_remove(pos).handle;
                    self.driver.release(handle);
                }
            }
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

    /// Pauses or resumes reading with the fill of the user's event queue. A pause cancels
    /// the armed reads of running tasks (their children then block on full pipes); the
    /// reads the machines then ask for again are held back until the queue drains.
    pub(super) fn check_pressure(&mut self) {
        let queued = if self.sink_gone || self.shutting_down {
            None
        } else {
            self.sink.queued()
        };
        let was_paused = self.pressure.is_paused();
        let resumed = self.pressure.update(queued);
        if !was_paused && self.pressure.is_paused() {
            for (key, task) in self.tasks.iter() {
                if task.reaped {
                    continue;
                }
                for s in task.streams.iter().filter(|s| s.armed && !s.cancel_asked) {
                    self.driver.cancel(task.tag(key, OpTag::Read(s.id.0)));
                }
            }
        }
        for (slot, generation) in resumed.into_iter().flatten() {
            let key = slot as usize;
            if self
                .tasks
                .get(key)
                .is_some_and(|t| t.generation == generation)
            {
                self.resume_reads_of(key);
            }
        }
    }

    /// Submits the reads back-pressure held for this task (the queue drained, or its
    /// process exited).
    pub(super) fn resume_reads_of(&mut self, key: usize) {
        let deferred: Vec<StreamId> = self.tasks[key]
            .streams
            .iter_mut()
            .filter_map(|s| std::mem::take(&mut s.deferred).then_some(s.id))
            .collect();
        for stream in deferred {
            self.submit_read(key, stream);
        }
    }

    pub(super) fn submit_read(&mut self, key: usize, stream: StreamId) {
        let task = &mut self.tasks[key];
        let user_data = task.tag(key, OpTag::Read(stream.0));
        let Some(s) = task.stream(stream) else {
            return;
        };
        s.armed = true;
        s.cancel_asked = false;
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
