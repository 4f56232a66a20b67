//! Whole-tree containment: a cgroup v2 per task (killed with `cgroup.kill`, watched through
//! `cgroup.events`), or the task's own process group where no writable cgroup v2 exists.
//!
//! - [`discover`]: where the hierarchies are (`/proc/self/mountinfo`, `/proc/self/cgroup`).
//! - [`cgroup`]: operations on one cgroup directory.
//! - [`process_group`]: signals to the task-runner's group through its pidfd.
//! - [`subreaper`]: orphans come back to the supervisor and are reaped there.
//!
//! Limits (`pids.max`, `memory.max`) go to the v2 task cgroup when the pool's v2 cgroup can
//! enable that controller, else to the controller's v1 hierarchy (hybrid hosts), which the
//! child joins itself before exec. A limit whose controller exists nowhere is an error.

mod cgroup;
mod discover;
mod process_group;
mod stale;
mod subreaper;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::spec::Limits;

pub use subreaper::{become_subreaper, reap_orphans, stop_being_subreaper};

use discover::Hierarchy;

/// What the user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Containment {
    /// cgroup v2 where a writable hierarchy exists, else process group.
    #[default]
    Auto,
    Cgroup,
    ProcessGroup,
}

/// What the pool chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainmentKind {
    Cgroup,
    ProcessGroup,
}

impl ContainmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainmentKind::Cgroup => "cgroup",
            ContainmentKind::ProcessGroup => "process-group",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainmentError {
    #[error("no writable cgroup v2 hierarchy: {0}")]
    NoCgroupV2(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("limit {limit} needs the {controller} controller, which is not available: {detail}")]
    ControllerMissing {
        limit: &'static str,
        controller: &'static str,
        detail: String,
    },
}

/// Pools made by this process so far (names `pidring-<pid>-<n>`).
static POOLS: AtomicU64 = AtomicU64::new(0);

/// One pool's share of the hierarchy: a parent cgroup, removed on drop.
#[derive(Debug)]
pub(crate) struct PoolContainment {
    kind: ContainmentKind,
    /// Why `kind` was chosen, for `Pool::containment_reason`.
    reason: String,
    cgroups: Option<PoolCgroups>,
}

/// The pool's cgroups (cgroup mode).
#[derive(Debug)]
struct PoolCgroups {
    /// The pool's v2 cgroup directory.
    v2_dir: PathBuf,
    /// Controllers enabled for the task cgroups in v2.
    v2_pids: bool,
    v2_memory: bool,
    /// Why a controller is not usable in v2 (for error messages).
    v2_note: String,
    v1_pids: V1Pool,
    v1_memory: V1Pool,
}

/// The pool's cgroup in one v1 hierarchy, created when a task first needs it.
#[derive(Debug)]
struct V1Pool {
    controller: &'static str,
    hierarchy: Option<Hierarchy>,
    name: String,
    dir: OnceLock<Result<PathBuf, String>>,
}

impl V1Pool {
    fn dir(&self) -> Result<&Path, String> {
        let made = self.dir.get_or_init(|| {
            let Some(h) = &self.hierarchy else {
                return Err(format!(
                    "no v1 hierarchy with the {} controller is mounted",
                    self.controller
                ));
            };
            create_pool_dir(h, &self.name).map(|(dir, _)| dir)
        });
        match made {
            Ok(dir) => Ok(dir.as_path()),
            Err(e) => Err(e.clone()),
        }
    }

    fn created(&self) -> Option<&Path> {
        match self.dir.get() {
            Some(Ok(dir)) => Some(dir.as_path()),
            _ => None,
        }
    }
}

