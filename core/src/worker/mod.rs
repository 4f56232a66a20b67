//! A worker: one thread that owns one driver (io_uring or epoll), a slab of tasks and their
//! state machines. Other threads reach it only through its command channel plus an eventfd
//! that the driver watches, so no lock sits on the hot path.
//!
//! What the worker does for its tasks:
//! - spawns them on its spawner threads (`spawner`), which live as long as it does
//!   (`PR_SET_PDEATHSIG` follows the creating thread) and wait for each exec, so that its
//!   loop never does;
//! - hands each task's pidfd and stream ends to its driver (`driver`), which keeps them as
//!   io_uring direct descriptors or in the epoll set;
//! - turns completions into machine events and machine actions into driver operations; the
//!   machine alone decides when a task's slot and descriptors are released;
//! - delivers output and messages as credited chunks, pausing a task's reads while the
//!   application holds its whole budget (`shared`), and writes its stdin and channels.

pub(crate) mod buffers;
pub(crate) mod cleanup_thread;
pub(crate) mod driver;
mod event_loop;
pub(crate) mod framing;
pub(crate) mod shared;
pub(crate) mod spawner;
mod timers;
pub(crate) mod tree_watch;
pub mod user_data;

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::containment::{OrphanSweep, PoolContainment};
use crate::error::{BuildError, SpawnError};
use crate::event::{Event, TaskId};
use crate::pool::BackendKind;
use crate::spec::TaskSpec;
use cleanup_thread::CleanupThread;
use driver::epoll::EpollDriver;
use driver::uring::UringDriver;
use driver::DriverStats;

/// A request about one live task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Signal(i32),
    Terminate,
    Kill,
    /// Queue bytes (a whole frame, for a channel) for a stream the supervisor writes.
    Write(crate::task::StreamId, Vec<u8>),
    CloseStdin,
}

pub(crate) enum Command {
    Control {
        /// The task's full id: only it tells a stale handle from the slot's next task.
        id: TaskId,
        slot: u32,
        request: Request,
    },
    /// The application consumed enough of a paused task's chunks: read it again.
    Resume { id: TaskId, slot: u32 },
    /// Kill every task, wait for their `Done`, and stop.
    Shutdown,
}

/// What a successful spawn tells the caller.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) shared: Arc<shared::TaskShared>,
}

/// Where events go.
#[derive(Clone)]
pub(crate) enum EventSink {
    Channel(Sender<Event>),
    Callback(Arc<dyn Fn(Event) + Send + Sync>),
}

thread_local! {
    /// Set while this thread runs a user's `on_event` callback.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// On a worker thread: its `WorkerShared` (compared by address only).
    static THIS_WORKER: std::cell::Cell<*const WorkerShared> =
        const { std::cell::Cell::new(std::ptr::null()) };
}

/// Whether the calling thread is inside an `on_event` callback (on a worker thread).
pub(crate) fn in_callback() -> bool {
    IN_CALLBACK.with(|c| c.get())
}

impl EventSink {
    /// Hands an event over; `false` once the receiving side is gone.
    fn deliver(&self, event: Event, counters: &Counters) -> bool {
        match self {
            // A user who dropped the receiver no longer wants events: not an error.
            EventSink::Channel(tx) => tx.send(event).is_ok(),
            EventSink::Callback(f) => {
                IN_CALLBACK.with(|c| c.set(true));
                // A panicking callback must not take the worker (and, through PDEATHSIG,
                // every task it supervises) down with it: it is logged, counted, and the
                // next event is delivered as usual.
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(event)));
                IN_CALLBACK.with(|c| c.set(false));
                if result.is_err() {
                    counters.callback_panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("an on_event callback panicked; its event is lost to it");
                }
                true
            }
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
    /// Driver operations that failed and were tried again.
    pub(crate) retries: AtomicU64,
    pub(crate) callback_panics: AtomicU64,
    /// The most pidfds the driver had lent at once.
    pub(crate) lent_pidfds_peak: AtomicU64,
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
        // From the worker's own thread (an `on_event` callback replying to a message, a
        // chunk dropped there) the loop takes its commands before it waits again: no wake-up.
        if THIS_WORKER.with(|w| w.get()) == std::ptr::from_ref(self) {
            return Ok(());
        }
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

