//! The public face of pidring: a [`Pool`] of workers, the [`TaskHandle`]s of its tasks
//! (signals, stdin, framed channels), and the [`Event`]s they produce, with each task's
//! budget of delivered and unconsumed data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::containment::{Containment, ContainmentKind, OrphanSweep, PoolContainment};
use crate::error::{BuildError, ControlError, SpawnError, WriteError};
use crate::event::{Event, TaskId};
use crate::spec::TaskSpec;
use crate::task::StreamId;
use crate::worker::cleanup_thread::CleanupThread;
use crate::worker::driver::select::{self, BackendChoice, UringProbe};
use crate::worker::shared::TaskShared;
use crate::worker::{self, Command, EventSink, Request, RingSizes, WorkerSetup, WorkerShared};

/// Which driver runs the state machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring where the kernel and the sandbox allow every opcode the driver uses, epoll
    /// otherwise (`Pool::backend_reason` says why).
    #[default]
    Auto,
    /// io_uring, or `BuildError::BackendUnavailable` (naming the cause and the fix).
    Uring,
    /// epoll: runs everywhere; per-task fds live in the process fd table.
    Epoll,
}

/// The driver a pool chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring: each worker's pidfds and pipes live in its ring's fixed-file table, not in
    /// the process fd table.
    Uring,
    /// epoll: each task's pidfd and pipes are ordinary descriptors of the process.
    Epoll,
}

impl BackendKind {
    /// The driver's name as the CLI and the logs spell it: `"uring"` or `"epoll"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Uring => "uring",
            BackendKind::Epoll => "epoll",
        }
    }
}

/// Counters, summed over the workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Tasks started and not yet released (their `Done` not yet sent) at the time of the call.
    pub live_tasks: u64,
    /// Tasks started since the pool was built (spawns that failed are not counted).
    pub spawned: u64,
    /// Completions that arrived for a task slot that had been released (dropped).
    pub stale_completions: u64,
    /// Events a task's state machine rejected as impossible in its state.
    pub rejected_events: u64,
    /// Driver operations that failed (a pidfd that could not be lent) and were tried again.
    pub driver_retries: u64,
    /// `on_event` callbacks that panicked (the pool went on).
    pub callback_panics: u64,
    /// The most pidfds a worker's driver had lent as ordinary descriptors at once.
    pub lent_pidfds_peak: u64,
}

/// Descriptors a typical task holds in its driver: its pidfd, stdout and stderr, and in
/// cgroup mode `cgroup.events` while its tree is watched.
fn descriptors_per_task(containment: ContainmentKind) -> u64 {
    match containment {
        ContainmentKind::Cgroup => 4,
        ContainmentKind::ProcessGroup => 3,
    }
}

/// A task's default budget: 256 KiB of output and messages delivered and not yet consumed.
pub const DEFAULT_TASK_BUDGET: usize = 256 * 1024;

/// Builds a [`Pool`]; see each option.
pub struct PoolBuilder {
    workers: Option<usize>,
    task_budget: usize,
    per_worker_events: bool,
    submission_queue: u32,
    max_tasks: Option<usize>,
    containment: Containment,
    backend: Backend,
    subreaper: bool,
    callback: Option<Arc<dyn Fn(Event) + Send + Sync>>,
    simulated_probe: Option<UringProbe>,
    #[cfg(test)]
    faults: Option<Arc<crate::worker::driver::faulty::Faults>>,
}

/// Descriptors of the process fd table that an epoll pool leaves to the rest of the program.
const FDS_LEFT_TO_THE_PROGRAM: usize = 256;

impl PoolBuilder {
    /// Number of worker threads, each with its own ring. Default: the number of cores, or
    /// more when [`max_tasks`](Self::max_tasks) needs more fixed-file tables.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The most tasks the pool must hold at once; sizes the number of rings, since one
    /// ring's fixed-file table is capped by `RLIMIT_NOFILE`.
    pub fn max_tasks(mut self, n: usize) -> Self {
        self.max_tasks = Some(n);
        self
    }

    /// Entries of each ring's submission queue (default 4096; 1 to 32,768); the completion
    /// queue gets 16 times as many (at least 256). Submissions beyond the queue wait in a
    /// backlog and completions beyond it in the kernel's overflow list, so this only trades
    /// set-up time and memory for system calls: a pool of a few tasks (`pidring run`)
    /// starts faster with a small queue.
    pub fn submission_queue(mut self, entries: u32) -> Self {
        self.submission_queue = entries;
        self
    }

