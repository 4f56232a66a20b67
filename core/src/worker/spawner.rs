//! A worker's spawners: long-lived threads that do the clone, so the worker's event loop
//! never waits for an exec.
//!
//! A vfork-class clone suspends the calling thread until the child has called `execve`,
//! which a hung mount can make last forever; and `PR_SET_PDEATHSIG` follows the thread that
//! cloned. So each worker owns [`SPAWNERS_PER_WORKER`] threads that live exactly as long as
//! the worker: they take [`SpawnRequest`]s from one queue, make the task's cgroup, clone,
//! and hand back a [`SpawnDone`] (the pid, pidfd and stream ends, or a typed error),
//! waking the worker through its eventfd. Callers of `Pool::spawn` submit straight to that
//! queue ([`SpawnQueue::submit`], from any thread), so a spawn costs the worker one wake;
//! the worker only calls [`Spawner::try_finished`] and adopts the child, while its other
//! tasks' timers, kills and reads go on. With two threads, one spawn stuck before exec does
//! not hold up the next.
//!
//! Each spawner thread blocks every signal for good (its children inherit the mask until
//! they reset it), and publishes the child it is cloning ([`InFlight`]): the orphan sweep
//! of a subreaper pool leaves that pid alone ([`OrphanSweep::watch_in_flight`]), and
//! closing the spawner kills a child stuck before exec.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::containment::{OrphanSweep, PoolContainment, TaskContainment};
use crate::error::SpawnError;
use crate::event::TaskId;
use crate::spec::Limits;
use crate::sys::spawn::{self, Cloner, InFlight, Prepared};
use crate::task::StreamId;

/// Spawner threads per worker: spawns in parallel while a child execs, and one stuck exec
/// does not stop the next spawn.
pub(crate) const SPAWNERS_PER_WORKER: usize = 2;

/// What to start.
pub(crate) struct SpawnRequest {
    pub(crate) id: TaskId,
    /// Resolved on the caller's thread.
    pub(crate) prepared: Box<Prepared>,
    /// For the task's cgroup.
    pub(crate) limits: Limits,
}

/// A task whose program runs.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) pid: i32,
    /// Blocking pidfd, `O_CLOEXEC`.
    pub(crate) pidfd: OwnedFd,
    /// Supervisor ends of the captured streams, in `StreamId` order.
    pub(crate) streams: Vec<(StreamId, OwnedFd)>,
    pub(crate) tree: TaskContainment,
}

/// The end of one spawn, with what the submitter attached to it.
pub(crate) struct SpawnDone<T> {
    pub(crate) id: TaskId,
    /// `Err` leaves nothing behind: no child, no cgroup.
    pub(crate) result: Result<Started, SpawnError>,
    pub(crate) carry: T,
}

struct Job<T> {
    request: SpawnRequest,
    carry: T,
}

/// The spawn queue. A mutex and a condition variable, not a channel: a spawner thread waits
/// for work, and a caller for its reply, for about an exec's time, and should sleep at once
/// rather than spin and yield first (which costs CPU every spawn).
struct JobQueue<T> {
    state: Mutex<QueueState<T>>,
    work: Condvar,
}

struct QueueState<T> {
    jobs: VecDeque<Job<T>>,
    /// The spawner is being dropped: threads end once the queue is empty.
    stopped: bool,
}

impl<T> JobQueue<T> {
    /// Queues `job`, or gives it back if the spawner stopped.
    fn push(&self, job: Job<T>) -> Result<(), Job<T>> {
        let mut state = lock(&self.state);
        if state.stopped {
            return Err(job);
        }
        state.jobs.push_back(job);
        drop(state);
        self.work.notify_one();
        Ok(())
    }

