//! pidring's children, read from `/proc`, and the last line of defence before pidring exits.
//!
//! pidring is a child subreaper, so every descendant that escaped the task's containment (a
//! `setsid` daemon in process-group mode) comes back to it as an orphan once its parent dies.
//! Before exiting, pidring kills and reaps every child it still has, repeatedly, since each
//! killed orphan can hand its own children back, until it has none left (or a deadline
//! passes). Children pidring already had when it started (`sleep 9 & exec pidring …`) are not
//! PROGRAM's: they are left alone.
//!
//! `/proc` may belong to another PID namespace than pidring (`unshare --pid --fork` without
//! `--mount-proc`): pids read there are translated into pidring's own namespace (the `NSpid`
//! line of `/proc/<pid>/status`) before any pidfd is opened, and a pidfd is used only once
//! `waitid` has proven it names a child of pidring.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Pids of pidring's children, as numbered by the mounted `/proc` (see [`ProcNumbering`]).
/// Zombies included. Without any child (the usual case), `/proc` is not read at all.
pub fn children_in_proc() -> Vec<i32> {
    let mut out = Vec::new();
    if !crate::sys::has_children() {
        return out;
    }
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(
                    s.split_ascii_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// How pids in `/proc` map to pidring's own PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcNumbering {
    /// `/proc` is our namespace's.
    Same,
    /// `/proc` is an ancestor namespace's: our pid there has `depth + 1` entries in `NSpid`,
    /// and a child's pid in our namespace is its `NSpid` entry at index `depth`.
    Ancestor { depth: usize },
    /// Neither (no `/proc`, or one we cannot relate to us): nothing read there is used.
    Unknown,
}

impl ProcNumbering {
    pub fn detect() -> ProcNumbering {
        let own = crate::sys::own_pid();
        let Ok(link) = std::fs::read_link("/proc/self") else {
            return ProcNumbering::Unknown;
        };
        let Some(proc_pid) = link.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            return ProcNumbering::Unknown;
        };
        if proc_pid == own {
            return ProcNumbering::Same;
        }
        match nspid(proc_pid) {
            Some(ids) if ids.len() >= 2 && ids.last() == Some(&own) => ProcNumbering::Ancestor {
                depth: ids.len() - 1,
            },
            _ => ProcNumbering::Unknown,
        }
    }

    /// `proc_pid` (a `/proc` number) in pidring's namespace.
    pub fn to_own(self, proc_pid: i32) -> Option<i32> {
        match self {
            ProcNumbering::Same => Some(proc_pid),
            ProcNumbering::Ancestor { depth } => nspid(proc_pid)?.get(depth).copied(),
            ProcNumbering::Unknown => None,
        }
    }
}

/// The `NSpid` line of `/proc/<pid>/status`: the pid in each namespace, outermost first.
fn nspid(proc_pid: i32) -> Option<Vec<i32>> {
    let status = std::fs::read_to_string(format!("/proc/{proc_pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    Some(
        line.split_ascii_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
    )
}

/// Kills every child process of pidring (but those in `spared`, `/proc` numbers) until none
/// is left or `limit` has passed. Returns how many distinct processes were signalled.
pub fn kill_remaining_children(limit: Duration, spared: &[i32]) -> u64 {
    if !crate::sys::has_children() {
        return 0; // the usual case: one system call, no /proc
    }
    let deadline = Instant::now() + limit;
    let numbering = ProcNumbering::detect();
    let mut signalled: HashSet<i32> = HashSet::new();
    loop {
        let children: Vec<i32> = children_in_proc()
            .into_iter()
            .filter(|p| !spared.contains(p))
            .filter_map(|p| numbering.to_own(p))
            .collect();
        if children.is_empty() {
            break;
        }
        for &pid in &children {
            // A zombie is already dead (killed by the pool, not yet reaped): reap, not count.
            if crate::sys::reap_exited(pid) {
                continue;
            }
            if signalled.insert(pid) {
                if let Some(pidfd) = crate::sys::open_child_pidfd(pid) {
                    tracing::info!(pid, "killing a leftover descendant");
                    let _ = crate::sys::pidfd_send(std::os::fd::AsFd::as_fd(&pidfd), 9, false);
                }
            }
            crate::sys::reap_exited(pid);
        }
        if Instant::now() >= deadline {
            tracing::warn!(left = children.len(), "giving up on leftover descendants");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    signalled.len() as u64
}

/// Reaps every exited child but `main` (PROGRAM's main process, whose status belongs to the
/// pool): pidring's duty as a subreaper or PID 1. Returns the pids reaped (pidring's
/// namespace), for tini's `-w`.
pub fn reap_orphans(main: i32) -> Vec<i32> {
    let mut reaped = Vec::new();
    // Fast path: the kernel names an exited child (WNOWAIT: still unreaped); the main
    // process's zombie hides the others until the pool reaps it, then scan.
    for _ in 0..1024 {
        match crate::sys::peek_exited_child() {
            Some(pid) if pid != main => {
                if crate::sys::reap_exited(pid) {
                    reaped.push(pid);
                } else {
                    break;
                }
            }
            Some(_) => {
                let numbering = ProcNumbering::detect();
                for pid in children_in_proc()
                    .into_iter()
                    .filter_map(|p| numbering.to_own(p))
                {
                    if pid != main && crate::sys::reap_exited(pid) {
                        reaped.push(pid);
                    }
                }
                break;
            }
            None => break,
        }
    }
    reaped
}
