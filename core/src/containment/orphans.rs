//! The pool's orphans, and only those: what a pool built with `subreaper(true)` reaps and
//! kills among the children of the host process.
//!
//! A child subreaper adopts every orphaned descendant, the host's own included. The host's
//! children (a `std::process::Command` it waits for) are never touched: a child is the
//! pool's only if the kernel says so.
//!
//! - **cgroup mode** (exact): `/proc/<pid>/cgroup` of the child (a zombie too, also after
//!   its cgroup was removed: `(deleted)`) is the pool's cgroup or below it. Its zombie is
//!   reaped. Nothing of a task escapes its cgroup, so `cgroup.kill` at the task's end already
//!   killed what lived; nothing more is killed here.
//! - **process-group mode**: the child's process group or session is one a task started
//!   (the runner's pid: [`Session::New`](crate::Session) makes it both, `Group`/`Foreground`
//!   the group), or the child is in a session other than the host's own — where a
//!   descendant lands that called `setsid()`, the escaper that a group signal cannot reach.
//!   Zombies are reaped. Live escapers are killed (SIGKILL through a pidfd, to their process
//!   group too when they lead one) once their task has ended: exactly then when their group
//!   or session names a task (a released task is remembered for the processes started before
//!   it ended); otherwise, since the kernel keeps no ancestry once a process is re-parented,
//!   once **every task that had started before the escaper was born has ended** (its start
//!   time, `/proc/<pid>/stat` field 22, against the tasks' start times). An escaper is never
//!   killed while its own task runs; with long-running tasks beside it, it can outlive its own
//!   task until those end. The pool's drop kills what is left.
//!
//!   Limits, which the README states: a child the host itself starts in a new session
//!   (`setsid`, Python's `start_new_session=True`) while such a pool runs is taken for an
//!   escaper (start it with its own process group instead, which keeps the host's session); a
//!   task descendant that stays in the host's session but moves to another process group
//!   (only possible with `Session::Group`/`Foreground`) is taken for the host's.
//!
//! The sweep never blocks: `/proc` reads, `waitid(WNOHANG)`, `pidfd_open` and
//! `pidfd_send_signal`, under a lock it only tries to take.
//!
//! It trusts `/proc` only where `/proc` is this process's PID namespace's (`/proc/self/stat`
//! shows our own pid): under `unshare --pid` without `--mount-proc`, `/proc` numbers processes
//! as another namespace does, and a pid read there could name someone else here. The sweep
//! is then off (a warning says so), and orphans are left to the host.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::AsFd;
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitId, WaitIdOptions};

use super::{ContainmentKind, PoolContainment};

/// Released tasks remembered for exact attribution of their leftovers.
const RECENT_ENDED: usize = 4096;
/// Escaper sessions remembered (their earliest birth).
const RECENT_SESSIONS: usize = 4096;
/// Process-group mode: a full scan of the children at least this often, for escapers
/// adopted after their task ended.
const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest gap between two full scans (O(children) each).
const FULL_SCAN_MIN_GAP: Duration = Duration::from_millis(20);
/// How long the pool's drop keeps killing and reaping its orphans.
const FINAL_SWEEP: Duration = Duration::from_secs(1);

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SweepReport {
    pub(crate) reaped: usize,
    pub(crate) killed: usize,
    /// Call again soon: zombies of what was just killed are on their way, or a full scan was
    /// deferred (rate limit, or another thread was sweeping).
    pub(crate) again_soon: bool,
}

#[derive(Debug)]
enum Scope {
    /// The pool's v2 cgroup as `/proc/<pid>/cgroup` shows it.
    Cgroup {
        rel: String,
    },
    ProcessGroup,
}

/// See the module doc. Shared by the pool's workers.
#[derive(Debug)]
pub(crate) struct OrphanSweep {
    scope: Scope,
    /// `/proc` numbers processes as this PID namespace does.
    proc_is_ours: bool,
    me: i32,
    ticks_per_second: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Task runners not reaped yet: their zombies belong to their workers.
    runners: HashSet<i32>,
    /// The spawner threads' clones in progress: a runner just cloned (which may already have
    /// exited) is there until it is registered in `runners` (`started`, which needs this
    /// lock, comes before the record is cleared, so a sweep, which holds it, sees the pid in
    /// one place or the other).
    in_flight: Vec<std::sync::Arc<crate::sys::spawn::InFlight>>,
    /// Tasks not released yet, by runner pid: their start (clock ticks since boot).
    live: HashMap<i32, u64>,
    /// Released tasks, by runner pid: (start, end) ticks.
    ended: HashMap<i32, (u64, u64)>,
    ended_order: VecDeque<i32>,
    /// Sessions of escapers seen: their earliest birth, inherited by members adopted later.
    sessions: HashMap<i32, u64>,
    sessions_order: VecDeque<i32>,
    full_scan_due: bool,
    last_full_scan: Option<Instant>,
}

