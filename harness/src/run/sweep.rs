//! The last line of defence before pidring exits: pidring is a child subreaper, so every
//! descendant that escaped the task's containment (a `setsid` daemon in process-group mode)
//! comes back to it as an orphan once its parent dies. Before exiting, pidring kills and reaps
//! every child it still has, repeatedly, since each killed orphan can hand its own children
//! back, until it has none left (or a deadline passes).

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Kills every child process of pidring until none is left or `limit` has passed. Returns how
/// many distinct processes were signalled.
pub fn kill_remaining_children(limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let me = std::process::id() as i32;
    let mut signalled: HashSet<i32> = HashSet::new();
    loop {
        let children = children(me);
        if children.is_empty() {
            break;
        }
        for &pid in &children {
            // A zombie is already dead (killed by the pool, not yet reaped): reap, not count.
            let zombie = match stat_of(pid) {
                Some((state, _)) => state == b'Z',
                None => true, // gone already
            };
            if !zombie && signalled.insert(pid) {
                tracing::info!(pid, "killing a leftover descendant");
                kill_child(pid);
            }
            reap(pid);
        }
        if Instant::now() >= deadline {
            tracing::warn!(left = children.len(), "giving up on leftover descendants");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    signalled.len() as u64
}

/// SIGKILL through a pidfd. The pid is our unreaped child, so it cannot have been reused; the
/// pidfd pins it for the check that it is still ours.
fn kill_child(pid: i32) {
    let Some(pidfd) = crate::sys::pidfd_open(pid) else {
        return; // gone (reaped by the pool's subreaper)
    };
    if stat_of(pid).is_some_and(|(_, ppid)| ppid == std::process::id() as i32) {
        crate::sys::pidfd_kill(&pidfd);
    }
}

fn reap(pid: i32) {
    // ECHILD when the pool's subreaper reaped it first: fine.
    crate::sys::reap(pid);
}

/// State letter and ppid of `pid`, from `/proc/<pid>/stat`.
fn stat_of(pid: i32) -> Option<(u8, i32)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may contain anything, so parse after the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Our children (zombies included), from `/proc/self/task/*/children`, or by scanning `/proc`
/// where the kernel lacks that file.
fn children(me: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut have_children_file = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                have_children_file = true;
                out.extend(
                    s.split_ascii_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    if !have_children_file {
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                if let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                    if stat_of(pid).is_some_and(|(_, ppid)| ppid == me) {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