    /// How a task's whole tree is contained and killed (default [`Containment::Auto`]: a
    /// cgroup v2 per task where one can be made, else the task's process group;
    /// [`Pool::containment_reason`] says which and why). [`Containment::Cgroup`] makes
    /// [`build`](Self::build) fail where no cgroup can be made.
    pub fn containment(mut self, c: Containment) -> Self {
        self.containment = c;
        self
    }

    /// Which driver runs the tasks (default [`Backend::Auto`]: io_uring where the kernel
    /// and the sandbox allow it, else epoll; [`Pool::backend_reason`] says which and why).
    /// [`Backend::Uring`] makes [`build`](Self::build) fail where io_uring cannot run.
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }

    /// Makes this process a child subreaper, and reaps orphaned descendants that come back.
    pub fn subreaper(mut self, on: bool) -> Self {
        self.subreaper = on;
        self
    }

    /// Each task's budget (default [`DEFAULT_TASK_BUDGET`], 256 KiB; `TaskSpec::budget`
    /// overrides it per task): the bytes of `Output` and `Message` events delivered and not
    /// yet consumed (each [`Chunk`](crate::Chunk) is charged its length plus 128 bytes for
    /// the event itself). When a task's budget is full, the pool stops reading that task
    /// (its writer blocks on its full pipe) until the application drops enough of its
    /// chunks; no other task is affected and nothing is dropped. The supervisor's memory for
    /// undelivered data is therefore at most the sum of the live tasks' budgets, plus one
    /// read buffer per task whose read was in flight when it filled up (16 KiB; 64 KiB with
    /// epoll), plus, per framed channel, the frame being received (at most `max_frame`).
    /// A smaller budget lowers the latency of a line under load (less queued ahead of it); a
    /// larger one lowers the cost of pausing and resuming a very chatty task.
    pub fn task_budget(mut self, bytes: usize) -> Self {
        self.task_budget = bytes;
        self
    }

    /// One event receiver per worker ([`Pool::worker_events`]) instead of one for the whole
    /// pool: an application whose single consuming thread is the limit consumes from as
    /// many threads as there are workers. All events of a task come through its worker's
    /// receiver, in the order the pool promises. [`Pool::events`] then delivers nothing.
    pub fn per_worker_events(mut self, on: bool) -> Self {
        self.per_worker_events = on;
        self
    }

    /// Delivers events to this callback (on the worker threads) instead of `Pool::events`.
    /// It must not block for long: it runs on the thread that drives the tasks. A chunk it
    /// receives is consumed when it returns, unless it keeps it. Replying from it
    /// (`TaskHandle::send`, `write`) is the lowest-latency way to answer a task.
    pub fn on_event(mut self, f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        self.callback = Some(Arc::new(f));
        self
    }

    /// Tests only (feature `test-support`): what the io_uring probe would find (a kernel
    /// without an opcode, a sandbox that refuses the ring), instead of asking the kernel.
    #[cfg(feature = "test-support")]
    pub fn simulate_uring_probe(mut self, probe: UringProbe) -> Self {
        self.simulated_probe = Some(probe);
        self
    }

    /// Tests: run every worker's driver under this fault injector.
    #[cfg(test)]
    pub(crate) fn faults(mut self, faults: Arc<crate::worker::driver::faulty::Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Chooses the backend and the containment, raises the soft `RLIMIT_NOFILE` to the
    /// hard limit (children get the original back), and starts the workers.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidOption`] for an option out of range (0 workers or more than
    /// 1024, 0 `max_tasks`, a submission queue outside `1..=32768`, a zero task budget) or
    /// a subreaper that cannot be set up; [`BuildError::BackendUnavailable`] and
    /// [`BuildError::Containment`] when what was asked for explicitly cannot run here;
    /// [`BuildError::Driver`], [`BuildError::Cleanup`] and [`BuildError::Thread`] when the
    /// system refuses a resource. Nothing is left running on error.
    pub fn build(self) -> Result<Pool, BuildError> {
        if !(1..=32768).contains(&self.submission_queue) {
            return Err(BuildError::InvalidOption(format!(
                "submission queue of {} entries: must be 1 to 32768",
                self.submission_queue
            )));
        }
        if self.workers == Some(0) {
            return Err(BuildError::InvalidOption(
                "workers must be at least 1".into(),
            ));
        }
        if self.max_tasks == Some(0) {
            return Err(BuildError::InvalidOption(
                "max_tasks must be at least 1".into(),
            ));
        }
        let backend = select::select(
            self.backend,
            select::probe_with(self.simulated_probe.as_ref()),
        )?;
        let fixed_files = raise_fd_limit();
        let containment = Arc::new(PoolContainment::new(self.containment)?);
        let per_task = descriptors_per_task(containment.kind());
        let per_ring = (u64::from(fixed_files) / per_task).max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let needed_for_tasks = match backend.kind {
            // One ring's fixed-file table holds `per_ring` tasks: more tasks, more rings.
            BackendKind::Uring => self
                .max_tasks
                .map_or(1, |n| (n as u64).div_ceil(per_ring) as usize),
            // epoll shares the process fd table, whatever the number of workers.
            BackendKind::Epoll => 1,
        };
        let workers = self.workers.unwrap_or(cores).max(needed_for_tasks);
        if workers > 1024 {
            return Err(BuildError::InvalidOption(format!(
                "{workers} workers is more than 1024"
            )));
        }
        let orphans = match self.subreaper {
            true => Some(Arc::new(OrphanSweep::new(&containment).map_err(|e| {
                BuildError::InvalidOption(format!("cannot become a child subreaper: {e}"))
            })?)),
            false => None,
        };
        let cleanup = CleanupThread::start().map_err(BuildError::Cleanup)?;
        let dev_null = Arc::new(
            crate::sys::spawn::open_dev_null()
                .map_err(|e| BuildError::Driver(backend.kind.as_str(), e.into()))?,
        );
        let epoll_budget = (fixed_files as usize).saturating_sub(FDS_LEFT_TO_THE_PROGRAM) / workers;
        let capacity_per_worker = match backend.kind {
            BackendKind::Uring => per_ring as usize,
            BackendKind::Epoll => epoll_budget / per_task as usize,
        };
        if self.task_budget == 0 {
            return Err(BuildError::InvalidOption(
                "the task budget must be at least 1 byte".into(),
            ));
        }
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let mut worker_events = Vec::new();
        let mut sinks = Vec::with_capacity(workers);
        for _ in 0..workers {
            sinks.push(match &self.callback {
                Some(f) => EventSink::Callback(Arc::clone(f)),
                None if self.per_worker_events => {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    worker_events.push(rx);
                    EventSink::Channel(tx)
                }
                None => EventSink::Channel(events_tx.clone()),
            });
        }
        drop(events_tx);
        let sizes = RingSizes {
            sq_entries: self.submission_queue.next_power_of_two(),
            cq_entries: (self.submission_queue.next_power_of_two() * 16).clamp(256, 65536),
            fixed_files,
            buffers: 256,
            buffer_size: 16 * 1024,
        };
        let mut shared = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for (index, sink) in sinks.into_iter().enumerate() {
            let setup = WorkerSetup {
                index,
                backend: backend.kind,
                sizes,
                epoll_budget,
                capacity: capacity_per_worker,
                sink,
                task_budget: self.task_budget,
                containment: Arc::clone(&containment),
                cleanup: Arc::clone(&cleanup),
                dev_null: Arc::clone(&dev_null),
                orphans: orphans.clone(),
                #[cfg(test)]
                faults: self.faults.clone(),
            };
            match worker::start(setup) {
                Ok((worker, thread)) => {
                    shared.push(worker);
                    threads.push(thread);
                }
                Err(e) => {
                    stop(&shared, &mut threads, &cleanup);
                    return Err(e);
                }
            }
        }
        let capacity = shared.iter().map(|w| w.capacity).sum();
        tracing::info!(
            workers,
            backend = backend.kind.as_str(),
            backend_reason = %backend.reason,
            fixed_files_per_ring = fixed_files,
            capacity,
            containment = containment.kind().as_str(),
            containment_reason = containment.reason(),
            "pool started"
        );
        Ok(Pool {
            workers: shared,
            threads,
            events: events_rx,
            worker_events,
            containment,
            backend,
            cleanup,
            next_id: AtomicU64::new(1),
            capacity,
        })
    }
}

