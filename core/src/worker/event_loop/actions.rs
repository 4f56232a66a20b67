//! Carrying out what the machines decide: submissions, events, back-pressure, release.

use super::*;

impl Worker {
    /// Logs a rejected input, then carries out whatever the machine now wants.
    pub(super) fn after_input(&mut self, key: usize, result: Result<(), Rejected>) {
        if let Err(rejected) = result {
            self.shared
                .counters
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            if let Some(task) = self.tasks.get(key) {
                tracing::debug!(task = %task.id, %rejected, "machine rejected an event");
            }
        }
        if self.tasks.contains(key) {
            self.drive(key);
        }
    }

    pub(super) fn drive(&mut self, key: usize) {
        let mut release = false;
        while let Some(action) = self.tasks[key].machine.poll_action() {
            if let Err(e) = self.act(key, action, &mut release) {
                // Only a failing ring gets here; the loop will notice it on the next submit.
                tracing::error!(error = %e, "cannot submit to the ring");
            }
        }
        if release {
            self.release(key);
            return;
        }
        let task = &mut self.tasks[key];
        let deadline = task.machine.poll_timeout();
        if deadline != task.deadline {
            task.deadline = deadline;
            if let Some(deadline) = deadline {
                self.timers.insert(deadline, key as u32, task.generation);
            }
        }
    }

    pub(super) fn act(&mut self, key: usize, action: Action, release: &mut bool) -> io::Result<()> {
        let task = &mut self.tasks[key];
        let generation = task.generation;
        let tag = |op| {
            pack(Tag {
                slot: key as u32,
                generation,
                op,
            })
        };
        match action {
            Action::SubmitRead(stream) => {
                if self.pressure.is_paused() && !task.reaped {
                    tracing::trace!(task = %task.id, stream = stream.0, "read deferred: event queue full");
                    self.pressure
                        .defer_read(key as u32, task.generation, stream);
                } else {
                    self.submit_read(key, stream)?;
                }
            }
            Action::SubmitWait => {
                let user_data = tag(OpTag::Wait);
                self.ring.push(ops::poll_in_fixed(task.pidfd, user_data))?;
            }
            Action::WatchTree => {
                task.watch = Watch::Probing;
                self.push_install(key, OpTag::InstallProbe)?;
            }
            Action::SignalMain(signal) => {
                if let Some(signal) = signal_byte(signal) {
                    self.push_install(key, OpTag::InstallSignalMain(signal))?;
                }
            }
            Action::SignalTree(signal) => {
                if let Some(signal) = signal_byte(signal) {
                    self.push_install(key, OpTag::InstallSignalTree(signal))?;
                }
            }
            Action::Cancel(Op::Read(stream))
                if self
                    .pressure
                    .take_deferred(key as u32, task.generation, stream) =>
            {
                // The read never reached the kernel: its cancellation completes at once.
                let result = task
                    .machine
                    .handle_cancelled(Op::Read(stream), Instant::now());
                if let Err(rejected) = result {
                    self.shared
                        .counters
                        .rejected
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(task = %task.id, %rejected, "machine rejected an event");
                }
            }
            Action::Cancel(Op::Read(stream)) => {
                if let Some(s) = task.stream(stream) {
                    s.cancel_asked = true;
                }
                let target = tag(OpTag::Read(stream.0));
                let user_data = tag(OpTag::Cancel);
                self.ring.push(ops::cancel(target, user_data))?;
            }
            Action::Cancel(Op::TreeWatch) => match task.watch {
                Watch::Polling => {
                    let target = tag(OpTag::TreeWatch);
                    let user_data = tag(OpTag::Cancel);
                    self.ring.push(ops::cancel(target, user_data))?;
                }
                Watch::Probing => task.watch_cancel = true,
                Watch::Sleeping => {
                    // The sleeping probe wakes at once and reports the cancellation.
                    task.watch_cancel = true;
                    self.probes
                        .insert(Instant::now(), key as u32, task.generation);
                }
                Watch::Idle => {}
            },
            // The wait ends only with the process: it is never cancelled.
            Action::Cancel(Op::Wait) => {}
            Action::Close(stream) => {
                if let Some(pos) = task.streams.iter().position(|s| s.id == stream) {
                    let fixed = task.streams.swap_remove(pos).fixed;
                    self.push_close_fixed(fixed)?;
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
        Ok(())
    }

    pub(super) fn deliver(&mut self, event: Event) {
        if !self.sink.deliver(event) {
            self.sink_gone = true;
        }
    }

    /// Pauses or resumes reading with the fill of the user's event queue. A pause cancels
    /// the armed reads of running tasks (their children then block on full pipes); their
    /// re-submissions wait in the backlog of `Backpressure` until the queue drains.
    pub(super) fn check_pressure(&mut self) -> io::Result<()> {
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
                    let tag = |op| {
                        pack(Tag {
                            slot: key as u32,
                            generation: task.generation,
                            op,
                        })
                    };
                    self.ring
                        .push(ops::cancel(tag(OpTag::Read(s.id.0)), tag(OpTag::Cancel)))?;
                }
            }
        }
        for (slot, generation, stream) in resumed.into_iter().flat_map(|r| r.reads) {
            let key = slot as usize;
            if self
                .tasks
                .get(key)
                .is_some_and(|t| t.generation == generation)
            {
                self.submit_read(key, stream)?;
            }
        }
        Ok(())
    }

