//! The worker thread's loop, the same for every driver: commands in, machine actions out
//! as driver operations, completions back to the machines, and the release of a task's
//! resources when its machine says so.
//!
//! - `spawning`: adopting the tasks the spawner threads started (their fds to the driver);
//! - `inputs`: due wake-ups and completions, turned into machine events;
//! - `actions`: machine actions, turned into driver operations, events and releases;
//! - `data`: output and messages delivered as credited chunks (flow control), and the
//!   queues of bytes written to stdin and channels;
//! - `tree`: carrying out the tree watch (`super::tree_watch`) and tree signals;
//! - `cleanup`: removing released tasks' cgroups and reaping orphans.

mod actions;
mod cleanup;
mod data;
mod inputs;
mod spawning;
mod tree;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use slab::Slab;

use super::buffers::BufferPool;
use super::cleanup_thread::CleanupThread;
use super::driver::{Completion, Driver, Handle};
use super::shared::TaskShared;
use super::spawner::Spawner;
use super::timers::{TaskWakeups, Timers, WakeKind};
use super::tree_watch::{TreeWatch, WatchMode};
use super::user_data::{pack, OpTag, PidfdUse, Tag};
use super::{Command, EventSink, PendingSpawn, Request, WorkerSetup, WorkerShared};
use crate::containment::{ContainmentKind, OrphanSweep, TaskContainment};
use crate::error::SpawnError;
use crate::event::{Event, TaskId};
use crate::task::{Input, Rejected, StreamId, TaskMachine};
use data::{StreamKind, WriteQueue};

/// How often a stopping worker looks again at spawns still under way.
const SPAWN_RECHECK: Duration = Duration::from_millis(10);

/// How often the subreaper worker looks for orphans when nothing else wakes it.
const ORPHAN_SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// The shortest gap between two orphan scans (a kill-all ends thousands of runners at once).
const ORPHAN_SCAN_MIN_GAP: Duration = Duration::from_millis(10);

/// Process-group mode re-probes an occupied group after this delay, doubling up to the max.
const PROBE_FIRST_DELAY: Duration = Duration::from_millis(5);
const PROBE_MAX_DELAY: Duration = Duration::from_millis(100);

/// A failed driver operation (a pidfd that could not be lent) is tried again after this
/// delay, doubling up to the max, for as long as its task lives.
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(1);
const RETRY_MAX_DELAY: Duration = Duration::from_millis(100);

struct TaskSlot {
    id: TaskId,
    /// What the task's handles and chunks share with the worker (flow-control credit).
    shared: Arc<TaskShared>,
    /// The worker told the machine to pause (flow control) and no resume came yet.
    paused: bool,
    /// Entered whenever the loop works for this task, so that every log line it writes
    /// (the machine's state changes included) names the task among thousands.
    span: tracing::Span,
    generation: u16,
    machine: TaskMachine,
    pid: i32,
    /// The pidfd, adopted by the driver.
    pidfd: Handle,
    /// Each stream's supervisor end and the state of its read.
    streams: Vec<StreamSlot>,
    tree: Option<TaskContainment>,
    watch: TreeWatch,
    /// `cgroup.events`, adopted by the driver while a `Notify` watch needs it.
    tree_events: Option<Handle>,
    /// Process-group mode: the delay before the next probe.
    probe_delay: Duration,
    /// Pidfd uses whose lend failed, to be tried again (`WakeKind::Retry`).
    retries: Vec<PidfdUse>,
    retry_delay: Duration,
    wakeups: TaskWakeups,
    descendants_killed: u64,
    /// The main process was reaped (it no longer counts among the tree's processes).
    reaped: bool,
}

/// One captured stream of a task, as the worker sees it.
struct StreamSlot {
    id: StreamId,
    handle: Handle,
    kind: StreamKind,
    /// Bytes queued to write (stdin, a framed channel) and the one write in flight.
    queue: WriteQueue,
    /// The errno of the read error that ended the stream, if one did.
    read_error: Option<i32>,
    /// The errno of the write error that ended its write side, if one did.
    write_error: Option<i32>,
}