    /// The next job; `None` once stopped and empty.
    fn pop(&self) -> Option<Job<T>> {
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.stopped {
                return None;
            }
            state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn stop(&self) {
        lock(&self.state).stopped = true;
        self.work.notify_all();
    }
}

/// The sending half of a one-shot reply (see [`reply`]).
pub(crate) struct ReplyTx<T>(Arc<ReplySlot<T>>);
/// The receiving half of a one-shot reply.
pub(crate) struct ReplyRx<T>(Arc<ReplySlot<T>>);

struct ReplySlot<T> {
    state: Mutex<ReplyState<T>>,
    ready: Condvar,
}

enum ReplyState<T> {
    Waiting,
    Sent(T),
    /// The sender was dropped without an answer (the worker stopped).
    Dropped,
}

/// A one-shot reply for `Pool::spawn`'s caller, who sleeps until it comes (no spinning: it
/// comes after an exec).
pub(crate) fn reply<T>() -> (ReplyTx<T>, ReplyRx<T>) {
    let slot = Arc::new(ReplySlot {
        state: Mutex::new(ReplyState::Waiting),
        ready: Condvar::new(),
    });
    (ReplyTx(Arc::clone(&slot)), ReplyRx(slot))
}

impl<T> ReplyTx<T> {
    pub(crate) fn send(self, value: T) {
        *lock(&self.0.state) = ReplyState::Sent(value);
        self.0.ready.notify_one();
    }
}

impl<T> Drop for ReplyTx<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        if let ReplyState::Waiting = *state {
            *state = ReplyState::Dropped;
            drop(state);
            self.0.ready.notify_one();
        }
    }
}

impl<T> ReplyRx<T> {
    /// The reply; `None` if the sender went away without one.
    pub(crate) fn wait(self) -> Option<T> {
        let mut state = lock(&self.0.state);
        loop {
            match std::mem::replace(&mut *state, ReplyState::Dropped) {
                ReplyState::Sent(value) => return Some(value),
                ReplyState::Dropped => return None,
                ReplyState::Waiting => {
                    *state = ReplyState::Waiting;
                    state = self.0.ready.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

/// What the worker and its spawner threads share.
struct Shared {
    /// Submitted and not yet taken back with `try_finished`.
    pending: AtomicUsize,
    closed: AtomicBool,
    /// A wake is on its way to the worker: later finished spawns need none of their own
    /// (under load one wake brings many).
    wake_pending: AtomicBool,
    in_flight: Vec<Arc<InFlight>>,
}

/// The submitting half, held by whoever calls `Pool::spawn` (any thread).
pub(crate) struct SpawnQueue<T> {
    jobs: Arc<JobQueue<T>>,
    /// For jobs that no spawner thread can take any more.
    refused: Sender<SpawnDone<T>>,
    shared: Arc<Shared>,
}

/// One worker's spawner threads, owned by the worker. Dropping it kills a child stuck
/// before exec and joins the threads.
pub(crate) struct Spawner<T> {
    jobs: Arc<JobQueue<T>>,
    done: Receiver<SpawnDone<T>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Spawner<T> {
    /// Starts the spawner threads of worker `worker`. `wake` is called after each finished
    /// spawn (it writes the worker's eventfd).
    pub(crate) fn start(
        worker: usize,
        containment: Arc<PoolContainment>,
        null: Arc<OwnedFd>,
        orphans: Option<Arc<OrphanSweep>>,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<(Spawner<T>, SpawnQueue<T>)> {
        let jobs = Arc::new(JobQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                stopped: false,
            }),
            work: Condvar::new(),
        });
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
        let mut cloners = Vec::with_capacity(SPAWNERS_PER_WORKER);
        for _ in 0..SPAWNERS_PER_WORKER {
            let mut cloner = Cloner::new()?;
            cloner.use_dev_null(Arc::clone(&null));
            cloners.push(cloner);
        }
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            in_flight: cloners.iter().map(|c| Arc::clone(c.in_flight())).collect(),
        });
        if let Some(sweep) = &orphans {
            for record in &shared.in_flight {
                sweep.watch_in_flight(Arc::clone(record));
            }
        }
        let queue = SpawnQueue {
            jobs: Arc::clone(&jobs),
            refused: done_tx.clone(),
            shared: Arc::clone(&shared),
        };
        let mut spawner = Spawner {
            jobs: Arc::clone(&jobs),
            done: done_rx,
            shared: Arc::clone(&shared),
            threads: Vec::with_capacity(SPAWNERS_PER_WORKER),
        };
        for (k, cloner) in cloners.into_iter().enumerate() {
            let thread = SpawnerThread {
                cloner,
                jobs: Arc::clone(&jobs),
                done: done_tx.clone(),
                wake: Arc::clone(&wake),
                containment: Arc::clone(&containment),
                orphans: orphans.clone(),
                shared: Arc::clone(&shared),
            };
            let handle = std::thread::Builder::new()
                .name(format!("pidring-spawn-{worker}.{k}"))
                .stack_size(256 * 1024)
                .spawn(move || thread.run())?;
            spawner.threads.push(handle);
        }
        Ok((spawner, queue))
    }

    /// A finished spawn, if any.
    pub(crate) fn try_finished(&self) -> Option<SpawnDone<T>> {
        // Cleared before looking: a spawn finished after this look wakes the worker again.
        self.shared.wake_pending.store(false, Ordering::SeqCst);
        let done = self.done.try_recv().ok()?;
        self.shared.pending.fetch_sub(1, Ordering::SeqCst);
        Some(done)
    }

    /// Spawns submitted and not yet taken back.
    pub(crate) fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// From now on, queued spawns fail with `PoolClosed`, and a child stuck before exec is
    /// killed (its spawn fails). Call again while spawns are pending: a child whose clone
    /// was under way may have been missed.
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for record in &self.shared.in_flight {
            record.kill();
        }
    }
}

impl<T> SpawnQueue<T> {
    /// Queues a spawn; its [`SpawnDone`] reaches the worker (after a wake), with `carry`.
    pub(crate) fn submit(&self, request: SpawnRequest, carry: T) {
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(job) = self.jobs.push(Job { request, carry }) {
            // The worker stopped: the spawn fails like any other. If the worker is gone,
            // `carry` (the caller's reply) is dropped, which its caller reads as a closed
            // pool.
            let _ = self.refused.send(SpawnDone {
                id: job.request.id,
                result: Err(SpawnError::PoolClosed),
                carry: job.carry,
            });
        }
    }

