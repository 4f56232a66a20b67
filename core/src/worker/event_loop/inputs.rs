//! What feeds the machines: due deadlines and ring completions.

use super::*;

impl Worker {
    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((_, slot, generation)) = self.probes.pop_due(now) {
            let key = slot as usize;
            let Some(task) = self.tasks.get_mut(key) else {
                continue;
            };
            if task.generation != generation || task.watch != Watch::Sleeping {
                continue;
            }
            if task.watch_cancel {
                task.watch_cancel = false;
                task.watch = Watch::Idle;
                let result = task.machine.handle_cancelled(Op::TreeWatch, now);
                self.after_input(key, result);
            } else if let Err(e) = self.push_install(key, OpTag::InstallProbe) {
                tracing::error!(error = %e, "cannot submit to the ring");
            } else {
                self.tasks[key].watch = Watch::Probing;
            }
        }
        while let Some((deadline, slot, generation)) = self.timers.pop_due(now) {
            let key = slot as usize;
            let Some(task) = self.tasks.get_mut(key) else {
                continue;
            };
            if task.generation != generation || task.deadline != Some(deadline) {
                continue;
            }
            task.deadline = None;
            let result = task.machine.handle_timeout(now);
            self.after_input(key, result);
        }
    }

    // ---- completions ----------------------------------------------------------------

    pub(super) fn complete(&mut self, completion: Completion) -> io::Result<()> {
        let Some(tag) = unpack(completion.user_data) else {
            tracing::warn!(
                user_data = completion.user_data,
                "completion with an unknown tag"
            );
            return Ok(());
        };
        match tag.op {
            OpTag::Wake => {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(self.wake.as_fd(), &mut counter);
                if !completion.more() {
                    self.arm_wake()?;
                }
                return Ok(());
            }
            OpTag::CloseFixed => {
                self.fixed.give_back(tag.slot);
                return Ok(());
            }
            OpTag::Cancel => return Ok(()),
            OpTag::Rmdir => {
                self.removed(completion);
                return Ok(());
            }
            _ => {}
        }
        // An install gives us an fd we own, whatever became of its task.
        let installed = (tag.op.installs_fd() && completion.result >= 0)
            .then(|| crate::sys::fd::adopt_installed(completion.result));
        let key = tag.slot as usize;
        match self.tasks.get(key) {
            Some(task) if task.generation == tag.generation => {}
            _ => {
                self.shared.counters.stale.fetch_add(1, Ordering::Relaxed);
                if tag.op.is_read() {
                    if let Some(bid) = completion.buffer_id() {
                        self.ring.recycle(bid);
                    }
                }
                return Ok(());
            }
        }
        let now = Instant::now();
        let result = match tag.op {
            OpTag::Read(stream) => self.complete_read(key, StreamId(stream), completion, now),
            OpTag::Wait => {
                // The pidfd is readable: the process exited. Reap through an installed fd.
                self.push_install(key, OpTag::InstallReap)?;
                Ok(())
            }
            OpTag::InstallReap => match installed {
                Some(fd) => match pidfd::reap(fd.as_fd()) {
                    Ok(Some(status)) => self.exited(key, status, now),
                    Ok(None) => {
                        let task = &self.tasks[key];
                        let tag = pack(Tag {
                            slot: key as u32,
                            generation: task.generation,
                            op: OpTag::Wait,
                        });
                        self.ring.push(ops::poll_in_fixed(task.pidfd, tag))?;
                        Ok(())
                    }
                    Err(e) => {
                        tracing::warn!(task = %self.tasks[key].id, error = %e, "reap failed; exit status unknown");
                        self.exited(key, ExitStatus::Unknown, now)
                    }
                },
                None => {
                    tracing::warn!(task = %self.tasks[key].id, errno = -completion.result, "pidfd install failed; exit status unknown");
                    self.exited(key, ExitStatus::Unknown, now)
                }
            },
            OpTag::InstallSignalMain(signal) => {
                if let Some(fd) = installed {
                    if let Err(e) = pidfd::send_signal(fd.as_fd(), i32::from(signal), false) {
                        if e.raw_os_error() != Some(libc::ESRCH) {
                            tracing::warn!(task = %self.tasks[key].id, signal, error = %e, "signal failed");
                        }
                    }
                }
                Ok(())
            }
            OpTag::InstallSignalTree(signal) => {
                self.signal_tree(
                    key,
                    installed.as_ref().map(|fd| fd.as_fd()),
                    i32::from(signal),
                );
                Ok(())
            }
            OpTag::InstallProbe => {
                self.probed(key, installed.as_ref().map(|fd| fd.as_fd()), now)?
            }
            OpTag::TreeWatch => self.watch_fired(key, completion, now)?,
            OpTag::Wake | OpTag::CloseFixed | OpTag::Cancel | OpTag::Rmdir => {
                unreachable!("handled above")
            }
        };
        self.after_input(key, result);
        Ok(())
    }

    pub(super) fn complete_read(
        &mut self,
        key: usize,
        stream: StreamId,
        completion: Completion,
        now: Instant,
    ) -> Result<(), Rejected> {
        let res = completion.result;
        tracing::trace!(task = %self.tasks[key].id, stream = stream.0, res, more = completion.more(), "read completion");
        if res > 0 {
            let len = res as usize;
            if let Some(bid) = completion.buffer_id() {
                let bytes = self.ring.buffer(bid, len).to_vec();
                self.ring.recycle(bid);
                let task = self.tasks[key].id;
                self.deliver(Event::Output {
                    task,
                    stream,
                    bytes,
                });
            }
            let task = &mut self.tasks[key];
            if !completion.more() {
                if let Some(s) = task.stream(stream) {
                    s.armed = false;
                }
            }
            return task
                .machine
                .handle_data(stream, len, completion.more(), now);
        }
        let task = &mut self.tasks[key];
        let cancel_asked = match task.stream(stream) {
            Some(s) => {
                s.armed = false;
                s.cancel_asked
            }
            None => false,
        };
        let machine = &mut task.machine;
        match -res {
            0 => machine.handle_eof(stream, now),
            libc::ENOBUFS => machine.handle_read_stopped(stream, now),
            libc::ECANCELED if cancel_asked => machine.handle_cancelled(Op::Read(stream), now),
            // Cancelled by a back-pressure pause: the read only stopped; the machine asks for
            // it again, and the worker submits it when the event queue has drained.
            libc::ECANCELED => machine.handle_read_stopped(stream, now),
            errno => machine.handle_io_error(stream, errno, now),
        }
    }

    pub(super) fn exited(
        &mut self,
        key: usize,
        status: ExitStatus,
        now: Instant,
    ) -> Result<(), Rejected> {
        let pid = self.tasks[key].pid;
        self.tasks[key].reaped = true;
        self.resume_reads_of(key);
        self.forget_runner(pid);
        // A runner's death may orphan its descendants: look soon, not on every exit.
        self.orphans_pending = true;
        self.tasks[key].machine.handle_process_exited(status, now)
    }

    pub(super) fn signal_tree(&mut self, key: usize, leader: Option<BorrowedFd<'_>>, signal: i32) {
        let task = &mut self.tasks[key];
        let (Some(tree), Some(leader)) = (task.tree.as_ref(), leader) else {
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

    /// The pidfd was installed to ask whether the tree is empty.
    pub(super) fn probed(
        &mut self,
        key: usize,
        leader: Option<BorrowedFd<'_>>,
        now: Instant,
    ) -> io::Result<Result<(), Rejected>> {
        let kind = self.containment.kind();
        let task = &mut self.tasks[key];
        task.watch = Watch::Idle;
        let populated = match (task.tree.as_ref(), leader) {
            (Some(tree), Some(leader)) => tree.is_populated(leader).unwrap_or_else(|e| {
                tracing::warn!(task = %task.id, error = %e, "cannot read the tree's state; taking it as empty");
                false
            }),
            _ => false,
        };
        if !populated {
            // Empty ends the watch, whether or not a cancellation was also asked for.
            task.watch_cancel = false;
            task.tree_events = None;
            return Ok(task.machine.handle_tree_empty(now));
        }
        if task.watch_cancel {
            task.watch_cancel = false;
            task.tree_events = None;
            return Ok(task.machine.handle_cancelled(Op::TreeWatch, now));
        }
        if kind == ContainmentKind::ProcessGroup {
            let at = now + task.probe_delay;
            task.probe_delay = (task.probe_delay * 2).min(PROBE_MAX_DELAY);
            task.watch = Watch::Sleeping;
            self.probes.insert(at, key as u32, task.generation);
            return Ok(Ok(()));
        }
        // cgroup mode, still populated: wait for `cgroup.events` to change.
        if task.tree_events.is_none() {
            match task.tree.as_ref().map(|t| t.open_events()) {
                Some(Ok(Some(fd))) => task.tree_events = Some(fd),
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(task = %task.id, error = %e, "cannot watch the tree");
                    }
                    return Ok(task.machine.handle_tree_occupied(now));
                }
            }
        }
        let fd = task
            .tree_events
            .as_ref()
            .map(|fd| fd.as_raw_fd())
            .unwrap_or(-1);
        let tag = pack(Tag {
            slot: key as u32,
            generation: task.generation,
            op: OpTag::TreeWatch,
        });
        task.watch = Watch::Polling;
        self.ring.push(ops::poll_pri(fd, tag))?;
        Ok(Ok(()))
    }

    /// `cgroup.events` changed (or the poll was cancelled).
    pub(super) fn watch_fired(
        &mut self,
        key: usize,
        completion: Completion,
        now: Instant,
    ) -> io::Result<Result<(), Rejected>> {
        let task = &mut self.tasks[key];
        task.watch = Watch::Idle;
        if completion.result == -libc::ECANCELED || task.watch_cancel {
            task.watch_cancel = false;
            task.tree_events = None;
            return Ok(task.machine.handle_cancelled(Op::TreeWatch, now));
        }
        // Re-read the state through a fresh probe; it re-arms the poll if still populated.
        self.push_install(key, OpTag::InstallProbe)?;
        self.tasks[key].watch = Watch::Probing;
        Ok(Ok(()))
    }
}