impl TaskSlot {
    fn stream(&mut self, stream: StreamId) -> Option<&mut StreamSlot> {
        self.streams.iter_mut().find(|s| s.id == stream)
    }

    fn tag(&self, key: usize, op: OpTag) -> u64 {
        pack(Tag {
            slot: key as u32,
            generation: self.generation,
            op,
        })
    }
}

struct Worker<D: Driver> {
    driver: D,
    /// The threads that clone this worker's children and wait for their exec.
    spawner: Spawner<PendingSpawn>,
    tasks: Slab<TaskSlot>,
    /// Generation per slab key; survives the slot's removal.
    generations: Vec<u16>,
    timers: Timers,
    completions: Vec<Completion>,
    /// Inputs the loop makes itself (a cancellation that completes at once), fed to the
    /// machines after the current action was carried out: (slot, generation, input).
    synthetic: VecDeque<(usize, u16, Input)>,
    commands: Receiver<Command>,
    shared: Arc<WorkerShared>,
    sink: EventSink,
    /// Set once a delivery failed: nobody reads events any more.
    sink_gone: bool,
    /// Default budget of a task.
    task_budget: usize,
    /// Where chunk buffers come from and go back to.
    buffers: Arc<BufferPool>,
    watch_mode: WatchMode,
    cleanup: Arc<CleanupThread>,
    orphans: Option<Arc<OrphanSweep>>,
    scans_orphans: bool,
    periodic_orphan_scan: bool,
    last_orphan_scan: Instant,
    orphans_pending: bool,
    /// Numbers the cgroup removals in flight (their `user_data`).
    rmdir_seq: u32,
    shutting_down: bool,
}

/// Runs a worker on `driver` until it is shut down. `ready` learns that the loop started.
pub(super) fn run<D: Driver>(
    driver: D,
    setup: WorkerSetup,
    spawner: Spawner<PendingSpawn>,
    commands: Receiver<Command>,
    shared: Arc<WorkerShared>,
    ready: Sender<io::Result<()>>,
    buffers: Arc<BufferPool>,
) {
    let index = setup.index;
    let watch_mode = match setup.containment.kind() {
        ContainmentKind::Cgroup => WatchMode::Notify,
        ContainmentKind::ProcessGroup => WatchMode::Probe,
    };
    let mut worker = Worker {
        driver,
        spawner,
        tasks: Slab::new(),
        generations: Vec::new(),
        timers: Timers::default(),
        completions: Vec::with_capacity(1024),
        synthetic: VecDeque::new(),
        commands,
        shared,
        sink: setup.sink,
        sink_gone: false,
        task_budget: setup.task_budget,
        buffers,
        watch_mode,
        cleanup: setup.cleanup,
        scans_orphans: setup.orphans.is_some(),
        periodic_orphan_scan: setup.orphans.is_some() && setup.index == 0,
        orphans: setup.orphans,
        last_orphan_scan: Instant::now(),
        orphans_pending: false,
        rmdir_seq: 0,
        shutting_down: false,
    };
    let _ = ready.send(Ok(()));
    tracing::debug!(
        worker = index,
        backend = worker.driver.kind().as_str(),
        "worker started"
    );
    if let Err(e) = worker.run() {
        // The driver itself failed: nothing more can be driven. Tasks still live keep their
        // PDEATHSIG link to this thread, so they die with it rather than run unsupervised.
        tracing::error!(worker = index, error = %e, "worker driver failed; stopping");
    }
    tracing::debug!(worker = index, "worker stopped");
}

