//! Adopting started tasks: `Pool::spawn` hands a spawn straight to this worker's spawner
//! threads, which clone and wait for the exec; a finished spawn comes back on the next turn
//! of the loop (`take_spawned`), and its fds move into the ring's fixed-file table
//! (`adopt`). The caller of `Pool::spawn` waits for the reply; this loop never does.

use super::*;

impl Worker {
    /// Adopts every spawn the spawner threads finished.
    pub(super) fn take_spawned(&mut self) {
        while let Some(done) = self.spawner.try_finished() {
            let SpawnDone { id, result, carry } = done;
            let PendingSpawn { spec, reply } = carry;
            let result = result.and_then(|started| self.adopt(id, &spec, started));
            if let Err(e) = &result {
                tracing::debug!(task = %id, error = %e, "spawn failed");
            }
            // A caller that went away no longer wants the answer; the task runs regardless.
            reply.send(result);
        }
    }

    /// Makes a started child a task of this worker: its fds into fixed slots, a slot and a
    /// state machine. During a shutdown the new task is killed at once, through its machine
    /// like every other. Without free fixed slots (`Pool::spawn` checks the load first, so
    /// only when spawns raced for the last ones) the child is killed and reaped.
    fn adopt(
        &mut self,
        id: TaskId,
        spec: &TaskSpec,
        started: Started,
    ) -> Result<Spawned, SpawnError> {
        let Started {
            pid,
            pidfd,
            streams,
            tree,
        } = started;
        let Some(fixed) = self.fixed.take(1 + streams.len()) else {
            kill_and_reap(pidfd.as_fd());
            self.forget_runner(pid);
            let _ = tree.remove();
            return Err(SpawnError::AtCapacity(self.tasks.len()));
        };
        let stream_ids: Vec<StreamId> = streams.iter().map(|(s, _)| *s).collect();
        if let Err(e) = self.register(&fixed, pid, pidfd, streams) {
            // Registration failed after the child started; `register` killed and reaped it.
            for slot in fixed {
                let _ = self.ring.unregister_file(slot);
                self.fixed.give_back(slot);
            }
            self.forget_runner(pid);
            let _ = tree.remove();
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
        if self.shutting_down {
            let result = self.tasks[key].machine.handle_kill(now);
            self.after_input(key, result);
        }
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
        pid: i32,
        pidfd: OwnedFd,
        streams: Vec<(StreamId, OwnedFd)>,
    ) -> io::Result<()> {
        for ((_, fd), slot) in streams.into_iter().zip(&fixed[1..]) {
            if let Err(e) = self.ring.register_file(*slot, fd) {
                kill_and_reap(pidfd.as_fd());
                return Err(e);
            }
        }
        if let Err(e) = self.ring.register_file(fixed[0], pidfd) {
            // The pidfd went with the failed registration. The child is ours and unreaped,
            // so its pid cannot have been reused: a new pidfd reaches it and nothing else.
            if let Ok(fd) = pidfd::open(pid) {
                kill_and_reap(fd.as_fd());
            }
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn forget_runner(&self, pid: i32) {
        if let Some(runners) = &self.runners {
            runners.remove(pid);
        }
    }
}

/// SIGKILLs a child that never became a task (its group too), and reaps it.
fn kill_and_reap(pidfd: BorrowedFd<'_>) {
    let _ = pidfd::send_signal(pidfd, libc::SIGKILL, true);
    let _ = pidfd::send_signal(pidfd, libc::SIGKILL, false);
    reap_blocking(pidfd);
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