    /// Spawns submitted and not yet taken back by the worker.
    pub(crate) fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }
}

impl<T> Drop for Spawner<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.jobs.stop();
        for record in &self.shared.in_flight {
            record.kill();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a spawner thread panicked");
            }
        }
    }
}

struct SpawnerThread<T> {
    cloner: Cloner,
    jobs: Arc<JobQueue<T>>,
    done: Sender<SpawnDone<T>>,
    wake: Arc<dyn Fn() + Send + Sync>,
    containment: Arc<PoolContainment>,
    orphans: Option<Arc<OrphanSweep>>,
    shared: Arc<Shared>,
}

impl<T> SpawnerThread<T> {
    fn run(mut self) {
        // No signal is taken here: the process's handlers run on other threads, and the
        // children start with every signal blocked until they reset their own.
        spawn::block_all_signals();
        while let Some(Job { request, carry }) = self.jobs.pop() {
            let result = if self.shared.closed.load(Ordering::SeqCst) {
                Err(SpawnError::PoolClosed)
            } else {
                // A bug must not leave the spawn's caller waiting forever.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.start(&request)))
                    .unwrap_or_else(|_| {
                        Err(SpawnError::Io(io::Error::other(
                            "the spawner thread panicked",
                        )))
                    })
            };
            if let Err(e) = &result {
                tracing::debug!(task = %request.id, error = %e, "spawn failed");
            }
            let done = SpawnDone {
                id: request.id,
                result,
                carry,
            };
            // The worker takes every pending spawn back before it stops; if it died, the
            // caller's reply (in `carry`) is dropped, which it reads as a closed pool.
            let _ = self.done.send(done);
            if !self.shared.wake_pending.swap(true, Ordering::SeqCst) {
                (self.wake)();
            }
        }
        // Children of this thread die with it (PDEATHSIG): the worker ended them already.
    }

    /// The task's cgroup, then the clone. On failure nothing is left behind.
    fn start(&mut self, request: &SpawnRequest) -> Result<Started, SpawnError> {
        let tree = self.containment.prepare(request.id.0, &request.limits)?;
        let spawning = self.orphans.as_ref().map(|sweep| sweep.spawning());
        let cloned = tree
            .placement()
            .map_err(SpawnError::from)
            .and_then(|placement| {
                // The cgroup directory fd (in `placement`) closes here: the table stays flat.
                spawn::spawn_with(
                    &mut self.cloner,
                    &request.prepared,
                    &placement,
                    spawn::spawn_method().0,
                )
            });
        match cloned {
            Ok(child) => {
                if let (Some(sweep), Some(spawning)) = (&self.orphans, spawning) {
                    sweep.started(spawning, child.pid);
                }
                self.cloner.settle();
                Ok(Started {
                    pid: child.pid,
                    pidfd: child.pidfd,
                    streams: child.streams,
                    tree,
                })
            }
            Err(e) => {
                self.cloner.settle();
                if let Err(rm) = tree.remove() {
                    tracing::warn!(task = %request.id, error = %rm, "cannot remove the cgroup of a task that failed to spawn");
                }
                Err(e)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
