//! Starting a child: a vfork-class clone with a pidfd, child set-up with raw syscalls only,
//! `execve`; exec failures come back as typed errors through memory the child shares with
//! the supervisor (as glibc's `posix_spawn` does), so no error pipe exists for another
//! spawn's child to hold.
//!
//! One job per file:
//! - `prepare`: a `TaskSpec` validated and resolved into C strings (caller's thread);
//! - `fds`: the pipes, socketpairs and cgroup files of one spawn, and the fd limit;
//! - `clone`: `clone3` / `clone(2)` with `CLONE_VM | CLONE_VFORK | CLONE_PIDFD`, the child's
//!   stack, the probe of which call works;
//! - `child`: the code the child runs before `execve` (the file to audit);
//! - `report`: the child's recorded failure turned into a `SpawnError`.
//!
//! [`spawn`] suspends the calling thread until the child has called `execve` (or failed):
//! only a spawner thread calls it, never an event loop.

mod child;
mod clone;
mod fds;
mod guarded;
mod prepare;
mod report;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

pub(crate) use clone::{block_all_signals, Cloner, InFlight};
pub use clone::{spawn_method, SpawnMethod, SPAWN_METHOD_VAR};
pub(crate) use fds::{open_dev_null, remember_nofile_limit};
pub(crate) use guarded::unguard;
pub(crate) use prepare::{prepare, Prepared};

use crate::containment::Placement;
use crate::error::SpawnError;
use crate::task::StreamId;
use child::{ChildCtx, Outcome, Report};

#[cfg(test)]
pub(crate) use child::TEST_STALL;

/// A started child.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: i32,
    /// Blocking pidfd, `O_CLOEXEC`.
    pub(crate) pidfd: OwnedFd,
    /// Supervisor ends of the captured streams, `O_CLOEXEC`, in `StreamId` order.
    pub(crate) streams: Vec<(StreamId, OwnedFd)>,
}

/// Starts the child described by `prepared`, placed as `placement` says, with `cloner`'s
/// stack and the process's [`spawn_method`]. Returns once the program runs, or with the
/// reason it could not start (the failed child already reaped).
pub(crate) fn spawn_with(
    cloner: &mut Cloner,
    prepared: &Prepared,
    placement: &Placement,
    method: SpawnMethod,
) -> Result<Child, SpawnError> {
    let join_v2 = method == SpawnMethod::Clone && placement.cgroup_dir.is_some();
    let mut plan = fds::Plan::new(prepared, placement, join_v2, cloner.dev_null())?;
    let report = Report::new();
    let ctx = ChildCtx {
        report: &report,
        parent_pid: cloner.parent_pid(),
        cgroup_procs: &plan.cgroup_procs_raw,
        redirects: &plan.redirects,
        keep: &prepared.channels_sorted,
        session: prepared.session,
        nofile: plan.nofile,
        ignored: prepared.ignored_mask,
        blocked: prepared.blocked_mask,
        cwd: prepared.cwd.as_deref(),
        candidates: &prepared.candidates,
        argv: prepared.argv_ptrs.as_ptr(),
        envp: prepared.envp_ptrs.as_ptr(),
        #[cfg(test)]
        stall: prepared.stall,
    };
    let cgroup = match method {
        SpawnMethod::Clone3 => placement.cgroup_dir.as_ref().map(|d| d.as_raw_fd()),
        SpawnMethod::Clone => None,
    };
    let cloned = cloner.clone_vfork(&ctx, method, cgroup);
    // The child has its own copies now (or never came to be).
    plan.close_child_ends();
    let (pid, pidfd) = cloned.map_err(report::clone_error)?;
    match report.outcome() {
        Outcome::Exec => Ok(Child {
            pid,
            pidfd,
            streams: std::mem::take(&mut plan.streams),
        }),
        Outcome::Failed { step, index, errno } => {
            reap_blocking(&pidfd);
            Err(report::setup_error(
                prepared, placement, join_v2, step, index, errno,
            ))
        }
        Outcome::DiedBeforeExec => {
            reap_blocking(&pidfd);
            Err(report::died_before_exec())
        }
    }
}

#[cfg(test)]
thread_local! {
    /// A cloner for threads that spawn without a spawner of their own (tests, tools).
    static LOCAL_CLONER: std::cell::RefCell<Option<Cloner>> = const { std::cell::RefCell::new(None) };
}

/// Tests only: [`spawn_with`] on the calling thread's own cloner (made at its first spawn),
/// with the thread's test method. The child's death signal follows the calling thread.
#[cfg(test)]
pub(crate) fn spawn(prepared: &Prepared, placement: &Placement) -> Result<Child, SpawnError> {
    LOCAL_CLONER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let cloner = match &mut *cell {
            Some(c) => c,
            None => cell.insert(Cloner::new().map_err(SpawnError::Io)?),
        };
        let method = test_util::current_method();
        let result = spawn_with(cloner, prepared, placement, method);
        cloner.settle();
        result
    })
}

/// Waits for a child that has exited or is about to (its clone returned after it failed),
/// EINTR-safe. A foreign reaper (`ECHILD`) is fine: no zombie of ours remains either way.
fn reap_blocking(pidfd: &OwnedFd) {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    loop {
        match waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;
