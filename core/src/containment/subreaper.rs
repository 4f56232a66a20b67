//! Subreaper: orphaned descendants of the tasks come back to this process (not to PID 1).
//! Which of them the pool reaps and kills is `orphans`' job.
use std::io;

/// `PR_SET_CHILD_SUBREAPER` for the whole process (every thread). Orphans then become our
/// children: build the pool with `PoolBuilder::subreaper(true)` so that its orphans are reaped
/// (and, in process-group mode, its `setsid` escapers killed).
pub fn become_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(Some(
        rustix::process::getpid(),
    ))?)
}

/// Undoes [`become_subreaper`].
pub fn stop_being_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(None)?)
}