/// A runner about to be started: when (for the sweep's "born before every live task"
/// rule), and, once started, its pid ([`OrphanSweep::started`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spawning {
    start: u64,
}

impl State {
    /// A task runner's pid (registered, or being cloned right now).
    fn is_runner(&self, pid: i32) -> bool {
        self.runners.contains(&pid) || self.in_flight.iter().any(|r| r.pid() == Some(pid))
    }
}

/// Whose a child of the host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Host,
    /// A task that has not been released.
    LiveTask,
    /// A task that was released.
    EndedTask,
    /// Process-group mode: in a session of its own, born at this tick.
    Escaper {
        birth: u64,
    },
    /// cgroup mode: inside the pool's cgroup.
    PoolCgroup,
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Proc {
    pub(super) pid: i32,
    pub(super) state: u8,
    pub(super) ppid: i32,
    pub(super) pgrp: i32,
    pub(super) session: i32,
    /// Clock ticks since boot.
    pub(super) start: u64,
}

impl Proc {
    pub(super) fn is_zombie(&self) -> bool {
        self.state == b'Z'
    }
}

impl OrphanSweep {
    /// Makes this process a child subreaper (it stays one after the pool is dropped: a
    /// program such as `pidring run` relies on orphans still coming back while it cleans up)
    /// and returns the pool's sweep.
    pub(crate) fn new(containment: &PoolContainment) -> std::io::Result<OrphanSweep> {
        super::become_subreaper()?;
        let scope = match (containment.kind(), &containment.cgroups) {
            (ContainmentKind::Cgroup, Some(c)) => Scope::Cgroup {
                rel: c.v2_rel.clone(),
            },
            _ => Scope::ProcessGroup,
        };
        let me = std::process::id() as i32;
        // `/proc/self` is us as `/proc`'s namespace numbers us.
        let proc_is_ours = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| t.split(' ').next()?.parse::<i32>().ok())
            == Some(me);
        if !proc_is_ours {
            tracing::warn!(
                "/proc belongs to another PID namespace (or is not mounted): the pool's orphan \
                 sweep is off; mount a /proc for this namespace (unshare --mount-proc)"
            );
        }
        Ok(OrphanSweep {
            scope,
            proc_is_ours,
            me,
            ticks_per_second: rustix::param::clock_ticks_per_second().max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// Clock ticks since boot, as `/proc/<pid>/stat` counts a process's start.
    fn now_ticks(&self) -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let ns = (t.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as u64);
        ns / (1_000_000_000 / self.ticks_per_second).max(1)
    }

    /// Call before starting a runner; then [`started`](OrphanSweep::started) with its pid.
    /// Takes no lock: spawns on every worker go on while a sweep runs.
    pub(crate) fn spawning(&self) -> Spawning {
        Spawning {
            start: self.now_ticks(),
        }
    }

    /// Registers a runner that was just started (before the clone's in-flight record that
    /// names it is cleared: see `State::in_flight`).
    pub(crate) fn started(&self, spawning: Spawning, runner: i32) {
        let mut st = super::lock(&self.state);
        st.runners.insert(runner);
        st.live.insert(runner, spawning.start);
    }

    /// A spawner thread's record of the child it is cloning (its pid is published by the
    /// kernel at the clone): that pid is a runner's, never an orphan, from the first moment.
    pub(crate) fn watch_in_flight(&self, record: std::sync::Arc<crate::sys::spawn::InFlight>) {
        super::lock(&self.state).in_flight.push(record);
    }

    /// Whether the sweep takes `pid` for a task runner (tests).
    #[cfg(test)]
    pub(crate) fn is_runner(&self, pid: i32) -> bool {
        super::lock(&self.state).is_runner(pid)
    }

    /// The runner was reaped by its worker: its pid is no longer a child of ours.
    pub(crate) fn runner_reaped(&self, runner: i32) {
        super::lock(&self.state).runners.remove(&runner);
    }

    /// The task was released (or its spawn failed after the runner started): its escapers may
    /// now be killed.
    pub(crate) fn task_released(&self, runner: i32) {
        let end = self.now_ticks();
        let mut st = super::lock(&self.state);
        st.runners.remove(&runner);
        let Some(start) = st.live.remove(&runner) else {
            return;
        };
        if st.ended.insert(runner, (start, end)).is_none() {
            st.ended_order.push_back(runner);
        }
        while st.ended_order.len() > RECENT_ENDED {
            if let Some(old) = st.ended_order.pop_front() {
                st.ended.remove(&old);
            }
        }
        if matches!(self.scope, Scope::ProcessGroup) {
            st.full_scan_due = true;
        }
    }

    /// Reaps the pool's zombie children and kills its escapers whose task ended. Never
    /// blocks: if another thread is sweeping, it returns at once with `again_soon`.
    pub(crate) fn sweep(&self, now: Instant) -> SweepReport {
        if !self.proc_is_ours {
            return SweepReport::default();
        }
        let mut st = match self.state.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return SweepReport {
                    again_soon: true,
                    ..SweepReport::default()
                }
            }
        };
        let mut report = SweepReport::default();
        // Fast path: one `waitid(WNOWAIT)` says whether any child waits to be reaped.
        let mut blocked = false;
        for _ in 0..1024 {
            match crate::sys::pidfd::peek_exited_child() {
                Ok(Some(pid)) if !st.is_runner(pid) => match read_stat(pid) {
                    Some(p)
                        if self.owner(&st, &p, host_session()) != Owner::Host && reap_pid(pid) =>
                    {
                        report.reaped += 1;
                    }
                    Some(_) => {
                        // The host's zombie (its to reap), or ours that would not be reaped:
                        // it hides the others, so scan.
                        blocked = true;
                        break;
                    }
                    // Gone meanwhile (reaped by someone else), or unreadable: scan.
                    None => {
                        blocked = true;
                        break;
                    }
                },
                Ok(Some(_runner)) => {
                    blocked = true;
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        let periodic = matches!(self.scope, Scope::ProcessGroup)
            && st
                .last_full_scan
                .is_none_or(|t| now.duration_since(t) >= FULL_SCAN_INTERVAL);
        if blocked || st.full_scan_due || periodic {
            let too_soon = st
                .last_full_scan
                .is_some_and(|t| now.duration_since(t) < FULL_SCAN_MIN_GAP);
            if too_soon {
                st.full_scan_due = true;
                report.again_soon = true;
            } else {
                st.full_scan_due = false;
                st.last_full_scan = Some(now);
                self.full_scan(&mut st, false, &mut report);
            }
        }
        if report.killed > 0 {
            report.again_soon = true;
        }
        report
    }

    /// Looks at every child: reaps the pool's zombies, kills the pool's live orphans whose
    /// task ended (every one of them with `all`, at the pool's end).
    fn full_scan(&self, st: &mut State, all: bool, report: &mut SweepReport) {
        let host_sid = host_session();
        // Born at or before this tick, an escaper may belong to a task still live.
        let oldest_live = st.live.values().copied().min();
        for pid in children() {
            if st.is_runner(pid) {
                continue;
            }
            let Some(p) = read_stat(pid) else { continue };
            let owner = self.owner(st, &p, host_sid);
            if owner == Owner::Host {
                continue;
            }
            if p.is_zombie() {
                if reap_pid(pid) {
                    report.reaped += 1;
                }
                continue;
            }
            let kill = all
                || match owner {
                    Owner::EndedTask => true,
                    Owner::Escaper { birth } => {
                        remember_session(st, p.session, birth);
                        // Task starts are taken just before the spawn; one tick of slack for
                        // rounding keeps the comparison on the safe side.
                        oldest_live.is_none_or(|start| start > birth.saturating_add(1))
                    }
                    Owner::Host | Owner::LiveTask | Owner::PoolCgroup => false,
                };
            if kill && self.kill(&p) {
                report.killed += 1;
            }
        }
    }

    fn owner(&self, st: &State, p: &Proc, host_sid: Option<i32>) -> Owner {
        match &self.scope {
            Scope::Cgroup { rel } => {
                if in_cgroup(p.pid, rel) {
                    Owner::PoolCgroup
                } else {
                    Owner::Host
                }
            }
            Scope::ProcessGroup => {
                if st.live.contains_key(&p.pgrp) || st.live.contains_key(&p.session) {
                    return Owner::LiveTask;
                }
                // A released task's group or session, for a process born before it ended
                // (after that, the pid could name someone else's new group).
                let ended_before =
                    |id: i32| st.ended.get(&id).is_some_and(|&(_, end)| p.start < end);
                if ended_before(p.pgrp) || ended_before(p.session) {
                    return Owner::EndedTask;
                }
                match host_sid {
                    Some(sid) if p.session != sid => {
                        let inherited = st.sessions.get(&p.session).copied();
                        Owner::Escaper {
                            birth: inherited.map_or(p.start, |b| b.min(p.start)),
                        }
                    }
                    _ => Owner::Host,
                }
            }
        }
    }

    /// SIGKILL through a pidfd, once the pidfd is known to name `p` (still our child, same
    /// start time); to its process group as well when it leads one.
    fn kill(&self, p: &Proc) -> bool {
        let Ok(pidfd) = crate::sys::pidfd::open(p.pid) else {
            return false;
        };
        match read_stat(p.pid) {
            Some(now) if now.ppid == self.me && now.start == p.start => {}
            _ => return false,
        }
        tracing::debug!(
            pid = p.pid,
            session = p.session,
            "killing an orphan of an ended task"
        );
        let group = p.pgrp == p.pid
            && crate::sys::pidfd::send_signal(pidfd.as_fd(), libc::SIGKILL, true).is_ok();
        group || crate::sys::pidfd::send_signal(pidfd.as_fd(), libc::SIGKILL, false).is_ok()
    }
}

impl Drop for OrphanSweep {
    /// The pool is over (its workers stopped): kills every orphan of the pool that is still
    /// alive and reaps them, for up to [`FINAL_SWEEP`]. Blocking, as the pool's drop is.
    fn drop(&mut self) {
        if !self.proc_is_ours {
            return;
        }
        let deadline = Instant::now() + FINAL_SWEEP;
        let me = std::mem::take(&mut *super::lock(&self.state));
        let mut st = me;
        // No task is live any more.
        let live: Vec<i32> = st.live.keys().copied().collect();
        let end = self.now_ticks();
        for runner in live {
            if let Some(start) = st.live.remove(&runner) {
                st.ended.insert(runner, (start, end));
            }
        }
        loop {
            let mut report = SweepReport::default();
            self.full_scan(&mut st, true, &mut report);
            let left = children().into_iter().any(|pid| {
                !st.is_runner(pid)
                    && read_stat(pid)
                        .is_some_and(|p| self.owner(&st, &p, host_session()) != Owner::Host)
            });
            if !left {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!("orphans of the pool still alive after {FINAL_SWEEP:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn remember_session(st: &mut State, session: i32, birth: u64) {
    match st.sessions.get_mut(&session) {
        Some(b) => *b = (*b).min(birth),
        None => {
            st.sessions.insert(session, birth);
            st.sessions_order.push_back(session);
            while st.sessions_order.len() > RECENT_SESSIONS {
                if let Some(old) = st.sessions_order.pop_front() {
                    st.sessions.remove(&old);
                }
            }
        }
    }
}

fn host_session() -> Option<i32> {
    rustix::process::getsid(None)
        .ok()
        .map(|p| p.as_raw_nonzero().get())
}

/// Whether `/proc/<pid>/cgroup` puts `pid` in the v2 cgroup `rel` or below it, also after
/// that cgroup was removed (a zombie's line then ends in ` (deleted)`).
fn in_cgroup(pid: i32, rel: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|path| path.strip_suffix(" (deleted)").unwrap_or(path))
        .is_some_and(|path| {
            path == rel
                || path
                    .strip_prefix(rel)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// Reaps our exited child `pid` (never blocks). Safe by pid: a zombie's pid cannot be reused
/// before it is reaped.
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
                if read_stat(pid).is_some_and(|p| p.ppid == me) {
                    out.push(pid);
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `/proc/<pid>/stat`, parsed after the last `)` (the command name may hold anything).
pub(super) fn read_stat(pid: i32) -> Option<Proc> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

fn parse_stat(pid: i32, text: &[u8]) -> Option<Proc> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    // Fields from 3 on: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime.
    let f: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
    if f.len() < 20 {
        return None;
    }
    Some(Proc {
        pid,
        state: *f[0].as_bytes().first()?,
        ppid: f[1].parse().ok()?,
        pgrp: f[2].parse().ok()?,
        session: f[3].parse().ok()?,
        start: f[19].parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line =
            b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        let p = parse_stat(4242, line).unwrap();
        assert_eq!(
            (p.state, p.ppid, p.pgrp, p.session, p.start),
            (b'S', 1, 4242, 4242, 987654)
        );
        assert!(parse_stat(1, b"1 (x) S 0 1").is_none());
        assert!(parse_stat(1, b"garbage").is_none());
    }

    #[test]
    fn own_stat_matches_the_kernel() {
        let me = read_stat(std::process::id() as i32).unwrap();
        assert_eq!(me.session, host_session().unwrap());
        assert_eq!(me.pgrp, rustix::process::getpgrp().as_raw_nonzero().get());
    }
}