/// Makes `<name>` in our own cgroup of `h`, else at the hierarchy's root. Returns the
/// directory and its path as `/proc/<pid>/cgroup` shows it.
fn create_pool_dir(h: &Hierarchy, name: &str) -> Result<(PathBuf, String), String> {
    let mut reasons = Vec::new();
    let mut bases = vec![(h.own_dir.clone(), h.own_path.clone())];
    if h.own_dir != h.mount_point {
        // Outside our own cgroup; only matters when that one is not writable.
        bases.push((h.mount_point.clone(), "/".to_owned()));
    }
    for (base, rel) in bases {
        let dir = base.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((dir, cgroup::join_rel(&rel, name))),
            Err(e) => reasons.push(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(reasons.join("; "))
}

impl PoolContainment {
    pub(crate) fn new(choice: Containment) -> Result<Self, ContainmentError> {
        if choice == Containment::ProcessGroup {
            tracing::info!(
                containment = "process-group",
                "containment: process group (requested)"
            );
            return Ok(PoolContainment {
                kind: ContainmentKind::ProcessGroup,
                reason: "requested".to_owned(),
                cgroups: None,
            });
        }
        let found = discover::discover()
            .map_err(|e| format!("cannot read /proc/self/mountinfo or /proc/self/cgroup: {e}"))
            .and_then(|h| {
                stale::sweep(&h);
                PoolCgroups::create(&h)
            });
        match found {
            Ok(c) => {
                tracing::info!(
                    containment = "cgroup",
                    dir = %c.v2_dir.display(),
                    v2_pids = c.v2_pids,
                    v2_memory = c.v2_memory,
                    "containment: cgroup v2 per task"
                );
                Ok(PoolContainment {
                    kind: ContainmentKind::Cgroup,
                    reason: if choice == Containment::Cgroup {
                        "requested".to_owned()
                    } else {
                        format!("cgroup v2 is writable at {}", c.v2_dir.display())
                    },
                    cgroups: Some(c),
                })
            }
            Err(reason) if choice == Containment::Auto => {
                tracing::info!(
                    containment = "process-group",
                    %reason,
                    "containment: process group (no writable cgroup v2; descendants that call setsid() escape)"
                );
                Ok(PoolContainment {
                    kind: ContainmentKind::ProcessGroup,
                    reason: format!("no writable cgroup v2: {reason}"),
                    cgroups: None,
                })
            }
            Err(reason) => Err(ContainmentError::NoCgroupV2(reason)),
        }
    }

    pub(crate) fn kind(&self) -> ContainmentKind {
        self.kind
    }

    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// The pool's v2 cgroup directory (cgroup mode).
    #[allow(dead_code)]
    pub(crate) fn cgroup_dir(&self) -> Option<&Path> {
        self.cgroups.as_ref().map(|c| c.v2_dir.as_path())
    }

    /// Creates the task's cgroup (cgroup mode) and applies its limits.
    pub(crate) fn prepare(
        &self,
        task_key: u64,
        limits: &Limits,
    ) -> Result<TaskContainment, ContainmentError> {
        let Some(c) = &self.cgroups else {
            if let Some((limit, controller)) = first_limit(limits) {
                return Err(ContainmentError::ControllerMissing {
                    limit,
                    controller,
                    detail: "process-group containment has no cgroups".to_owned(),
                });
            }
            return Ok(TaskContainment { cgroup: None });
        };
        let name = format!("task-{task_key}");
        let dir = c.v2_dir.join(&name);
        cgroup::make_dir(&dir)?;
        let mut task = TaskCgroup {
            dir,
            v1_dirs: Vec::new(),
        };
        match c.apply_limits(&mut task, &name, limits) {
            Ok(()) => Ok(TaskContainment { cgroup: Some(task) }),
            Err(e) => {
                let _ = task.remove();
                Err(e)
            }
        }
    }
}

fn first_limit(limits: &Limits) -> Option<(&'static str, &'static str)> {
    if limits.pids_max.is_some() {
        Some(("pids_max", "pids"))
    } else if limits.memory_max.is_some() {
        Some(("memory_max", "memory"))
    } else {
        None
    }
}

impl PoolCgroups {
    fn create(h: &discover::Hierarchies) -> Result<PoolCgroups, String> {
        let v2 =
            h.v2.as_ref()
                .ok_or("no cgroup2 mount in /proc/self/mountinfo")?;
        let name = format!(
            "pidring-{}-{}",
            std::process::id(),
            POOLS.fetch_add(1, Ordering::Relaxed)
        );
        let (v2_dir, _) = create_pool_dir(v2, &name)?;
        // Enable pids / memory for the task cgroups where the parent offers them.
        let offered =
            std::fs::read_to_string(v2_dir.join("cgroup.controllers")).unwrap_or_default();
        let mut notes = Vec::new();
        let mut enable = |ctrl: &str| -> bool {
            if !offered.split_whitespace().any(|c| c == ctrl) {
                notes.push(format!("{ctrl} is not offered in {}", v2_dir.display()));
                return false;
            }
            match cgroup::write_file(&v2_dir.join("cgroup.subtree_control"), &format!("+{ctrl}")) {
                Ok(()) => true,
                Err(e) => {
                    notes.push(format!("cannot enable {ctrl} in {}: {e}", v2_dir.display()));
                    false
                }
            }
        };
        let v2_pids = enable("pids");
        let v2_memory = enable("memory");
        Ok(PoolCgroups {
            v2_dir,
            v2_pids,
            v2_memory,
            v2_note: notes.join("; "),
            v1_pids: V1Pool {
                controller: "pids",
                hierarchy: h.v1_pids.clone(),
                name: name.clone(),
                dir: OnceLock::new(),
            },
            v1_memory: V1Pool {
                controller: "memory",
                hierarchy: h.v1_memory.clone(),
                name,
                dir: OnceLock::new(),
            },
        })
    }

    fn apply_limits(
        &self,
        task: &mut TaskCgroup,
        name: &str,
        limits: &Limits,
    ) -> Result<(), ContainmentError> {
        if let Some(max) = limits.pids_max {
            self.apply_one(
                task,
                name,
                "pids_max",
                self.v2_pids,
                &self.v1_pids,
                "pids.max",
                "pids.max",
                max,
            )?;
        }
        if let Some(max) = limits.memory_max {
            self.apply_one(
                task,
                name,
                "memory_max",
                self.v2_memory,
                &self.v1_memory,
                "memory.max",
                "memory.limit_in_bytes",
                max,
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_one(
        &self,
        task: &mut TaskCgroup,
        name: &str,
        limit: &'static str,
        in_v2: bool,
        v1: &V1Pool,
        v2_file: &str,
        v1_file: &str,
        value: u64,
    ) -> Result<(), ContainmentError> {
        if in_v2 {
            let file = task.dir.join(v2_file);
            return cgroup::write_file(&file, &value.to_string())
                .map_err(|e| cgroup::io_err(&file, e));
        }
        let pool_dir = v1
            .dir()
            .map_err(|v1_reason| ContainmentError::ControllerMissing {
                limit,
                controller: v1.controller,
                detail: format!("cgroup v2: {}; cgroup v1: {v1_reason}", self.v2_note),
            })?;
        let dir = pool_dir.join(name);
        cgroup::make_dir(&dir)?;
        task.v1_dirs.push(dir.clone());
        let file = dir.join(v1_file);
        cgroup::write_file(&file, &value.to_string()).map_err(|e| cgroup::io_err(&file, e))
    }
}

impl Drop for PoolContainment {
    /// Best effort: kills whatever is left in the pool's cgroup (tasks are normally gone by
    /// now), then removes the task cgroups left behind and the pool's own.
    fn drop(&mut self) {
        let Some(c) = &self.cgroups else { return };
        if cgroup::populated(&c.v2_dir).unwrap_or(false) {
            tracing::warn!(dir = %c.v2_dir.display(), "pool dropped with processes left in its cgroup: killing them");
            let _ = cgroup::kill(&c.v2_dir);
            let deadline = Instant::now() + Duration::from_secs(1);
            while cgroup::populated(&c.v2_dir).unwrap_or(false) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let v1 = [c.v1_pids.created(), c.v1_memory.created()];
        for dir in std::iter::once(Some(c.v2_dir.as_path()))
            .chain(v1)
            .flatten()
        {
            if let Err(e) = cgroup::remove_tree(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pool's cgroup");
            }
        }
    }
}

/// Where the child must be placed before it runs code of its own.
#[derive(Debug)]
pub(crate) struct Placement {
    /// Directory fd of the task's v2 cgroup, for `CLONE_INTO_CGROUP`; closed after the spawn.
    pub(crate) cgroup_dir: Option<OwnedFd>,
    /// `cgroup.procs` files of v1 hierarchies (pids, memory) the child writes itself into.
    pub(crate) v1_procs: Vec<std::ffi::CString>,
}

/// One task's containment.
#[derive(Debug)]
pub(crate) struct TaskContainment {
    /// `None`: process-group mode.
    cgroup: Option<TaskCgroup>,
}

#[derive(Debug)]
struct TaskCgroup {
    dir: PathBuf,
    /// The task's cgroups in v1 hierarchies (limits on a hybrid host).
    v1_dirs: Vec<PathBuf>,
}

impl TaskCgroup {
    fn remove(&self) -> io::Result<()> {
        let mut result = cgroup::remove_tree(&self.dir);
        for dir in &self.v1_dirs {
            if let Err(e) = cgroup::remove_tree(dir) {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

impl TaskContainment {
    pub(crate) fn placement(&self) -> Result<Placement, ContainmentError> {
        let Some(c) = &self.cgroup else {
            return Ok(Placement {
                cgroup_dir: None,
                v1_procs: Vec::new(),
            });
        };
        let cgroup_dir = cgroup::open_dir(&c.dir).map_err(|e| cgroup::io_err(&c.dir, e))?;
        let mut v1_procs = Vec::with_capacity(c.v1_dirs.len());
        for dir in &c.v1_dirs {
            let procs = dir.join("cgroup.procs");
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(procs.as_os_str()).to_vec();
            let cstr = std::ffi::CString::new(bytes)
                .map_err(|_| cgroup::io_err(&procs, io::ErrorKind::InvalidInput.into()))?;
            v1_procs.push(cstr);
        }
        Ok(Placement {
            cgroup_dir: Some(cgroup_dir),
            v1_procs,
        })
    }

    /// Signals every process of the tree and returns how many it reached (counting the main
    /// process if it is still alive; in process-group mode 1 if the group got it, 0 if it is
    /// empty, since the kernel does not tell). `leader` is the main process's pidfd (the
    /// group leader; it may already be reaped).
    ///
    /// cgroup mode: SIGKILL through `cgroup.kill`; other signals to each member through a
    /// pidfd, after checking it is still in the cgroup. Never `kill(2)` on a bare pid.
    pub(crate) fn signal_tree(&self, leader: BorrowedFd<'_>, signal: i32) -> io::Result<u64> {
        let Some(c) = &self.cgroup else {
            return process_group::signal(leader, signal);
        };
        if signal == libc::SIGKILL {
            let members = cgroup::procs_recursive(&c.dir)?.len() as u64;
            if cgroup::kill(&c.dir)? {
                return Ok(members);
            }
        }
        cgroup::signal_members(&c.dir, signal)
    }

    /// Whether any process of the tree is still alive.
    pub(crate) fn is_populated(&self, leader: BorrowedFd<'_>) -> io::Result<bool> {
        match &self.cgroup {
            Some(c) => cgroup::populated(&c.dir),
            None => process_group::is_populated(leader),
        }
    }

    /// `cgroup.events` (`O_RDONLY | O_CLOEXEC`) for a `POLLPRI` watch; `None` in
    /// process-group mode.
    pub(crate) fn open_events(&self) -> io::Result<Option<OwnedFd>> {
        match &self.cgroup {
            Some(c) => cgroup::open_events(&c.dir).map(Some),
            None => Ok(None),
        }
    }

    /// The task's v2 cgroup directory (cgroup mode).
    #[allow(dead_code)]
    pub(crate) fn cgroup_dir(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(|c| c.dir.as_path())
    }

    /// For a task whose only cgroup is its v2 directory: that directory, to be removed
    /// asynchronously (the worker's ring); `Err(self)` when more needs removing.
    pub(crate) fn into_single_dir(self) -> Result<Option<PathBuf>, TaskContainment> {
        match &self.cgroup {
            None => Ok(None),
            Some(c) if c.v1_dirs.is_empty() => Ok(self.cgroup.map(|c| c.dir)),
            Some(_) => Err(self),
        }
    }

    /// Removes the task's cgroup(s); the tree must be empty. Retries briefly on `EBUSY`.
    pub(crate) fn remove(self) -> io::Result<()> {
        match &self.cgroup {
            Some(c) => c.remove(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;

/// Removes a task's cgroup directory (and any cgroup the task made below it), retrying
/// briefly while the kernel still counts it busy: the fallback when the ring's
/// asynchronous removal failed.
pub(crate) fn remove_task_dir(dir: &Path) -> io::Result<()> {
    cgroup::remove_tree(dir)
}