/// Raises the soft fd limit to the hard one and returns the size of one ring's fixed-file
/// table: the kernel caps it at `RLIMIT_NOFILE`.
fn raise_fd_limit() -> u32 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    // Children get the original soft limit back before exec.
    crate::sys::spawn::remember_nofile_limit();
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the soft fd limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    // The kernel's own ceiling for a fixed table is 1 << 20 entries.
    current.clamp(64, 1 << 20) as u32
}

/// A set of worker threads, each with its own io_uring ring, supervising tasks.
///
/// Dropping the pool kills every live task's tree and waits for them, like
/// [`shutdown`](Pool::shutdown).
pub struct Pool {
    workers: Vec<Arc<WorkerShared>>,
    threads: Vec<JoinHandle<()>>,
    events: Receiver<Event>,
    worker_events: Vec<Receiver<Event>>,
    containment: Arc<PoolContainment>,
    backend: BackendChoice,
    cleanup: Arc<CleanupThread>,
    next_id: AtomicU64,
    capacity: usize,
}

impl Pool {
    /// A builder with the defaults: one worker per core, io_uring and cgroup containment
    /// where available ([`Backend::Auto`], [`Containment::Auto`]), a task budget of
    /// [`DEFAULT_TASK_BUDGET`], one event receiver for the pool, no subreaper.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            workers: None,
            task_budget: DEFAULT_TASK_BUDGET,
            per_worker_events: false,
            submission_queue: 4096,
            max_tasks: None,
            containment: Containment::Auto,
            backend: Backend::Auto,
            subreaper: false,
            callback: None,
            simulated_probe: None,
            #[cfg(test)]
            faults: None,
        }
    }

    /// Starts a task on the least loaded worker. Returns once the program runs (exec
    /// succeeded) or with the reason it could not start.
    pub fn spawn(&self, spec: TaskSpec) -> Result<TaskHandle, SpawnError> {
        if crate::worker::in_callback() {
            return Err(SpawnError::FromCallback);
        }
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.load())
            .ok_or(SpawnError::PoolClosed)?;
        if worker.load() >= worker.capacity as u64 {
            return Err(SpawnError::AtCapacity(worker.live() as usize));
        }
        let prepared = Box::new(crate::sys::spawn::prepare(&spec)?);
        let id = TaskId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (reply_tx, reply_rx) = crate::worker::spawner::reply();
        // Straight to the worker's spawner threads; the worker replies once it adopted the
        // child. A dropped reply means the worker stopped.
        worker.spawn(id, prepared, Box::new(spec), reply_tx);
        let spawned = reply_rx.wait().ok_or(SpawnError::PoolClosed)??;
        Ok(TaskHandle::from_shared(spawned.shared))
    }

    /// Every task's events, in the order the pool promises per task (see [`Event`]).
    /// Empty when the pool was built with [`PoolBuilder::on_event`] or
    /// [`PoolBuilder::per_worker_events`].
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// With [`PoolBuilder::per_worker_events`]: one receiver per worker, each with every
    /// event of the tasks of that worker, in order; consume each from its own thread.
    /// Otherwise empty.
    pub fn worker_events(&self) -> &[Receiver<Event>] {
        &self.worker_events
    }

    /// The containment every task of this pool gets.
    pub fn containment(&self) -> ContainmentKind {
        self.containment.kind()
    }

    /// The driver every worker runs.
    pub fn backend(&self) -> BackendKind {
        self.backend.kind
    }

    /// Why [`backend`](Self::backend) was chosen, in one line (for logs and reports): for
    /// example "requested", or why io_uring was refused and epoll runs instead.
    pub fn backend_reason(&self) -> &str {
        &self.backend.reason
    }

    /// Why [`containment`](Self::containment) was chosen, in one line (for logs and
    /// reports): for example why no cgroup could be made and process groups are used.
    pub fn containment_reason(&self) -> &str {
        self.containment.reason()
    }

    /// How many typical tasks (pidfd, stdout, stderr) the pool can hold at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of worker threads (each with its own ring or epoll instance).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The pool's counters now, summed over the workers (`lent_pidfds_peak`: the largest
    /// worker's). Each counter is read without stopping the workers, so the sums are not
    /// one instant's snapshot.
    pub fn stats(&self) -> PoolStats {
        let mut stats = PoolStats::default();
        for w in &self.workers {
            let c = &w.counters;
            stats.live_tasks += c.live.load(Ordering::Relaxed);
            stats.spawned += c.spawned.load(Ordering::Relaxed);
            stats.stale_completions += c.stale.load(Ordering::Relaxed);
            stats.rejected_events += c.rejected.load(Ordering::Relaxed);
            stats.driver_retries += c.retries.load(Ordering::Relaxed);
            stats.callback_panics += c.callback_panics.load(Ordering::Relaxed);
            stats.lent_pidfds_peak = stats
                .lent_pidfds_peak
                .max(c.lent_pidfds_peak.load(Ordering::Relaxed));
        }
        stats
    }

    /// Kills every live task's tree, waits for their `Done`, and joins the workers.
    pub fn shutdown(mut self) {
        stop(&self.workers, &mut self.threads, &self.cleanup);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        stop(&self.workers, &mut self.threads, &self.cleanup);
    }
}

