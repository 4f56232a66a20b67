//! The worker thread's loop: commands in, submissions out, completions to machines,
//! machine actions to submissions.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use slab::Slab;

use super::backpressure::Backpressure;
use super::fixed_slots::FixedSlots;
use super::timers::Timers;
use super::user_data::{pack, unpack, OpTag, Tag};
use super::{Command, EventSink, Request, Spawned, WorkerSetup, WorkerShared};
use crate::containment::{ContainmentKind, PoolContainment, TaskContainment};
use crate::error::SpawnError;
use crate::event::{Event, TaskId};
use crate::spec::TaskSpec;
use crate::sys::ring::{ops, Completion, Ring};
use crate::sys::{pidfd, spawn};
use crate::task::{
    Action, ExitStatus, Notice, Op, Rejected, StreamId, TaskConfig, TaskMachine, TreeWatch,
};

/// How often a paused worker looks whether the user drained the event queue.
const PRESSURE_RECHECK: Duration = Duration::from_millis(5);

/// Slot number used in tags that belong to no task.
const NO_SLOT: u32 = u32::MAX;

/// How often the subreaper worker looks for orphans when nothing else wakes it.
const ORPHAN_SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// The shortest gap between two orphan scans (a kill-all ends thousands of runners at once).
const ORPHAN_SCAN_MIN_GAP: Duration = Duration::from_millis(10);

/// Where the tree watch of a task stands, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Idle,
    /// A pidfd install is in flight to probe the tree.
    Probing,
    /// A `POLLPRI` on `cgroup.events` is in flight.
    Polling,
    /// Process-group mode: waiting for the next probe (the kernel has no notification).
    Sleeping,
}

/// Process-group mode re-probes an occupied group after this delay, doubling up to the max.
const PROBE_FIRST_DELAY: Duration = Duration::from_millis(5);
const PROBE_MAX_DELAY: Duration = Duration::from_millis(100);

struct TaskSlot {
    id: TaskId,
    generation: u16,
    machine: TaskMachine,
    pid: i32,
    /// Fixed slot of the pidfd.
    pidfd: u32,
    /// Each stream's supervisor end (a fixed slot) and the state of its read.
    streams: Vec<StreamSlot>,
    tree: Option<TaskContainment>,
    /// `cgroup.events`, open only while the tree is being watched.
    tree_events: Option<OwnedFd>,
    watch: Watch,
    watch_cancel: bool,
    /// Process-group mode: the delay before the next probe.
    probe_delay: Duration,
    /// The deadline last registered with the timer heap.
    deadline: Option<Instant>,
    descendants_killed: u64,
    /// The main process was reaped (it no longer counts among the tree's processes).
    reaped: bool,
}

/// One captured stream of a task, as the driver sees it.
struct StreamSlot {
    id: StreamId,
    /// Fixed-file slot of the supervisor's end.
    fixed: u32,
    /// A read is in the kernel (submitted, no final completion yet).
    armed: bool,
    /// The machine asked for this read to be cancelled. Any other `-ECANCELED` comes from
    /// a back-pressure pause, and the read is only stopped, not ended.
    cancel_asked: bool,
}

impl TaskSlot {
    fn stream(&mut self, stream: StreamId) -> Option<&mut StreamSlot> {
        self.streams.iter_mut().find(|s| s.id == stream)
    }
}

struct Worker {
    ring: Ring,
    tasks: Slab<TaskSlot>,
    /// Generation per slab key; survives the slot's removal.
    generations: Vec<u16>,
    fixed: FixedSlots,
    timers: Timers,
    /// Re-probes of process groups (see `Watch::Sleeping`).
    probes: Timers,
    completions: Vec<Completion>,
    commands: Receiver<Command>,
    wake: OwnedFd,
    shared: Arc<WorkerShared>,
    sink: EventSink,
    /// Set once a delivery failed: nobody reads events any more.
    sink_gone: bool,
    pressure: Backpressure,
    containment: Arc<PoolContainment>,
    runners: Option<Arc<Mutex<HashSet<i32>>>>,
    scans_orphans: bool,
    periodic_orphan_scan: bool,
    last_orphan_scan: Instant,
    orphans_pending: bool,
    /// Numbers the cgroup removals in flight (their `user_data`).
    rmdir_seq: u32,
    shutting_down: bool,
}

