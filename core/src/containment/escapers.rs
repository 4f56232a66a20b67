//! Process-group mode: the task's descendants that left its process group (`setsid()`, as
//! Python's `start_new_session=True` does, or `setpgid()`), found while their ancestry still
//! leads to the main process, so that a tree signal reaches them as well as the group.
//!
//! The kernel keeps a process's ancestry only while each parent lives: once a parent exits,
//! its children are re-parented (to a subreaper or init) and nothing ties them to the task
//! any more. So the walk runs when the tree is signalled, from the main process down
//! through `/proc/<pid>/task/*/children`, and every escaper found is remembered by pid and
//! start time: a later signal (SIGKILL after the grace) reaches it even if its parent has
//! died meanwhile. What was already orphaned before the first tree signal (a double-forked
//! daemon) is not found here; a `subreaper(true)` pool's orphan sweep catches that.
//!
//! Every step goes through pidfds, never a bare pid: a parent's pidfd is held while its
//! children are read, and checked alive afterwards, so its number named it throughout; a
//! child is opened, then its `/proc/<pid>/stat` must show that parent. A remembered escaper
//! is re-opened and must show the same start time. The walk never blocks (`/proc` reads and
//! pidfd calls) and stops at [`WALK_LIMIT`] processes. It is off where `/proc` is another
//! PID namespace's (its pids would name other processes to `pidfd_open`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::orphans::read_stat;
use crate::sys::pidfd;

/// The most processes one walk visits (a fork bomb's tree is the group's and pids.max's
/// business; an escaper past this many processes is left to the orphan sweep).
const WALK_LIMIT: usize = 4096;

/// A descendant outside the task's process group, as identified when it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Escaper {
    pid: i32,
    /// Clock ticks since boot (`/proc/<pid>/stat` field 22): with the pid, the process.
    start: u64,
    /// Its process group when found (its own pid: it leads one).
    pgrp: i32,
}

/// The children of `pid`, from every thread's `children` file.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    // A procfs `task` directory has 2 + threads links: one `stat` spares a single-threaded
    // process (most task runners) the directory read, on a path every kill takes.
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(format!("/proc/{pid}/task")).is_ok_and(|m| m.nlink() == 3) {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
            return out;
        }
    }
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for thread in threads.flatten() {
        if let Ok(text) = std::fs::read_to_string(thread.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Sends `signal` to every escaper of a tree: those a walk from the group leader (its
/// pidfd `leader`, if it has not been reaped) finds now, and those `remembered` from earlier
/// signals, which the walk may no longer reach. Adds what it found to `remembered` and
/// forgets what has died. Returns how many it reached.
pub(crate) fn signal_all(
    leader: Option<BorrowedFd<'_>>,
    remembered: &mut Vec<Escaper>,
    signal: i32,
) -> u64 {
    if !proc_is_ours() {
        return 0;
    }
    let mut targets = match leader.and_then(|fd| Some((fd, pidfd::pid(fd)?))) {
        Some((fd, pid)) => walk(fd, pid),
        None => Vec::new(),
    };
    for (escaper, _) in &targets {
        if !remembered.contains(escaper) {
            remembered.push(*escaper);
        }
    }
    remembered.retain(|escaper| {
        if targets.iter().any(|(e, _)| e == escaper) {
            return true;
        }
        match reopen(escaper) {
            Some(fd) => {
                targets.push((*escaper, fd));
                true
            }
            None => false,
        }
    });
    // A group leader gets the signal as a group (itself and its members); a member whose
    // leader is among the targets gets it from there, not twice.
    let leaders: Vec<i32> = targets
        .iter()
        .filter(|(e, _)| e.pgrp == e.pid)
        .map(|(e, _)| e.pid)
        .collect();
    let mut reached = 0;
    for (escaper, fd) in &targets {
        let leads = escaper.pgrp == escaper.pid;
        if !leads && leaders.contains(&escaper.pgrp) {
            continue;
        }
        reached += u64::from(pidfd::send_signal(fd.as_fd(), signal, leads).is_ok());
    }
    reached
}

/// The descendants of the group leader (pidfd `fd`, pid `leader_pid`) outside its group,
/// alive, each with its pidfd.
fn walk(fd: BorrowedFd<'_>, leader_pid: i32) -> Vec<(Escaper, OwnedFd)> {
    let mut found = Vec::new();
    // Parents whose children are still to be read, with their pidfds (the leader's is `fd`).
    let mut pending: Vec<(i32, Option<OwnedFd>)> = vec![(leader_pid, None)];
    let mut visited = 0;
    while let Some((parent, parent_fd)) = pending.pop() {
        let kids = children(parent);
        if kids.is_empty() {
            continue;
        }
        // The parent still lives, so `parent` named it while its children were read.
        let parent_alive = match &parent_fd {
            Some(own) => pidfd::send_signal(own.as_fd(), 0, false).is_ok(),
            None => pidfd::send_signal(fd, 0, false).is_ok(),
        };
        if !parent_alive {
            continue;
        }
        for kid in kids {
            visited += 1;
            if visited > WALK_LIMIT {
                return found;
            }
            let Ok(kid_fd) = pidfd::open(kid) else {
                continue;
            };
            // Opened, the number is pinned to one process: it must be the parent's child.
            let Some(stat) = read_stat(kid).filter(|s| s.ppid == parent && !s.is_zombie()) else {
                continue;
            };
            if stat.pgrp != leader_pid {
                let escaper = Escaper {
                    pid: kid,
                    start: stat.start,
                    pgrp: stat.pgrp,
                };
                // Its own fd for the caller; the walk keeps `kid_fd` to read its children.
                if let Ok(own) = rustix::io::fcntl_dupfd_cloexec(&kid_fd, 0) {
                    found.push((escaper, own));
                }
            }
            pending.push((kid, Some(kid_fd)));
        }
    }
    found
}

/// Opens a remembered escaper again: its pidfd, if the pid still names the same process.
fn reopen(escaper: &Escaper) -> Option<OwnedFd> {
    let fd = pidfd::open(escaper.pid).ok()?;
    read_stat(escaper.pid)
        .filter(|s| s.start == escaper.start && !s.is_zombie())
        .map(|_| fd)
}

/// Whether `/proc` numbers processes as this process's PID namespace does (`/proc/self`
/// shows our own pid). Under `unshare --pid` without `--mount-proc` it does not, and a pid
/// read there could name someone else to `pidfd_open`: the walk is then off.
fn proc_is_ours() -> bool {
    static OURS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OURS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| t.split(' ').next()?.parse::<u32>().ok())
            == Some(std::process::id())
    })
}

/// Whether any remembered escaper still lives; forgets those that do not.
pub(crate) fn any_alive(remembered: &mut Vec<Escaper>) -> bool {
    remembered.retain(|escaper| reopen(escaper).is_some());
    !remembered.is_empty()
}
