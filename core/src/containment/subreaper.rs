//! Subreaper: orphaned descendants of the tasks come back to this process (not to PID 1)
//! and are reaped here, without ever touching a task-runner's exit status.
use std::io;

use rustix::process::{Pid, WaitId, WaitIdOptions};

/// `PR_SET_CHILD_SUBREAPER` for the whole process (every thread). Orphans then become our
/// children; call [`reap_orphans`] when some may have exited.
pub fn become_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(Some(
        rustix::process::getpid(),
    ))?)
}

/// Undoes [`become_subreaper`].
pub fn stop_being_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(None)?)
}

/// Reaps the zombie children of this process for which `is_task_runner(pid)` is false, and
/// returns how many it reaped.
///
/// Cost: one `waitid(WNOWAIT)` peek when no child waits to be reaped (the usual case).
/// When a task-runner's zombie is the one the kernel shows first, it falls back to reading
/// `/proc/self/task/*/children`, which is O(children): rate-limit calls during a kill-all.
///
/// Task-runners are left alone: their status belongs to the worker (it reaps them through
/// their pidfds). Reaping a zombie child by pid is safe: its pid cannot be reused before it
/// is reaped. Note that it reaps *every* other zombie child of the process, including ones
/// started by other code (`std::process::Command`): use it in programs that own their
/// children, as `pidring run` does.
pub fn reap_orphans(is_task_runner: impl Fn(i32) -> bool) -> usize {
    let mut reaped = 0;
    // Fast path: peek (WNOWAIT) at an exited child; most of the time there is none, and
    // one syscall says so. A runner's zombie hides the others: then scan.
    for _ in 0..1024 {
        match crate::sys::pidfd::peek_exited_child() {
            Ok(Some(pid)) if !is_task_runner(pid) => {
                if reap_pid(pid) {
                    reaped += 1;
                } else {
                    break;
                }
            }
            Ok(Some(_runner)) => break,
            Ok(None) | Err(_) => return reaped,
        }
    }
    for pid in children() {
        if is_task_runner(pid) || !is_zombie(pid) {
            continue;
        }
        if reap_pid(pid) {
            reaped += 1;
        }
    }
    reaped
}

/// Reaps our exited child `pid` (never blocks).
fn reap_pid(pid: i32) -> bool {
    let Some(p) = Pid::from_raw(pid) else {
        return false;
    };
    matches!(
        rustix::process::waitid(
            WaitId::Pid(p),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG
        ),
        Ok(Some(_))
    )
}

/// Our children: `/proc/self/task/*/children` (each thread's), or, where the kernel lacks
/// that file, a scan of `/proc/*/stat` for our pid as parent.
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    let mut have_children_files = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                have_children_files = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|s| s.parse::<i32>().ok()),
                );
            }
        }
    }
    if !have_children_files {
        let me = std::process::id() as i32;
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if stat(pid).is_some_and(|(_, ppid)| ppid == me) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

fn is_zombie(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _)| state == 'Z')
}

/// (state, ppid) from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 2..)?;
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}
