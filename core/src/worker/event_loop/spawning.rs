//! Starting a task on the worker's own thread (`PR_SET_PDEATHSIG` follows it) and
//! moving its fds into the ring's fixed-file table.

use super::*;

impl Worker {
    pub(super) fn spawn(
        &mut self,
        spec: &TaskSpec,
        prepared: &spawn::Prepared,
        id: TaskId,
    ) -> Result<Spawned, SpawnError> {
        let fixed_needed = 1 + prepared.streams().len();
        if self.fixed.available() < fixed_needed {
            return Err(SpawnError::AtCapacity(self.tasks.len()));
        }
        let tree = self.containment.prepare(id.0, &spec.limits)?;
        let child = match tree
            .placement()
            .map_err(SpawnError::from)
            .and_then(|placement| {
                let spawning = self.orphans.as_ref().map(|o| o.spawning());
                let child = spawn::spawn(prepared, &placement)?;
                if let Some(spawning) = spawning {
                    spawning.started(child.pid);
                }
                // The cgroup directory fd (in `placement`) closes here: the table stays flat.
                Ok(child)
            }) {
            Ok(child) => child,
            Err(e) => {
                self.containment.remove_in_background(tree);
                return Err(e);
            }
        };
        let fixed = self
            .fixed
            .take(1 + child.streams.len())
            .ok_or(SpawnError::AtCapacity(self.tasks.len()))?;
        let pid = child.pid;
        let stream_ids: Vec<StreamId> = child.streams.iter().map(|(s, _)| *s).collect();
        if let Err(e) = self.register(&fixed, child.pidfd, child.streams) {
            // Registration failed after the child started; `register` killed and reaped it.
            for slot in fixed {
                let _ = self.ring.unregister_file(slot);
                self.fixed.give_back(slot);
            }
            self.forget_runner(pid);
            if let Some(orphans) = &self.orphans {
                orphans.task_released(pid);
            }
            self.containment.remove_in_background(tree);
            return Err(SpawnError::Io(e));
        }
        let key = self.tasks.vacant_key();
        if self.generations.len() <= key {
            self.generations.resize(key + 1, 0);
        }
        let generation = self.generations[key];
        let config = TaskConfig {
            streams: stream_ids.clone(),
            timeout: spec.timeout,
            grace: spec.grace,
            drain: spec.drain,
            tree: match self.containment.kind() {
                // Process groups have no emptiness notification: the worker re-probes.
                ContainmentKind::Cgroup | ContainmentKind::ProcessGroup => TreeWatch::Notifies,
            },
            after_exit: spec.after_exit,
        };
        let now = Instant::now();
        self.tasks.insert(TaskSlot {
            id,
            generation,
            machine: TaskMachine::new(config, now),
            pid,
            pidfd: fixed[0],
            streams: stream_ids
                .into_iter()
                .zip(fixed[1..].iter().copied())
                .map(|(id, fixed)| StreamSlot {
                    id,
                    fixed,
                    armed: false,
                    cancel_asked: false,
                })
                .collect(),
            tree: Some(tree),
            tree_events: None,
            watch: Watch::Idle,
            watch_cancel: false,
            probe_delay: PROBE_FIRST_DELAY,
            deadline: None,
            descendants_killed: 0,
            reaped: false,
        });
        self.shared.counters.live.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.spawned.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(task = %id, pid, slot = key, "spawned");
        self.drive(key);
        Ok(Spawned {
            slot: key as u32,
            generation,
            pid,
        })
    }

    /// Moves the child's fds into the fixed table; on failure kills and reaps the child.
    pub(super) fn register(
        &mut self,
        fixed: &[u32],
        pidfd: OwnedFd,
        streams: Vec<(StreamId, OwnedFd)>,
    ) -> io::Result<()> {
        for ((_, fd), slot) in streams.into_iter().zip(&fixed[1..]) {
            if let Err(e) = self.ring.register_file(*slot, fd) {
                let _ = pidfd::send_signal(pidfd.as_fd(), libc::SIGKILL, true);
                let _ = pidfd::send_signal(pidfd.as_fd(), libc::SIGKILL, false);
                reap_blocking(pidfd.as_fd());
                return Err(e);
            }
        }
        let pidfd_for_cleanup = pidfd.try_clone();
        if let Err(e) = self.ring.register_file(fixed[0], pidfd) {
            if let Ok(fd) = pidfd_for_cleanup {
                let _ = pidfd::send_signal(fd.as_fd(), libc::SIGKILL, true);
                let _ = pidfd::send_signal(fd.as_fd(), libc::SIGKILL, false);
                reap_blocking(fd.as_fd());
            }
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn forget_runner(&self, pid: i32) {
        if let Some(orphans) = &self.orphans {
            orphans.runner_reaped(pid);
        }
    }
}

/// Reaps a child we just SIGKILLed, waiting for it.
fn reap_blocking(pidfd: BorrowedFd<'_>) {
    for _ in 0..1000 {
        match pidfd::reap(pidfd) {
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            _ => return,
        }
    }
}
