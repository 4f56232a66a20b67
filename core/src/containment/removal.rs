//! Removing cgroup directories: one attempt that never waits ([`try_remove`], for event
//! loops), a bounded blocking retry ([`remove_blocking`], for the pool's cleanup thread), and
//! the [`Remover`] that takes dead pools' cgroups off pool start.
//!
//! `rmdir` of a cgroup fails with `EBUSY` while the kernel still counts a member (a killed
//! process that has not finished exiting) or while cgroups remain below it, and even a
//! successful one takes the hierarchy's mutex, which other pools' `mkdir`s contend for.
//!
//! The stale sweep kills a dead pool's processes with `cgroup.kill`, which returns before
//! they are gone; rather than make the new pool's start wait for them (it polled for up to
//! 1 s per dead pool), it hands the directory to the [`Remover`], a small thread that
//! retries with a growing pause (several directories at once, none holding up another). It
//! starts on the first hand-over (almost always never) and is joined when the pool's
//! containment is dropped, after at most [`DRAIN_ON_DROP`] on what is still pending; a
//! directory it gives up on stays for the next pool's sweep (its owner's lock is gone).

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::cgroup;

/// How long the remover keeps retrying one directory that stays busy (a process stuck in
/// uninterruptible sleep keeps its cgroup populated) before it gives up on it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// The first pause after `EBUSY`; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(200);
const MAX_PAUSE: Duration = Duration::from_millis(50);
/// At drop, how long the remover may still spend on directories that are pending.
pub(crate) const DRAIN_ON_DROP: Duration = Duration::from_secs(1);

/// One removal: directories removed in order (each with everything below it). `_held` is
/// kept until they are gone: the `flock` of a dead pool's directory that the stale sweep
/// took, so that no other sweeper works on it meanwhile.
pub(crate) struct Removal {
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) _held: Option<OwnedFd>,
}

/// Tries once to remove every directory of `removal` (deepest first). `Ok(true)`: all gone;
/// `Ok(false)`: something is still busy; `Err`: a failure that retrying will not fix
/// (`EACCES`, `EROFS`, ...).
pub(crate) fn try_remove(removal: &mut Removal) -> io::Result<bool> {
    while let Some(dir) = removal.dirs.first() {
        match cgroup::remove_tree(dir) {
            Ok(()) => {
                removal.dirs.remove(0);
            }
            Err(e) if is_busy(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// [`try_remove`] until it succeeds, retrying what is busy with a growing pause for up to
/// `budget`. Blocks: never on an event loop.
pub(crate) fn remove_blocking(removal: &mut Removal, budget: Duration) -> io::Result<()> {
    let deadline = Instant::now() + budget;
    let mut pause = FIRST_PAUSE;
    loop {
        if try_remove(removal)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// `EBUSY` (members still exiting) or `ENOTEMPTY` (a sub-cgroup appeared meanwhile).
fn is_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY))
}

/// The pool's cleanup thread, started on first use.
#[derive(Debug, Default)]
pub(crate) struct Remover {
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    jobs: Sender<Removal>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Removal").field("dirs", &self.dirs).finish()
    }
}

impl Remover {
    /// Removes `removal`'s directories in the background. Never blocks: safe on an event
    /// loop. Tries once first, here, only when `try_first` is set (for callers off the loop).
    pub(crate) fn remove_later(&self, mut removal: Removal, try_first: bool) {
        if removal.dirs.is_empty() {
            return;
        }
        if try_first {
            match try_remove(&mut removal) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    warn_failed(&removal, &e);
                    return;
                }
            }
        }
        let mut running = super::lock(&self.running);
        if running.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded();
            match std::thread::Builder::new()
                .name("pidring-cgroup-rm".into())
                .spawn(move || run(rx))
            {
                Ok(thread) => *running = Some(Running { jobs: tx, thread }),
                Err(e) => {
                    // No thread: one more try now, then leave it to the stale sweep.
                    drop(running);
                    tracing::warn!(error = %e, "cannot start the cgroup cleanup thread");
                    if let Ok(false) | Err(_) = try_remove(&mut removal) {
                        tracing::warn!(dirs = ?removal.dirs, "cgroups left for the next pool's sweep");
                    }
                    return;
                }
            }
        }
        if let Some(r) = running.as_ref() {
            // The thread only stops once `jobs` is dropped, below.
            let _ = r.jobs.send(removal);
        }
    }

    /// Stops the thread after it spent at most [`DRAIN_ON_DROP`] on what is pending.
    /// Blocks (for pool drop, not for an event loop).
    pub(crate) fn finish(&self) {
        let running = super::lock(&self.running).take();
        if let Some(Running { jobs, thread }) = running {
            drop(jobs);
            if thread.join().is_err() {
                tracing::error!("the cgroup cleanup thread panicked");
            }
        }
    }
}

impl Drop for Remover {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Pending {
    removal: Removal,
    due: Instant,
    pause: Duration,
    since: Instant,
}

fn run(jobs: Receiver<Removal>) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut stop_by: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // Work on everything that is due.
        let mut i = 0;
        while i < pending.len() {
            if pending[i].due > now {
                i += 1;
                continue;
            }
            let p = &mut pending[i];
            match try_remove(&mut p.removal) {
                Ok(true) => {
                    pending.remove(i);
                }
                Ok(false) if now.duration_since(p.since) >= GIVE_UP_AFTER => {
                    tracing::warn!(dirs = ?p.removal.dirs, "cgroup still busy after {GIVE_UP_AFTER:?}: left for the next pool's sweep");
                    pending.remove(i);
                }
                Ok(false) => {
                    p.due = now + p.pause;
                    p.pause = (p.pause * 2).min(MAX_PAUSE);
                    i += 1;
                }
                Err(e) => {
                    warn_failed(&p.removal, &e);
                    pending.remove(i);
                }
            }
        }
        if let Some(deadline) = stop_by {
            if pending.is_empty() || Instant::now() >= deadline {
                for p in &pending {
                    tracing::warn!(dirs = ?p.removal.dirs, "cgroup still busy when the pool ended: left for the next pool's sweep");
                }
                return;
            }
        }
        let next_due = pending.iter().map(|p| p.due).min();
        let wait_until = match (next_due, stop_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let received = if stop_by.is_some() {
            // The channel is closed: only pending work is left.
            std::thread::sleep(wait_until.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            }));
            continue;
        } else {
            match wait_until {
                Some(t) => jobs.recv_timeout(t.saturating_duration_since(Instant::now())),
                None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            }
        };
        match received {
            Ok(removal) => {
                let now = Instant::now();
                pending.push_back(Pending {
                    removal,
                    due: now,
                    pause: FIRST_PAUSE,
                    since: now,
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                stop_by = Some(Instant::now() + DRAIN_ON_DROP);
            }
        }
    }
}

fn warn_failed(removal: &Removal, e: &io::Error) {
    tracing::warn!(dirs = ?removal.dirs, error = %e, "cannot remove a cgroup");
}
