//! The worker thread's loop: commands in, submissions out, completions to machines,
//! machine actions to submissions.
//!
//! - `spawning`: handing spawns to the spawner threads, adopting the children they started;
//! - `inputs`: deadlines and completions, turned into machine events;
//! - `actions`: machine actions, turned into submissions, events and releases;
//! - `cleanup`: removing released tasks' cgroups and reaping orphans.

mod actions;
mod cleanup;
mod inputs;
mod spawning;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use slab::Slab;

use super::backpressure::Backpressure;
use super::fixed_slots::FixedSlots;
use super::spawner::{Runners, SpawnDone, Spawner, Started};
use super::timers::Timers;
use super::user_data::{pack, unpack, OpTag, Tag};
use super::{Command, EventSink, PendingSpawn, Request, Spawned, WorkerSetup, WorkerShared};
use crate::containment::{ContainmentKind, PoolContainment, TaskContainment};
use crate::error::SpawnError;
use crate::event::{Event, TaskId};
use crate::spec::TaskSpec;
use crate::sys::pidfd;
use crate::sys::ring::{ops, Completion, Ring};
use crate::task::{
    Action, ExitStatus, Notice, Op, Rejected, StreamId, TaskConfig, TaskMachine, TreeWatch,
};

/// How often a paused worker looks whether the user drained the event queue.
const PRESSURE_RECHECK: Duration = Duration::from_millis(5);

/// How often a stopping worker looks again at spawns still under way.
const SPAWN_RECHECK: Duration = Duration::from_millis(10);

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
    /// The threads that clone this worker's children and wait for their exec.
    spawner: Spawner<PendingSpawn>,
    runners: Option<Arc<Runners>>,
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
    spawner: Spawner<PendingSpawn>,
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
        spawner,
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
            self.take_spawned();
            self.fire_timers();
            self.check_pressure()?;
            if self.scans_orphans {
                self.scan_orphans();
            }
            // Stop once every task is gone, no spawn is under way, and the cgroups are removed.
            if self.shutting_down {
                if self.spawner.pending() > 0 {
                    // Normally none (a caller of `spawn` keeps the pool alive); a child
                    // stuck before exec is killed so that its spawner comes back.
                    self.spawner.close();
                } else if self.tasks.is_empty() && self.ring.rmdirs_in_flight() == 0 {
                    return Ok(());
                }
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
        if self.shutting_down && self.spawner.pending() > 0 {
            // Look again at spawns that a kill may have missed (see `run`).
            timeout = Some(timeout.map_or(SPAWN_RECHECK, |t| t.min(SPAWN_RECHECK)));
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
}

impl OpTag {
    fn is_read(self) -> bool {
        matches!(self, OpTag::Read(_))
    }
}

fn signal_byte(signal: i32) -> Option<u8> {
    u8::try_from(signal).ok().filter(|s| (1..=64).contains(s))
}
