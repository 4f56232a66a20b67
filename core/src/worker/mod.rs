//! The io_uring worker: one thread that owns one ring, a slab of tasks and their state
//! machines. Other threads reach it only through its command channel plus an eventfd that
//! the ring polls, so no lock sits on the hot path.
//!
//! What the worker does for its tasks:
//! - spawns them on its spawner threads, which live as long as it does (`PR_SET_PDEATHSIG`
//!   follows the creating thread) and wait for each exec so that its loop never does;
//! - keeps each task's pidfd and pipe ends as direct descriptors in the ring's fixed-file
//!   table, so the process fd table holds no per-task entry;
//! - turns completions into machine events and machine actions into submissions; the
//!   machine alone decides when a task's slot and descriptors are released.

mod backpressure;
mod event_loop;
mod fixed_slots;
pub(crate) mod spawner;
mod timers;
pub mod user_data;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::containment::PoolContainment;
use crate::error::{BuildError, SpawnError};
use crate::event::{Event, TaskId};
use crate::spec::TaskSpec;

/// A request about one live task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Signal(i32),
    Terminate,
    Kill,
}

pub(crate) enum Command {
    Control {
        slot: u32,
        generation: u16,
        request: Request,
    },
    /// Kill every task, wait for their `Done`, and stop.
    Shutdown,
}

/// What a successful spawn tells the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spawned {
    pub(crate) slot: u32,
    pub(crate) generation: u16,
    pub(crate) pid: i32,
}

/// Where events go.
#[derive(Clone)]
pub(crate) enum EventSink {
    Channel(Sender<Event>),
    Callback(Arc<dyn Fn(Event) + Send + Sync>),
}

impl EventSink {
    /// Hands an event over; `false` once the receiving side is gone.
    fn deliver(&self, event: Event) -> bool {
        match self {
            // A user who dropped the receiver no longer wants events: not an error.
            EventSink::Channel(tx) => tx.send(event).is_ok(),
            EventSink::Callback(f) => {
                f(event);
                true
            }
        }
    }

    /// Events queued and not yet received; `None` when the sink cannot fill up.
    fn queued(&self) -> Option<usize> {
        match self {
            EventSink::Channel(tx) => Some(tx.len()),
            // A callback runs on the worker: it is its own back-pressure.
            EventSink::Callback(_) => None,
        }
    }
}

/// Counters a worker publishes.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) live: AtomicU64,
    pub(crate) spawned: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

/// What the worker keeps about a spawn while its spawner threads work on it.
pub(crate) struct PendingSpawn {
    pub(crate) spec: Box<TaskSpec>,
    /// Where `Pool::spawn`'s caller waits for the result, sent once the task is adopted.
    pub(crate) reply: spawner::ReplyTx<Result<Spawned, SpawnError>>,
}

/// The part of a worker that other threads hold.
pub(crate) struct WorkerShared {
    commands: Sender<Command>,
    /// Straight to the worker's spawner threads: a spawn wakes the worker only once it is
    /// done.
    spawns: spawner::SpawnQueue<PendingSpawn>,
    /// The worker's eventfd (shared with its spawner threads, which wake it too).
    wake: Arc<OwnedFd>,
    pub(crate) counters: Counters,
    pub(crate) capacity: usize,
}

impl WorkerShared {
    /// Queues a command and wakes the worker. Fails once the worker has stopped.
    pub(crate) fn send(&self, command: Command) -> Result<(), ()> {
        self.commands.send(command).map_err(drop)?;
        // An eventfd write fails only if the counter would overflow, which a worker that
        // keeps reading it never lets happen; the command is queued either way.
        let _ = rustix::io::write(self.wake.as_fd(), &1u64.to_ne_bytes());
        Ok(())
    }

    /// Starts a task: `prepared` (resolved on the caller's thread) goes to the spawner
    /// threads; the result comes on `reply` once the program runs and the worker adopted it.
    pub(crate) fn spawn(
        &self,
        id: TaskId,
        prepared: Box<crate::sys::spawn::Prepared>,
        spec: Box<TaskSpec>,
        reply: spawner::ReplyTx<Result<Spawned, SpawnError>>,
    ) {
        let request = spawner::SpawnRequest {
            id,
            prepared,
            limits: spec.limits,
        };
        self.spawns.submit(request, PendingSpawn { spec, reply });
    }

    /// Live tasks plus spawns under way: what the pool balances on.
    pub(crate) fn load(&self) -> u64 {
        self.counters.live.load(Ordering::Relaxed) + self.spawns.pending() as u64
    }

    pub(crate) fn live(&self) -> u64 {
        self.counters.live.load(Ordering::Relaxed)
    }
}

/// Sizes of one worker's ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingSizes {
    pub(crate) sq_entries: u32,
    pub(crate) cq_entries: u32,
    pub(crate) fixed_files: u32,
    pub(crate) buffers: u16,
    pub(crate) buffer_size: usize,
}

/// Everything a worker thread needs besides its ring, which it builds itself.
pub(crate) struct WorkerSetup {
    pub(crate) index: usize,
    pub(crate) sizes: RingSizes,
    pub(crate) sink: EventSink,
    pub(crate) containment: Arc<PoolContainment>,
    /// Pids of task runners, kept only when the pool is a subreaper, so that orphan
    /// reaping never takes a runner's status.
    pub(crate) runners: Option<Arc<spawner::Runners>>,
}

/// Starts a worker thread. Returns once its ring exists, or with the reason it could not.
pub(crate) fn start(setup: WorkerSetup) -> Result<(Arc<WorkerShared>, JoinHandle<()>), BuildError> {
    let wake = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|e| BuildError::Ring(e.into()))?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<io::Result<()>>(1);
    let worker_wake = wake.try_clone().map_err(BuildError::Ring)?;
    let wake = Arc::new(wake);
    let spawner_wake = Arc::clone(&wake);
    let (spawner, spawns) = spawner::Spawner::start(
        setup.index,
        Arc::clone(&setup.containment),
        setup.runners.clone(),
        move || {
            // Fails only if the counter would overflow, which a worker that reads it never
            // lets happen; the finished spawn is queued either way.
            let _ = rustix::io::write(&*spawner_wake, &1u64.to_ne_bytes());
        },
    )
    .map_err(BuildError::Thread)?;
    let capacity = (setup.sizes.fixed_files / 3) as usize;
    let shared = Arc::new(WorkerShared {
        commands: tx,
        spawns,
        wake,
        counters: Counters::default(),
        capacity,
    });
    let thread_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name(format!("pidring-worker-{}", setup.index))
        .spawn(move || event_loop::run(setup, spawner, rx, worker_wake, thread_shared, ready_tx))
        .map_err(BuildError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((shared, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(BuildError::Ring(e))
        }
        Err(_) => {
            let _ = thread.join();
            Err(BuildError::Ring(io::Error::other(
                "worker thread ended during setup",
            )))
        }
    }
}