    fn publish_driver_stats(&self, stats: DriverStats) {
        self.counters
            .lent_pidfds_peak
            .fetch_max(stats.lent_pidfds_peak, Ordering::Relaxed);
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
    pub(crate) backend: BackendKind,
    pub(crate) sizes: RingSizes,
    /// epoll: descriptors this worker may hold (its share of the process fd table).
    pub(crate) epoll_budget: usize,
    /// Typical tasks this worker can hold at once.
    pub(crate) capacity: usize,
    pub(crate) sink: EventSink,
    /// Default budget of a task (bytes delivered and not yet consumed).
    pub(crate) task_budget: usize,
    pub(crate) containment: Arc<PoolContainment>,
    pub(crate) cleanup: Arc<CleanupThread>,
    /// `/dev/null`, opened once per pool, for the children's stdio that goes nowhere.
    pub(crate) dev_null: Arc<OwnedFd>,
    /// The pool's orphan sweep, when the pool is a subreaper: it knows the task runners
    /// (registered under its lock around each spawn) so it never takes a runner's status.
    pub(crate) orphans: Option<Arc<OrphanSweep>>,
    /// Tests: run the driver under a fault injector.
    #[cfg(test)]
    pub(crate) faults: Option<Arc<driver::faulty::Faults>>,
}

/// Starts a worker thread. Returns once its driver exists, or with the reason it could not.
pub(crate) fn start(setup: WorkerSetup) -> Result<(Arc<WorkerShared>, JoinHandle<()>), BuildError> {
    let wake = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|e| BuildError::Driver(setup.backend.as_str(), e.into()))?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<io::Result<()>>(1);
    let backend = setup.backend.as_str();
    let wake = Arc::new(wake);
    let worker_wake = Arc::clone(&wake);
    let spawner_wake = Arc::clone(&wake);
    let (spawner, spawns) = spawner::Spawner::start(
        setup.index,
        Arc::clone(&setup.containment),
        Arc::clone(&setup.dev_null),
        setup.orphans.clone(),
        move || {
            // Fails only if the counter would overflow, which a worker that reads it never
            // lets happen; the finished spawn is queued either way.
            let _ = rustix::io::write(&*spawner_wake, &1u64.to_ne_bytes());
        },
    )
    .map_err(BuildError::Thread)?;
    let capacity = setup.capacity;
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
        .spawn(move || run_thread(setup, spawner, rx, worker_wake, thread_shared, ready_tx))
        .map_err(BuildError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((shared, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(BuildError::Driver(backend, e))
        }
        Err(_) => {
            let _ = thread.join();
            Err(BuildError::Driver(
                backend,
                io::Error::other("worker thread ended during setup"),
            ))
        }
    }
}

/// The worker thread: builds its driver (an io_uring ring must be created by the thread
/// that submits to it) and runs the loop on it.
fn run_thread(
    setup: WorkerSetup,
    spawner: spawner::Spawner<PendingSpawn>,
    commands: crossbeam_channel::Receiver<Command>,
    wake: Arc<OwnedFd>,
    shared: Arc<WorkerShared>,
    ready: Sender<io::Result<()>>,
) {
    // Writes to stdin pipes run on this thread: a reader gone must be an EPIPE, never a
    // SIGPIPE that ends the host process.
    crate::sys::signals::block_sigpipe();
    THIS_WORKER.with(|w| w.set(Arc::as_ptr(&shared)));
    // A supervisor's loop runs briefly and often: prompt wake-ups, not long slices.
    if let Err(e) = crate::sys::sched::request_short_slice(WORKER_SLICE) {
        tracing::debug!(error = %e, "no short scheduler slice for the worker thread");
    }
    // Chunk buffers hold one read: the driver's read size.
    let read_size = match setup.backend {
        BackendKind::Uring => setup.sizes.buffer_size,
        BackendKind::Epoll => driver::epoll::READ_SIZE,
    };
    let buffers = Arc::new(buffers::BufferPool::new(read_size, KEPT_BUFFERS));
    match setup.backend {
        BackendKind::Uring => match UringDriver::new(setup.sizes, wake) {
            Ok(driver) => run_on(driver, setup, spawner, commands, shared, ready, buffers),
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        },
        BackendKind::Epoll => {
            match EpollDriver::new(setup.epoll_budget, wake, Arc::clone(&buffers)) {
                Ok(driver) => run_on(driver, setup, spawner, commands, shared, ready, buffers),
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        }
    }
}

fn run_on<D: driver::Driver>(
    driver: D,
    setup: WorkerSetup,
    spawner: spawner::Spawner<PendingSpawn>,
    commands: crossbeam_channel::Receiver<Command>,
    shared: Arc<WorkerShared>,
    ready: Sender<io::Result<()>>,
    buffers: Arc<buffers::BufferPool>,
) {
    #[cfg(test)]
    if let Some(faults) = setup.faults.clone() {
        let driver = driver::faulty::Faulty::new(driver, faults);
        return event_loop::run(driver, setup, spawner, commands, shared, ready, buffers);
    }
    event_loop::run(driver, setup, spawner, commands, shared, ready, buffers)
}

/// The scheduler slice a worker thread asks for (the shortest the kernel grants).
const WORKER_SLICE: std::time::Duration = std::time::Duration::from_micros(100);

/// Unused chunk buffers a worker keeps for reuse (more are freed).
const KEPT_BUFFERS: usize = 16;