pub(super) fn run(
    setup: WorkerSetup,
    commands: Receiver<Command>,
    wake: OwnedFd,
    shared: Arc<WorkerShared>,
    ready: Sender<io::Result<()>>,
) {
    let sizes = setup.sizes;
    let ring = match Ring::new(
        sizes.sq_entries,
        sizes.cq_entries,
        sizes.fixed_files,
        sizes.buffers,
        sizes.buffer_size,
    ) {
        Ok(ring) => ring,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut worker = Worker {
        fixed: FixedSlots::new(ring.fixed_files()),
        ring,
        tasks: Slab::new(),
        generations: Vec::new(),
        timers: Timers::default(),
        probes: Timers::default(),
        completions: Vec::with_capacity(1024),
        commands,
        wake,
        shared,
        sink: setup.sink,
        sink_gone: false,
        pressure: Backpressure::default(),
        containment: setup.containment,
        scans_orphans: setup.runners.is_some(),
        periodic_orphan_scan: setup.runners.is_some() && setup.index == 0,
        runners: setup.runners,
        last_orphan_scan: Instant::now(),
        orphans_pending: false,
        rmdir_seq: 0,
        shutting_down: false,
    };
    if let Err(e) = worker.arm_wake() {
        let _ = ready.send(Err(e));
        return;
    }
    let _ = ready.send(Ok(()));
    tracing::debug!(worker = setup.index, "worker started");
    if let Err(e) = worker.run() {
        // The ring itself failed: nothing more can be driven. Tasks still live keep their
        // PDEATHSIG link to this thread, so they die with it rather than run unsupervised.
        tracing::error!(worker = setup.index, error = %e, "worker ring failed; stopping");
    }
    tracing::debug!(worker = setup.index, "worker stopped");
}

impl Worker {
    fn run(&mut self) -> io::Result<()> {
        loop {
            self.take_commands();
            self.fire_timers();
            self.check_pressure()?;
            if self.scans_orphans {
                self.scan_orphans();
            }
            // Stop once every task is gone and their cgroups are removed.
            if self.shutting_down && self.tasks.is_empty() && self.ring.rmdirs_in_flight() == 0 {
                return Ok(());
            }
            let timeout = self.wait_timeout();
            self.ring.submit_and_wait(timeout)?;
            self.ring.drain_completions(&mut self.completions);
            let mut batch = std::mem::take(&mut self.completions);
            for completion in batch.drain(..) {
                self.complete(completion)?;
            }
            self.completions = batch;
        }
    }

    fn wait_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let next = match (self.timers.next(), self.probes.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut timeout = next.map(|t| t.saturating_duration_since(now));
        if self.pressure.is_paused() {
            // Nothing wakes the worker when the user drains the queue: look again soon.
            timeout = Some(timeout.map_or(PRESSURE_RECHECK, |t| t.min(PRESSURE_RECHECK)));
        }
        let scan_every = if self.orphans_pending {
            Some(ORPHAN_SCAN_MIN_GAP)
        } else if self.periodic_orphan_scan {
            Some(ORPHAN_SCAN_INTERVAL)
        } else {
            None
        };
        if let Some(every) = scan_every {
            timeout = Some(timeout.map_or(every, |t| t.min(every)));
        }
        timeout
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let tag = pack(Tag {
            slot: NO_SLOT,
            generation: 0,
            op: OpTag::Wake,
        });
        self.ring
            .push(ops::poll_in_multishot(self.wake.as_raw_fd(), tag))
    }

    // ---- commands -------------------------------------------------------------------

    fn take_commands(&mut self) {
        loop {
            let command = match self.commands.try_recv() {
                Ok(command) => command,
                Err(crossbeam_channel::TryRecvError::Empty) => return,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    // Every handle and the pool are gone: nobody can ask for anything again.
                    self.begin_shutdown();
                    return;
                }
            };
            match command {
                Command::Spawn {
                    spec,
                    prepared,
                    id,
                    reply,
                } => {
                    let result = if self.shutting_down {
                        Err(SpawnError::PoolClosed)
                    } else {
                        self.spawn(&spec, &prepared, id)
                    };
                    if let Err(e) = &result {
                        tracing::debug!(task = %id, error = %e, "spawn failed");
                    }
                    let _ = reply.send(result);
                }
                Command::Control {
                    slot,
                    generation,
                    request,
                } => self.control(slot, generation, request),
                Command::Shutdown => self.begin_shutdown(),
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let keys: Vec<usize> = self.tasks.iter().map(|(key, _)| key).collect();
        for key in keys {
            let now = Instant::now();
            let result = self.tasks[key].machine.handle_kill(now);
            self.after_input(key, result);
        }
    }

    fn control(&mut self, slot: u32, generation: u16, request: Request) {
        let key = slot as usize;
        match self.tasks.get(key) {
            Some(task) if task.generation == generation => {}
            // The task already ended: a late request is not an error for the caller.
            _ => return,
        }
        let now = Instant::now();
        let machine = &mut self.tasks[key].machine;
        let result = match request {
            Request::Signal(signal) => machine.handle_signal(signal, now),
            Request::Terminate => machine.handle_terminate(now),
            Request::Kill => machine.handle_kill(now),
        };
        self.after_input(key, result);
    }

    // ---- spawning -------------------------------------------------------------------

    fn spawn(
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
                let _runners = self.runners.as_ref().map(|r| lock(r));
                let child = spawn::spawn(prepared, &placement)?;
                if let Some(mut runners) = _runners {
                    runners.insert(child.pid);
                }
                // The cgroup directory fd (in `placement`) closes here: the table stays flat.
                Ok(child)
            }) {
            Ok(child) => child,
            Err(e) => {
                if let Err(rm) = tree.remove() {
                    tracing::warn!(task = %id, error = %rm, "cannot remove the cgroup of a task that failed to spawn");
                }
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
        Ok(Spawned {
            slot: key as u32,
            generation,
            pid,
        })
    }

    /// Moves the child's fds into the fixed table; on failure kills and reaps the child.
    fn register(
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

    fn forget_runner(&self, pid: i32) {
        if let Some(runners) = &self.runners {
            lock(runners).remove(&pid);
        }
    }

    // ---- timers ---------------------------------------------------------------------

    fn fire_timers(&mut self) {
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

    fn complete(&mut self, completion: Completion) -> io::Result<()> {
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

    fn complete_read(
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

    fn exited(&mut self, key: usize, status: ExitStatus, now: Instant) -> Result<(), Rejected> {
        let pid = self.tasks[key].pid;
        self.tasks[key].reaped = true;
        self.resume_reads_of(key);
        self.forget_runner(pid);
        // A runner's death may orphan its descendants: look soon, not on every exit.
        self.orphans_pending = true;
        self.tasks[key].machine.handle_process_exited(status, now)
    }

    fn signal_tree(&mut self, key: usize, leader: Option<BorrowedFd<'_>>, signal: i32) {
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
    fn probed(
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
    fn watch_fired(
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

    // ---- actions --------------------------------------------------------------------

    /// Logs a rejected input, then carries out whatever the machine now wants.
    fn after_input(&mut self, key: usize, result: Result<(), Rejected>) {
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

    fn drive(&mut self, key: usize) {
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

    fn act(&mut self, key: usize, action: Action, release: &mut bool) -> io::Result<()> {
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

    fn deliver(&mut self, event: Event) {
        if !self.sink.deliver(event) {
            self.sink_gone = true;
        }
    }

    /// Pauses or resumes reading with the fill of the user's event queue. A pause cancels
    /// the armed reads of running tasks (their children then block on full pipes); their
    /// re-submissions wait in the backlog of `Backpressure` until the queue drains.
    fn check_pressure(&mut self) -> io::Result<()> {
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
    fn resume_reads_of(&mut self, key: usize) {
        let generation = self.tasks[key].generation;
        for stream in self.pressure.take_task(key as u32, generation) {
            if let Err(e) = self.submit_read(key, stream) {
                tracing::error!(error = %e, "cannot submit to the ring");
            }
        }
    }

    fn submit_read(&mut self, key: usize, stream: StreamId) -> io::Result<()> {
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

    fn push_install(&mut self, key: usize, op: OpTag) -> io::Result<()> {
        let task = &self.tasks[key];
        let user_data = pack(Tag {
            slot: key as u32,
            generation: task.generation,
            op,
        });
        self.ring.push(ops::install_fixed(task.pidfd, user_data))
    }

    fn push_close_fixed(&mut self, fixed: u32) -> io::Result<()> {
        let user_data = pack(Tag {
            slot: fixed,
            generation: 0,
            op: OpTag::CloseFixed,
        });
        self.ring.push(ops::close_fixed(fixed, user_data))
    }

    /// The machine's terminal transition: everything of the task goes, once.
    fn release(&mut self, key: usize) {
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
        if let Some(tree) = task.tree {
            self.remove_cgroup(task.id, tree);
        }
        tracing::trace!(task = %task.id, slot = key, "released");
    }

    // ---- cgroup removal ---------------------------------------------------------------

    /// Removes a released task's cgroup. A single v2 directory goes through the ring
    /// (`IORING_OP_UNLINKAT`), so the kernel's teardown does not hold up this loop during a
    /// kill-all; anything more is removed here and now.
    fn remove_cgroup(&mut self, id: TaskId, tree: TaskContainment) {
        let tree = match tree.into_single_dir() {
            Ok(None) => return,
            Ok(Some(dir)) => match CString::new(dir.into_os_string().into_vec()) {
                Ok(path) => {
                    self.rmdir_seq = self.rmdir_seq.wrapping_add(1);
                    let user_data = pack(Tag {
                        slot: self.rmdir_seq,
                        generation: 0,
                        op: OpTag::Rmdir,
                    });
                    if let Err(e) = self.ring.push_rmdir(path, user_data) {
                        tracing::error!(error = %e, "cannot submit to the ring");
                    }
                    return;
                }
                Err(_) => return, // A cgroup path never holds a NUL byte.
            },
            Err(tree) => tree,
        };
        if let Err(e) = tree.remove() {
            tracing::warn!(task = %id, error = %e, "cannot remove the task's cgroup");
        }
    }

    /// A cgroup removal completed; on failure (the task made cgroups below its own, or the
    /// kernel still counted it busy) it is removed here, with retries.
    fn removed(&mut self, completion: Completion) {
        let Some(path) = self.ring.take_path(completion.user_data) else {
            return;
        };
        if completion.result >= 0 || completion.result == -libc::ENOENT {
            return;
        }
        let dir = std::path::PathBuf::from(std::ffi::OsString::from_vec(path.into_bytes()));
        if let Err(e) = crate::containment::remove_task_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a task's cgroup");
        }
    }

    // ---- orphans --------------------------------------------------------------------

    /// Reaps orphaned descendants: soon after one of this worker's runners died (they may
    /// have left orphans), at most every `ORPHAN_SCAN_MIN_GAP`; and, on worker 0, every
    /// `ORPHAN_SCAN_INTERVAL` for orphans of trees that outlive their runner.
    fn scan_orphans(&mut self) {
        let since = self.last_orphan_scan.elapsed();
        let due = (self.orphans_pending && since >= ORPHAN_SCAN_MIN_GAP)
            || (self.periodic_orphan_scan && since >= ORPHAN_SCAN_INTERVAL);
        if !due {
            return;
        }
        self.orphans_pending = false;
        self.last_orphan_scan = Instant::now();
        let Some(runners) = &self.runners else { return };
        let runners = lock(runners);
        let reaped = crate::containment::reap_orphans(|pid| runners.contains(&pid));
        if reaped > 0 {
            tracing::debug!(reaped, "reaped orphaned descendants");
        }
    }
}

impl OpTag {
    fn is_read(self) -> bool {
        matches!(self, OpTag::Read(_))
    }
}

fn signal_byte(signal: i32) -> Option<u8> {
    u8::try_from(signal).ok().filter(|s| (1..=64).contains(s))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding this lock leaves a plain set behind: still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
