//! Adopting started tasks: `Pool::spawn` hands a spawn straight to this worker's spawner
//! threads (`worker::spawner`), which make the task's cgroup, clone and wait for the exec;
//! a finished spawn comes back on the next turn of the loop (`take_spawned`), and its fds
//! go to the driver (`adopt`). The caller of `Pool::spawn` waits for the reply; this loop
//! never waits for an exec.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::*;
use crate::spec::TaskSpec;
use crate::sys::{pidfd, spawn};
use crate::task::{TaskConfig, TreeWatch as MachineTreeWatch};
use crate::worker::cleanup_thread::Job;
use crate::worker::driver::FdRole;
use crate::worker::shared::SharedSetup;
use crate::worker::spawner::{SpawnDone, Started};
use crate::worker::Spawned;

impl<D: Driver> Worker<D> {
    /// Adopts every spawn the spawner threads finished and answers its caller.
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

    /// Makes a started child a task of this worker: its fds to the driver, a slot and a
    /// state machine. During a shutdown the new task is killed at once, through its machine
    /// like every other. Where the driver has no room (`Pool::spawn` checks the load first,
    /// so only when spawns raced for the last places) the child is killed.
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
        let stream_ids: Vec<StreamId> = streams.iter().map(|(s, _)| *s).collect();
        // The pidfd, each stream, and (cgroup mode) `cgroup.events` while the tree is watched:
        // what `Pool::capacity` counts per task, so a pool holds exactly that many.
        let watch_fd = usize::from(self.watch_mode == WatchMode::Notify);
        let room = self.driver.has_room(1 + streams.len() + watch_fd);
        let handles = if room {
            self.adopt_fds(pid, pidfd, streams)
        } else {
            for (_, fd) in &streams {
                spawn::unguard(fd.as_raw_fd());
            }
            self.abandon(pid, Some(pidfd), Vec::new());
            Err(SpawnError::AtCapacity(self.tasks.len()))
        };
        let (pidfd_handle, stream_handles) = match handles {
            Ok(handles) => handles,
            Err(e) => {
                // The child was SIGKILLed (and its cgroup, if any) and its reap handed to the
                // cleanup thread, which also removes the cgroup (in order: the reap first).
                let _ = tree.signal_tree(None, libc::SIGKILL);
                self.forget_runner(pid);
                if let Some(orphans) = &self.orphans {
                    orphans.task_released(pid);
                }
                self.cleanup.submit(Job::RemoveTree(tree));
                return Err(e);
            }
        };
        let key = self.tasks.vacant_key();
        if self.generations.len() <= key {
            self.generations.resize(key + 1, 0);
        }
        let generation = self.generations[key];
        // Stream ids: stdout 0, stderr 1, raw channels 2.., framed channels after them,
        // stdin 255. What each carries decides how it is read and written.
        let raw_channels = spec.channels.len() as u8;
        let first_channel = StreamId::channel(raw_channels).0;
        let kind_of = |id: StreamId| -> StreamKind {
            match id {
                StreamId::STDIN => StreamKind::Stdin,
                StreamId(n) if n >= first_channel => StreamKind::Framed {
                    channel: n - first_channel,
                    framer: crate::worker::framing::Framer::new(spec.max_frame),
                    too_large: None,
                },
                _ => StreamKind::Output,
            }
        };
        let config = TaskConfig {
            streams: stream_ids
                .iter()
                .copied()
                .filter(|&id| id != StreamId::STDIN)
                .collect(),
            writable: stream_ids
                .iter()
                .copied()
                .filter(|&id| id == StreamId::STDIN || id.0 >= first_channel)
                .collect(),
            timeout: spec.timeout,
            grace: spec.grace,
            drain: spec.drain,
            // Process groups have no emptiness notification, but the worker re-probes them
            // (`WatchMode::Probe`), so the machine sees a watch that notifies in both modes.
            tree: MachineTreeWatch::Notifies,
            after_exit: spec.after_exit,
        };
        let shared = Arc::new(TaskShared::new(
            id,
            key as u32,
            Arc::clone(&self.shared),
            SharedSetup {
                pid: pid as u32,
                budget: spec.budget.unwrap_or(self.task_budget) as u64,
                stdin: stream_ids.contains(&StreamId::STDIN),
                channels: spec.framed,
                first_channel,
                max_frame: spec.max_frame,
                pool: Arc::clone(&self.buffers),
            },
        ));
        let span = tracing::debug_span!("task", id = id.0, pid);
        let _entered = span.clone().entered();
        self.tasks.insert(TaskSlot {
            id,
            shared: Arc::clone(&shared),
            paused: false,
            span,
            generation,
            machine: TaskMachine::new(config, Instant::now()),
            pid,
            pidfd: pidfd_handle,
            streams: stream_ids
                .into_iter()
                .zip(stream_handles)
                .map(|(id, handle)| StreamSlot {
                    id,
                    handle,
                    kind: kind_of(id),
                    queue: WriteQueue::default(),
                    read_error: None,
                    write_error: None,
                })
                .collect(),
            tree: Some(tree),
            watch: TreeWatch::Idle,
            tree_events: None,
            probe_delay: PROBE_FIRST_DELAY,
            retries: Vec::new(),
            retry_delay: RETRY_FIRST_DELAY,
            wakeups: TaskWakeups::default(),
            descendants_killed: 0,
            reaped: false,
        });
        self.shared.counters.live.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.spawned.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(task = %id, pid, slot = key, "spawned");
        self.drive(key);
        if self.shutting_down {
            self.input(key, Input::Kill);
        }
        Ok(Spawned { shared })
    }

    /// Hands the child's fds to the driver. On failure releases what was adopted and
    /// abandons the child.
    fn adopt_fds(
        &mut self,
        pid: i32,
        pidfd: OwnedFd,
        streams: Vec<(StreamId, OwnedFd)>,
    ) -> Result<(Handle, Vec<Handle>), SpawnError> {
        let mut adopted = Vec::with_capacity(streams.len());
        let mut streams = streams.into_iter();
        while let Some((id, fd)) = streams.next() {
            let role = match id {
                StreamId::STDOUT | StreamId::STDERR | StreamId::STDIN => FdRole::Stream,
                _ => FdRole::Channel,
            };
            match self.driver.adopt(fd, role) {
                Ok(handle) => adopted.push(handle),
                Err(e) => {
                    // The rest close here (the driver took care of the refused one).
                    for (_, fd) in streams {
                        spawn::unguard(fd.as_raw_fd());
                    }
                    self.abandon(pid, Some(pidfd), adopted);
                    return Err(SpawnError::Io(e));
                }
            }
        }
        match self.driver.adopt(pidfd, FdRole::Pidfd) {
            Ok(handle) => Ok((handle, adopted)),
            Err(e) => {
                // The pidfd went with the failed adoption.
                self.abandon(pid, None, adopted);
                Err(SpawnError::Io(e))
            }
        }
    }

    /// Gives up on a child that cannot be supervised: its adopted streams are released, it
    /// is SIGKILLed (its group too, in process-group mode) through its pidfd, and the
    /// cleanup thread reaps it. Without its pidfd (the driver consumed it), a new one is
    /// opened: the child is ours and not reaped, so its pid cannot have been reused.
    fn abandon(&mut self, pid: i32, pidfd: Option<OwnedFd>, adopted: Vec<Handle>) {
        for handle in adopted {
            self.driver.release(handle);
        }
        let Some(pidfd) = pidfd.or_else(|| pidfd::open(pid).ok()) else {
            tracing::error!(pid, "cannot reach a child that could not be adopted");
            return;
        };
        let _ = pidfd::send_signal(pidfd.as_fd(), libc::SIGKILL, true);
        let _ = pidfd::send_signal(pidfd.as_fd(), libc::SIGKILL, false);
        self.cleanup.submit(Job::Reap(pidfd));
    }

    pub(super) fn forget_runner(&self, pid: i32) {
        if let Some(orphans) = &self.orphans {
            orphans.runner_reaped(pid);
        }
    }
}