impl<D: Driver> Worker<D> {
    fn run(&mut self) -> io::Result<()> {
        loop {
            self.take_commands();
            self.take_spawned();
            self.fire_timers();
            self.feed_synthetic();
            if self.scans_orphans {
                self.scan_orphans();
            }
            // Stop once every task is gone, no spawn is under way, and the cgroups are removed.
            if self.shutting_down {
                if self.spawner.pending() > 0 {
                    // Normally none (a caller of `spawn` keeps the pool alive); a child stuck
                    // before exec is killed so that its spawner comes back.
                    self.spawner.close();
                } else if self.tasks.is_empty() && self.driver.dirs_in_flight() == 0 {
                    return Ok(());
                }
            }
            let timeout = self.wait_timeout();
            let mut batch = std::mem::take(&mut self.completions);
            self.driver.wait(timeout, &mut batch)?;
            for completion in batch.drain(..) {
                self.complete(completion);
                self.feed_synthetic();
            }
            self.completions = batch;
            self.shared.publish_driver_stats(self.driver.stats());
        }
    }

    fn wait_timeout(&self) -> Option<Duration> {
        // Commands queued from this thread (a callback's reply, a chunk dropped here) do not
        // wake it: take them before sleeping.
        if !self.synthetic.is_empty() || !self.commands.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout = self.timers.next().map(|t| t.saturating_duration_since(now));
        let mut at_most = |limit: Duration| {
            timeout = Some(timeout.map_or(limit, |t| t.min(limit)));
        };
        if self.shutting_down && self.spawner.pending() > 0 {
            // Look again at spawns that a kill may have missed (see `run`).
            at_most(SPAWN_RECHECK);
        }
        if self.orphans_pending {
            at_most(ORPHAN_SCAN_MIN_GAP);
        } else if self.periodic_orphan_scan {
            at_most(ORPHAN_SCAN_INTERVAL);
        }
        timeout
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
                Command::Control { id, slot, request } => self.control(id, slot, request),
                Command::Resume { id, slot } => self.resume(id, slot),
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
            // Nobody may be consuming any more: a shutdown must not wait for the application,
            // so flow control ends here (what is left to read is bounded: the trees die).
            self.unpause(key);
            self.input(key, Input::Kill);
        }
    }

    /// A user request. It must name the task by its full id: a slot is reused after its
    /// task's release and its 16-bit generation wraps, so only the id tells a stale handle
    /// from the task that holds the slot now.
    fn control(&mut self, id: TaskId, slot: u32, request: Request) {
        let key = slot as usize;
        if self.tasks.get(key).is_none_or(|task| task.id != id) {
            // The task already ended: a late request is not an error for the caller.
            return;
        }
        let input = match request {
            Request::Signal(signal) => Input::Signal(signal),
            Request::Terminate => Input::Terminate,
            Request::Kill => Input::Kill,
            Request::CloseStdin => Input::CloseStdin,
            Request::Write(stream, bytes) => {
                self.queue_write(key, stream, bytes);
                return;
            }
        };
        self.input(key, input);
    }

    /// Feeds one input to a live task's machine and carries out what follows.
    fn input(&mut self, key: usize, input: Input) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        let span = task.span.clone();
        let _entered = span.enter();
        let result = task.machine.handle(input, Instant::now());
        self.after_input(key, result);
    }

    /// Feeds the inputs the loop made itself, in order.
    fn feed_synthetic(&mut self) {
        while let Some((key, generation, input)) = self.synthetic.pop_front() {
            if self
                .tasks
                .get(key)
                .is_some_and(|t| t.generation == generation)
            {
                self.input(key, input);
            }
        }
    }

    /// Queues an input for a task, fed once the current action is carried out.
    fn later(&mut self, key: usize, input: Input) {
        let generation = self.tasks[key].generation;
        self.synthetic.push_back((key, generation, input));
    }

    fn count_rejected(&self, key: usize, rejected: Rejected) {
        self.shared
            .counters
            .rejected
            .fetch_add(1, Ordering::Relaxed);
        if let Some(task) = self.tasks.get(key) {
            tracing::debug!(task = %task.id, %rejected, "machine rejected an event");
        }
    }
}

fn signal_byte(signal: i32) -> Option<u8> {
    u8::try_from(signal).ok().filter(|s| (1..=64).contains(s))
}