    /// Submits the reads back-pressure held for this task (its process exited).
    pub(super) fn resume_reads_of(&mut self, key: usize) {
        let generation = self.tasks[key].generation;
        for stream in self.pressure.take_task(key as u32, generation) {
            if let Err(e) = self.submit_read(key, stream) {
                tracing::error!(error = %e, "cannot submit to the ring");
            }
        }
    }

    pub(super) fn submit_read(&mut self, key: usize, stream: StreamId) -> io::Result<()> {
        let group = self.ring.buffer_group();
        let task = &mut self.tasks[key];
        let generation = task.generation;
        let Some(s) = task.stream(stream) else {
            return Ok(());
        };
        s.armed = true;
        let user_data = pack(Tag {
            slot: key as u32,
            generation,
            op: OpTag::Read(stream.0),
        });
        let fixed = s.fixed;
        self.ring.push(ops::read_multishot(fixed, group, user_data))
    }

    pub(super) fn push_install(&mut self, key: usize, op: OpTag) -> io::Result<()> {
        let task = &self.tasks[key];
        let user_data = pack(Tag {
            slot: key as u32,
            generation: task.generation,
            op,
        });
        self.ring.push(ops::install_fixed(task.pidfd, user_data))
    }

    pub(super) fn push_close_fixed(&mut self, fixed: u32) -> io::Result<()> {
        let user_data = pack(Tag {
            slot: fixed,
            generation: 0,
            op: OpTag::CloseFixed,
        });
        self.ring.push(ops::close_fixed(fixed, user_data))
    }

    /// The machine's terminal transition: everything of the task goes, once.
    pub(super) fn release(&mut self, key: usize) {
        let task = self.tasks.remove(key);
        self.generations[key] = self.generations[key].wrapping_add(1);
        self.shared.counters.live.fetch_sub(1, Ordering::Relaxed);
        for fixed in task.streams.iter().map(|s| &s.fixed) {
            // The machine closes every stream before Release; this only guards a bug.
            tracing::error!(task = %task.id, fixed, "stream still open at release");
            if self.push_close_fixed(*fixed).is_err() {
                let _ = self.ring.unregister_file(*fixed);
                self.fixed.give_back(*fixed);
            }
        }
        if self.push_close_fixed(task.pidfd).is_err() {
            let _ = self.ring.unregister_file(task.pidfd);
            self.fixed.give_back(task.pidfd);
        }
        drop(task.tree_events);
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
