//! Starting a task on the worker's own thread (`PR_SET_PDEATHSIG` follows it) and handing
//! its fds to the driver.

use std::os::fd::{AsFd, OwnedFd};

use super::*;
use crate::spec::TaskSpec;
use crate::sys::{pidfd, spawn};
use crate::task::{TaskConfig, TreeWatch as MachineTreeWatch};
use crate::worker::cleanup_thread::Job;
use crate::worker::driver::FdRole;
use crate::worker::shared::SharedSetup;
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
                let _runners = self.runners.as_ref().map(|r| lock(r));
                let child = spawn::spawn(prepared, &placement)?;
                if let Some(mut runners) = _runners {
                    runners.insert(child.pid);
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
                self.cleanup.submit(Job::RemoveTree(tree));
                return Err(SpawnError::Io(e));
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
        Ok(Spawned { shared })
    }

    /// Hands the child's fds to the driver. On failure releases what was adopted, SIGKILLs
    /// the child (through its pidfd) and hands its reap to the cleanup thread.
    fn adopt(
        &mut self,
        pidfd: OwnedFd,
        streams: Vec<(StreamId, OwnedFd)>,
    ) -> io::Result<(Handle, Vec<Handle>)> {
        let mut adopted = Vec::with_capacity(streams.len());
        for (id, fd) in streams {
            let role = match id {
                StreamId::STDOUT | StreamId::STDERR | StreamId::STDIN => FdRole::Stream,
                _ => FdRole::Channel,
            };
            match self.driver.adopt(fd, role) {
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
        if let Some(runners) = &self.runners {
            lock(runners).remove(&pid);
        }
    }
}
