//! Starting a task on the worker's own thread (`PR_SET_PDEATHSIG` follows it) and handing
//! its fds to the driver.

use std::os::fd::{AsFd, OwnedFd};

use super::*;
use crate::spec::TaskSpec;
use crate::sys::{pidfd, spawn};
use crate::task::{TaskConfig, TreeWatch as MachineTreeWatch};
use crate::worker::cleanup_thread::Job;
use crate::worker::driver::FdRole;
use crate::worker::Spawned;

impl<D: Driver> Worker<D> {
    pub(super) fn spawn(
        &mut self,
        spec: &TaskSpec,
        prepared: &spawn::Prepared,
        id: TaskId,
    ) -> Result<Spawned, SpawnError> {
        // The pidfd, each stream, and `cgroup.events` while the tree is watched.
        let descriptors = 2 + prepared.streams().len();
        if !self.driver.has_room(descriptors) {
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
                // The cgroup directory fd (in `placement`) closes here.
                Ok(child)
            }) {
            Ok(child) => child,
            Err(e) => {
                self.cleanup.submit(Job::RemoveTree(tree));
                return Err(e);
            }
        };
        let pid = child.pid;
        let stream_ids: Vec<StreamId> = child.streams.iter().map(|(s, _)| *s).collect();
        let (pidfd_handle, stream_handles) = match self.adopt(child.pidfd, child.streams) {
            Ok(handles) => handles,
            Err(e) => {
                // The child runs but cannot be supervised: `adopt` killed it and handed its
                // reap to the cleanup thread, which reaps before the tree goes.
                self.forget_runner(pid);
                if let Some(orphans) = &self.orphans {
                    orphans.task_released(pid);
                }
                self.cleanup.submit(Job::RemoveTree(tree));
                return Err(SpawnError::Io(e));
            }
        };
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
            // Process groups have no emptiness notification, but the worker re-probes them
            // (`WatchMode::Probe`), so the machine sees a watch that notifies in both modes.
            tree: MachineTreeWatch::Notifies,
            after_exit: spec.after_exit,
        };
        let span = tracing::debug_span!("task", id = id.0, pid);
        let _entered = span.clone().entered();
        self.tasks.insert(TaskSlot {
            id,
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
                    armed: false,
                    cancel_asked: false,
                    deferred: false,
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
        Ok(Spawned {
            slot: key as u32,
            pid,
        })
    }

    /// Hands the child's fds to the driver. On failure releases what was adopted, SIGKILLs
    /// the child (through its pidfd) and hands its reap to the cleanup thread.
    fn adopt(
        &mut self,
        pidfd: OwnedFd,
        streams: Vec<(StreamId, OwnedFd)>,
    ) -> io::Result<(Handle, Vec<Handle>)> {
        let mut adopted = Vec::with_capacity(streams.len());
        for (_, fd) in streams {
            match self.driver.adopt(fd, FdRole::Stream) {
                Ok(handle) => adopted.push(handle),
                Err(e) => {
                    self.abandon(pidfd, adopted);
                    return Err(e);
                }
            }
        }
        // The driver takes the pidfd; a copy stays here until it was adopted, to kill the
        // child if it cannot be.
        let spare = match pidfd.try_clone() {
            Ok(spare) => spare,
            Err(e) => {
                self.abandon(pidfd, adopted);
                return Err(e);
            }
        };
        match self.driver.adopt(pidfd, FdRole::Pidfd) {
            Ok(handle) => Ok((handle, adopted)),
            Err(e) => {
                self.abandon(spare, adopted);
                Err(e)
            }
        }
    }

    /// Gives up on a child that cannot be supervised: its adopted streams are released, it
    /// is SIGKILLed (its group too, in process-group mode) through its pidfd, and the
    /// cleanup thread reaps it.
    fn abandon(&mut self, pidfd: OwnedFd, adopted: Vec<Handle>) {
        for handle in adopted {
            self.driver.release(handle);
        }
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