/// Stops the workers (each kills its tasks' trees and waits for their `Done`), then the
/// cleanup thread once it finished the removals the workers handed it.
fn stop(workers: &[Arc<WorkerShared>], threads: &mut Vec<JoinHandle<()>>, cleanup: &CleanupThread) {
    for w in workers {
        let _ = w.send(Command::Shutdown);
    }
    for thread in threads.drain(..) {
        if thread.join().is_err() {
            tracing::error!("a worker thread panicked");
        }
    }
    cleanup.shutdown();
}

/// A live (or finished) task: its id, and the requests it takes. Cheap to clone; requests
/// to a task that already ended are ignored.
#[derive(Clone)]
pub struct TaskHandle {
    shared: Arc<TaskShared>,
}

impl std::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.shared.id)
            .field("pid", &self.shared.pid)
            .finish()
    }
}

impl TaskHandle {
    pub(crate) fn from_shared(shared: Arc<TaskShared>) -> TaskHandle {
        TaskHandle { shared }
    }

    /// Tests: what the handle shares with its task.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<TaskShared> {
        &self.shared
    }

    /// The task's id, as in its events.
    pub fn id(&self) -> TaskId {
        self.shared.id
    }

    /// The main process's pid, for display: pidring itself signals only through pidfds.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// Sends `signal` to the main process (through its pidfd).
    pub fn signal(&self, signal: i32) -> Result<(), ControlError> {
        if !(1..=64).contains(&signal) {
            return Err(ControlError::InvalidSignal(signal));
        }
        self.request(Request::Signal(signal))
            .map_err(|_| ControlError::PoolClosed)
    }

    /// SIGTERM to the tree, SIGKILL after the task's grace.
    pub fn terminate(&self) -> Result<(), ControlError> {
        self.request(Request::Terminate)
            .map_err(|_| ControlError::PoolClosed)
    }

    /// SIGKILL to the tree at once.
    pub fn kill(&self) -> Result<(), ControlError> {
        self.request(Request::Kill)
            .map_err(|_| ControlError::PoolClosed)
    }

    /// Queues `bytes` for the task's stdin (`TaskSpec::stdin(Stdio::Capture)`): written in
    /// order after everything queued before, through the pool's driver (a task that reads
    /// slowly never blocks the caller nor the pool; what it has not read yet stays queued in
    /// the supervisor). Fails at once when stdin is not captured, was closed, or the task
    /// stopped reading it ([`WriteError::BrokenPipe`], also announced by
    /// `Event::StdinClosed`). Bytes queued when the task ends are dropped and counted in
    /// `Event::StdinClosed::unwritten`.
    pub fn write(&self, bytes: impl Into<Vec<u8>>) -> Result<(), WriteError> {
        self.shared.stdin.check(WriteError::NotCaptured)?;
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Ok(());
        }
        self.request(Request::Write(StreamId::STDIN, bytes))
    }

    /// Closes the task's stdin once everything queued was written (the task then reads
    /// end of file). Closing it again is a no-op.
    pub fn close_stdin(&self) -> Result<(), WriteError> {
        match self.shared.stdin.check(WriteError::NotCaptured) {
            Err(WriteError::NotCaptured) => return Err(WriteError::NotCaptured),
            Err(_) => return Ok(()),
            Ok(()) => {}
        }
        self.shared
            .stdin
            .set(crate::worker::shared::WriteSide::Closed);
        self.request(Request::CloseStdin)
    }

    /// Sends one frame (`payload`, at most the channel's `TaskSpec::max_frame` bytes) on
    /// framed channel `channel` (`TaskSpec::channels`): the child reads its 4-byte
    /// big-endian length, then the payload. Frames go out whole and in order. Fails at once
    /// when the channel does not exist or is closed.
    pub fn send(&self, channel: u8, payload: &[u8]) -> Result<(), WriteError> {
        let side = self
            .shared
            .channel(channel)
            .ok_or(WriteError::NoSuchChannel(channel))?;
        let max = self.shared.max_frame;
        if payload.len() as u64 > u64::from(max) {
            return Err(WriteError::FrameTooLarge {
                len: payload.len() as u64,
                max,
            });
        }
        side.check(WriteError::NoSuchChannel(channel))?;
        let stream = StreamId(self.shared.first_channel + channel);
        self.request(Request::Write(
            stream,
            crate::worker::framing::frame(payload),
        ))
    }

    fn request(&self, request: Request) -> Result<(), WriteError> {
        let shared = &self.shared;
        shared
            .worker
            .send(Command::Control {
                id: shared.id,
                slot: shared.slot,
                request,
            })
            .map_err(|()| WriteError::PoolClosed)
    }
}
