//! The pool's cleanup thread: the blocking parts of releasing a task that must not run on a
//! worker's loop (a cgroup directory the kernel still counts busy, the reap of a child
//! killed because its spawn could not be completed). The pool joins it after its workers,
//! so every job submitted is done before `Pool::drop` returns.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::containment::TaskContainment;

pub(crate) enum Job {
    /// A task cgroup whose asynchronous removal failed (or a driver that cannot remove
    /// directories asynchronously): remove it, retrying while the kernel says `EBUSY`.
    RemoveDir(PathBuf),
    /// A task's cgroups, when more than one directory must go (v1 limit hierarchies).
    RemoveTree(TaskContainment),
    /// A child that was SIGKILLed because it could not be handed to the driver: reap it.
    Reap(OwnedFd),
}

pub(crate) struct CleanupThread {
    jobs: Mutex<Option<Sender<Job>>>,
    pending: AtomicUsize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl CleanupThread {
    pub(crate) fn start() -> io::Result<std::sync::Arc<CleanupThread>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let this = std::sync::Arc::new(CleanupThread {
            jobs: Mutex::new(Some(tx)),
            pending: AtomicUsize::new(0),
            thread: Mutex::new(None),
        });
        let worker = std::sync::Arc::clone(&this);
        let thread = std::thread::Builder::new()
            .name("pidring-cleanup".into())
            .spawn(move || worker.serve(rx))?;
        *lock(&this.thread) = Some(thread);
        Ok(this)
    }

    /// Queues a job. After [`shutdown`](CleanupThread::shutdown) the job runs on the caller's
    /// thread instead (nothing is ever dropped).
    pub(crate) fn submit(&self, job: Job) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let sender = lock(&self.jobs).clone();
        let job = match sender {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.into_inner(),
            },
            None => job,
        };
        self.run(job);
    }

    /// Jobs submitted and not finished.
    #[allow(dead_code)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Finishes every queued job and stops the thread.
    pub(crate) fn shutdown(&self) {
        drop(lock(&self.jobs).take());
        if let Some(thread) = lock(&self.thread).take() {
            if thread.join().is_err() {
                tracing::error!("the cleanup thread panicked");
            }
        }
    }

    fn serve(&self, jobs: Receiver<Job>) {
        for job in jobs {
            self.run(job);
        }
    }

    fn run(&self, job: Job) {
        match job {
            Job::RemoveDir(dir) => {
                if let Err(e) = crate::containment::remove_task_dir(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a task's cgroup");
                }
            }
            Job::RemoveTree(tree) => {
                if let Err(e) = tree.remove() {
                    tracing::warn!(error = %e, "cannot remove a task's cgroups");
                }
            }
            Job::Reap(pidfd) => reap_blocking(&pidfd),
        }
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for a child that was SIGKILLed (EINTR-safe). A foreign reaper (`ECHILD`) is fine:
/// either way no zombie of ours remains.
fn reap_blocking(pidfd: &OwnedFd) {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    loop {
        match waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => return,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
