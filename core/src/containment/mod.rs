//! Whole-tree containment: a cgroup v2 per task (killed with `cgroup.kill`, watched through
//! `cgroup.events`), or the task's own process group where no writable cgroup v2 exists.
//!
//! - `discover`: where the hierarchies are (`/proc/self/mountinfo`, `/proc/self/cgroup`).
//! - `cgroup`: operations on one cgroup directory.
//! - `process_group`: signals to the task-runner's group through its pidfd.
//! - `escapers`: process-group mode's reach beyond the group: descendants that left it
//!   while their parent runs, found from the runner when the tree is signalled.
//! - `ownership`: pool directories are owned through an `flock`, which every PID
//!   namespace sees.
//! - `stale`: a new pool kills and removes the cgroups of dead pools.
//! - `removal`: cgroup removal off the event loop (the pool's cleanup thread).
//! - `subreaper` and `orphans`: orphans come back to the supervisor, which reaps (and,
//!   for process-group escapers, kills) only its own pool's.
//!
//! How `Containment::Auto` decides: cgroup mode if the pool's cgroup can be made. Errors that
//! mean "this process may not make cgroups here" — `EROFS` (a read-only cgroupfs, as in every
//! default Docker container), `EACCES`/`EPERM` (not root, or no delegation), `ENOENT`/`ENOTDIR`
//! (our cgroup is outside the mounted part of the hierarchy), no cgroup2 mount, no readable
//! `/proc` — give process-group mode, with the reason (path, errno, and how to get cgroup mode)
//! in `Pool::containment_reason()` and the log. Any other error (`ENOMEM`, `EMFILE`, `EAGAIN`
//! from `cgroup.max.descendants`, `EIO`, ...) fails the pool: those are not properties of the
//! environment but failures (often leaked cgroups), and quietly weakening containment would
//! hide them.
//!
//! Limits (`pids.max`, `memory.max`) go to the v2 task cgroup when the pool's v2 cgroup can
//! enable that controller, else to the controller's v1 hierarchy (hybrid hosts), which the
//! child joins itself before exec. A limit whose controller exists nowhere is an error.

mod cgroup;
mod discover;
mod escapers;
mod orphans;
mod ownership;
mod process_group;
mod removal;
mod stale;
mod subreaper;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::spec::Limits;

pub(crate) use orphans::OrphanSweep;
pub use subreaper::{become_subreaper, stop_being_subreaper};

use discover::Hierarchy;
use ownership::OwnedDir;
use removal::{Removal, Remover};

/// What the user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Containment {
    /// cgroup v2 where a writable hierarchy exists, else process group.
    #[default]
    Auto,
    /// A cgroup v2 per task, or [`BuildError::Containment`](crate::BuildError::Containment)
    /// when no writable cgroup v2 hierarchy exists here.
    Cgroup,
    /// The task's own process group: no cgroup is made. A process that leaves the group
    /// (`setsid`, `setpgid`) is still reached by a tree signal while its ancestry leads to
    /// the task-runner (it is found from there); one orphaned before the tree is signalled
    /// (a double-forked daemon) escapes the tree kill, unless
    /// [`PoolBuilder::subreaper`](crate::PoolBuilder::subreaper) brings it back to the
    /// supervisor, which kills it.
    ProcessGroup,
}

/// What the pool chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainmentKind {
    /// A cgroup v2 per task: the tree is killed with `cgroup.kill` and watched through
    /// `cgroup.events`, and nothing in it can escape.
    Cgroup,
    /// The task's own process group, signalled through the task-runner's pidfd.
    ProcessGroup,
}

impl ContainmentKind {
    /// The kind's name as the CLI and the logs spell it: `"cgroup"` or `"process-group"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainmentKind::Cgroup => "cgroup",
            ContainmentKind::ProcessGroup => "process-group",
        }
    }
}

/// Why a pool's or a task's containment could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ContainmentError {
    /// [`Containment::Cgroup`] was asked for and no cgroup can be made here; carries why
    /// (the paths and errnos tried) and how to get cgroup mode.
    #[error("no writable cgroup v2 hierarchy: {0}")]
    NoCgroupV2(String),
    /// An operation on a cgroup file or directory failed for a reason that is not a property
    /// of the environment (`ENOMEM`, `EMFILE`, `EAGAIN` from `cgroup.max.descendants`, ...):
    /// quietly falling back to process groups would hide it.
    #[error("{path}: {source}")]
    Io {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// A task's [`Limits`] need a controller that is available neither in the pool's v2
    /// cgroup nor as a v1 hierarchy (or the pool runs in process-group mode).
    #[error("limit {limit} needs the {controller} controller, which is not available: {detail}")]
    ControllerMissing {
        /// The limit asked for (`"pids_max"`, `"memory_max"`, as in [`Limits`]).
        limit: &'static str,
        /// The controller it needs (`"pids"`, `"memory"`).
        controller: &'static str,
        /// Why the controller is not available here.
        detail: String,
    },
}

/// One pool's share of the hierarchy: a parent cgroup, removed on drop.
#[derive(Debug)]
pub(crate) struct PoolContainment {
    kind: ContainmentKind,
    /// Why `kind` was chosen, for `Pool::containment_reason`.
    reason: String,
    cgroups: Option<PoolCgroups>,
    /// Removes task cgroups (and dead pools' cgroups) off the event loop.
    remover: Remover,
}

/// The pool's cgroups (cgroup mode).
#[derive(Debug)]
struct PoolCgroups {
    /// The pool's v2 cgroup directory and its lock, held while the pool lives.
    _v2_lock: OwnedDir,
    /// Its path.
    v2_dir: PathBuf,
    /// Its path as `/proc/<pid>/cgroup` shows it.
    v2_rel: String,
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
    dir: OnceLock<Result<OwnedDir, String>>,
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
            create_pool_dir(h)
                .map(|(dir, _)| dir)
                .map_err(|e| e.to_string())
        });
        match made {
            Ok(dir) => Ok(dir.path.as_path()),
            Err(e) => Err(e.clone()),
        }
    }

    fn created(&self) -> Option<&Path> {
        match self.dir.get() {
            Some(Ok(dir)) => Some(dir.path.as_path()),
            _ => None,
        }
    }
}

/// Why the pool's cgroup could not be made.
#[derive(Debug)]
enum NoCgroup {
    /// This environment does not let the process make one (read-only, not permitted, no v2
    /// mount): process-group mode under `Auto`, with this reason.
    Unavailable(String),
    /// A failure that no mode should hide.
    Failed(ContainmentError),
}

impl std::fmt::Display for NoCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoCgroup::Unavailable(reason) => f.write_str(reason),
            NoCgroup::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// What the user can do to get cgroup mode, for the reasons that say none is available.
const CGROUP_REMEDY: &str = "for cgroup containment run the container with --privileged \
     (Podman: --security-opt unmask=/sys/fs/cgroup), or run under systemd with Delegate=yes";

/// Whether a `mkdir` error means "no cgroup for this process here" rather than a failure.
fn means_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS | libc::EACCES | libc::EPERM | libc::ENOENT | libc::ENOTDIR)
    )
}

/// One line on why `mkdir` in `base` was refused.
fn explain_refusal(base: &Path, e: &io::Error) -> String {
    let base = base.display();
    match e.raw_os_error() {
        Some(libc::EROFS) => format!(
            "{base} is read-only (EROFS): the cgroup filesystem is mounted read-only, as in a \
             container started without --privileged"
        ),
        Some(errno @ (libc::EACCES | libc::EPERM)) => format!(
            "{base}: not permitted ({}): this process may not create cgroups there (it is not \
             root, or the cgroup is not delegated to it)",
            if errno == libc::EACCES {
                "EACCES"
            } else {
                "EPERM"
            }
        ),
        Some(errno @ (libc::ENOENT | libc::ENOTDIR)) => format!(
            "{base} does not exist ({}): this process's cgroup is outside the mounted part of \
             the hierarchy",
            if errno == libc::ENOENT {
                "ENOENT"
            } else {
                "ENOTDIR"
            }
        ),
        _ => format!("{base}: {e}"),
    }
}

/// Makes and locks a pool directory in our own cgroup of `h`, else at the hierarchy's root.
/// Returns it and its path as `/proc/<pid>/cgroup` shows it.
fn create_pool_dir(h: &Hierarchy) -> Result<(OwnedDir, String), NoCgroup> {
    let mut bases = vec![(h.own_dir.clone(), h.own_path.clone())];
    if h.own_dir != h.mount_point {
        // Outside our own cgroup; only matters when that one is not writable.
        bases.push((h.mount_point.clone(), "/".to_owned()));
    }
    let mut refusals = Vec::new();
    for (base, rel) in bases {
        match ownership::create(&base, ownership::next_name()) {
            Ok(dir) => {
                let name = dir
                    .path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                return Ok((dir, cgroup::join_rel(&rel, &name)));
            }
            Err(e) if means_unavailable(&e) => refusals.push(explain_refusal(&base, &e)),
            Err(e) => return Err(NoCgroup::Failed(cgroup::io_err(&base, e))),
        }
    }
    Err(NoCgroup::Unavailable(format!(
        "cannot create a cgroup: {}; {CGROUP_REMEDY}",
        refusals.join("; ")
    )))
}

impl PoolContainment {
    pub(crate) fn new(choice: Containment) -> Result<Self, ContainmentError> {
        let remover = Remover::default();
        if choice == Containment::ProcessGroup {
            tracing::info!(
                containment = "process-group",
                "containment: process group (requested)"
            );
            return Ok(PoolContainment {
                kind: ContainmentKind::ProcessGroup,
                reason: "requested".to_owned(),
                cgroups: None,
                remover,
            });
        }
        let found = discover::discover()
            .map_err(|e| {
                NoCgroup::Unavailable(format!(
                    "cannot read /proc/self/mountinfo or /proc/self/cgroup ({e}): is /proc mounted?"
                ))
            })
            .and_then(|h| {
                stale::sweep(&h, &remover);
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
                    remover,
                })
            }
            Err(NoCgroup::Unavailable(reason)) if choice == Containment::Auto => {
                tracing::info!(
                    containment = "process-group",
                    %reason,
                    "containment: process group (no writable cgroup v2)"
                );
                Ok(PoolContainment {
                    kind: ContainmentKind::ProcessGroup,
                    reason: format!("no writable cgroup v2: {reason}"),
                    cgroups: None,
                    remover,
                })
            }
            Err(NoCgroup::Unavailable(reason)) => Err(ContainmentError::NoCgroupV2(reason)),
            Err(NoCgroup::Failed(e)) => Err(e),
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
            return Ok(TaskContainment {
                cgroup: None,
                escapers: Mutex::new(Vec::new()),
            });
        };
        let name = format!("task-{task_key}");
        let dir = c.v2_dir.join(&name);
        cgroup::make_dir(&dir)?;
        let mut task = TaskCgroup {
            dir,
            v1_dirs: Vec::new(),
        };
        match c.apply_limits(&mut task, &name, limits) {
            Ok(()) => Ok(TaskContainment {
                cgroup: Some(task),
                escapers: Mutex::new(Vec::new()),
            }),
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
    fn create(h: &discover::Hierarchies) -> Result<PoolCgroups, NoCgroup> {
        let v2 = h.v2.as_ref().ok_or_else(|| {
            NoCgroup::Unavailable(format!(
                "no cgroup2 mount in /proc/self/mountinfo (a cgroup v1 host: boot with \
                 systemd.unified_cgroup_hierarchy=1, or mount cgroup2); {CGROUP_REMEDY}"
            ))
        })?;
        let (v2_owned, v2_rel) = create_pool_dir(v2)?;
        let v2_dir = v2_owned.path.clone();
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
            _v2_lock: v2_owned,
            v2_dir,
            v2_rel,
            v2_pids,
            v2_memory,
            v2_note: notes.join("; "),
            v1_pids: V1Pool {
                controller: "pids",
                hierarchy: h.v1_pids.clone(),
                dir: OnceLock::new(),
            },
            v1_memory: V1Pool {
                controller: "memory",
                hierarchy: h.v1_memory.clone(),
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
    /// Best effort, and blocking (it runs when the pool is dropped, after its workers
    /// stopped): the cleanup thread gets up to 1 s for task cgroups still pending; whatever is
    /// left in the pool's cgroup (tasks are normally gone by now) is killed and waited for up
    /// to 1 s more; then the pool's cgroups are removed and its lock released. What cannot be
    /// removed stays for the next pool's stale sweep.
    fn drop(&mut self) {
        self.remover.finish();
        let Some(c) = &self.cgroups else { return };
        let deadline = Instant::now() + Duration::from_secs(1);
        if cgroup::populated(&c.v2_dir).unwrap_or(false) {
            tracing::warn!(dir = %c.v2_dir.display(), "pool dropped with processes left in its cgroup: killing them");
            let _ = cgroup::kill(&c.v2_dir);
            while cgroup::populated(&c.v2_dir).unwrap_or(false) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let v1 = [c.v1_pids.created(), c.v1_memory.created()];
        for dir in std::iter::once(Some(c.v2_dir.as_path()))
            .chain(v1)
            .flatten()
        {
            let mut removal = Removal {
                dirs: vec![dir.to_owned()],
                _held: None,
            };
            loop {
                match removal::try_remove(&mut removal) {
                    Ok(true) => break,
                    Ok(false) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Ok(false) => {
                        tracing::warn!(dir = %dir.display(), "the pool's cgroup is still busy: left for the next pool's sweep");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pool's cgroup");
                        break;
                    }
                }
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
    /// Process-group mode: descendants found outside the group at earlier tree signals.
    escapers: Mutex<Vec<escapers::Escaper>>,
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

    /// Whether signalling or probing the tree needs the main process's pidfd (process-group
    /// mode: the group is reached through its leader's pidfd; a cgroup is reached by path).
    pub(crate) fn needs_leader(&self) -> bool {
        self.cgroup.is_none()
    }

    /// Signals every process of the tree and returns how many it reached (counting the main
    /// process if it is still alive; in process-group mode 1 if the group got it, 0 if it is
    /// empty, since the kernel does not tell, plus the escapers reached). `leader` is the
    /// main process's pidfd (the group leader; it may already be reaped), required when
    /// [`needs_leader`] says so.
    ///
    /// Process-group mode: the group through the leader's pidfd, and the descendants that
    /// left it (`setsid()`, `setpgid()`) and are found from the leader, or were found at an
    /// earlier signal (see `escapers`).
    ///
    /// cgroup mode: SIGKILL through `cgroup.kill`; other signals to each member through a
    /// pidfd, after checking it is still in the cgroup. Never `kill(2)` on a bare pid.
    ///
    /// [`needs_leader`]: TaskContainment::needs_leader
    pub(crate) fn signal_tree(
        &self,
        leader: Option<BorrowedFd<'_>>,
        signal: i32,
    ) -> io::Result<u64> {
        let Some(c) = &self.cgroup else {
            let leader = leader.ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
            // Escapers first: the walk needs the leader alive, and the group signal may end it.
            let mut remembered = self.escapers.lock().unwrap_or_else(|e| e.into_inner());
            let escaped = escapers::signal_all(Some(leader), &mut remembered, signal);
            return Ok(process_group::signal(leader, signal)? + escaped);
        };
        if signal == libc::SIGKILL {
            // Counted in the task's own cgroup only: a task that made cgroups of its own has
            // their members killed too, but not counted (reading every level costs a walk of
            // the subtree per kill, which a kill-all of thousands of tasks pays thousands of
            // times).
            let members = cgroup::procs_count(&c.dir)?;
            if cgroup::kill(&c.dir)? {
                return Ok(members);
            }
        }
        cgroup::signal_members(&c.dir, signal)
    }

    /// Whether any process of the tree is still alive; `leader` as for [`signal_tree`].
    ///
    /// [`signal_tree`]: TaskContainment::signal_tree
    pub(crate) fn is_populated(&self, leader: Option<BorrowedFd<'_>>) -> io::Result<bool> {
        match &self.cgroup {
            Some(c) => cgroup::populated(&c.dir),
            None => {
                let leader = leader.ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
                if process_group::is_populated(leader)? {
                    return Ok(true);
                }
                // Escapers found at a tree signal are the tree's too.
                let mut remembered = self.escapers.lock().unwrap_or_else(|e| e.into_inner());
                Ok(escapers::any_alive(&mut remembered))
            }
        }
    }

    /// Whether the tree is populated, read through its open `cgroup.events` (see
    /// [`open_events`](TaskContainment::open_events)).
    pub(crate) fn populated_from(&self, events: BorrowedFd<'_>) -> io::Result<bool> {
        cgroup::populated_fd(events)
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

    /// Removes the task's cgroup(s), retrying `EBUSY` for up to [`BLOCKING_REMOVAL`]: it
    /// blocks, so it is for the pool's cleanup thread (and tests), never for an event loop.
    /// The tree must be empty.
    pub(crate) fn remove(self) -> io::Result<()> {
        let mut removal = Removal {
            dirs: self.into_dirs(),
            _held: None,
        };
        removal::remove_blocking(&mut removal, BLOCKING_REMOVAL)
    }

    /// One attempt to remove the task's cgroup(s), without waiting: for an event loop.
    /// `Ok(Attempt::Busy)` (members still exiting, or cgroups the task made below its own
    /// that are still busy): retry later, or hand it to the cleanup thread.
    #[allow(dead_code)]
    pub(crate) fn try_remove(&mut self) -> io::Result<Attempt> {
        let Some(c) = &mut self.cgroup else {
            return Ok(Attempt::Removed);
        };
        let mut removal = Removal {
            dirs: std::iter::once(c.dir.clone())
                .chain(c.v1_dirs.iter().cloned())
                .collect(),
            _held: None,
        };
        let done = removal::try_remove(&mut removal)?;
        // What is gone need not be tried again.
        if removal.dirs.first() != Some(&c.dir) {
            c.v1_dirs.retain(|d| removal.dirs.contains(d));
        }
        Ok(if done {
            self.cgroup = None;
            Attempt::Removed
        } else {
            Attempt::Busy
        })
    }

    /// The directories to remove, deepest hierarchy first (v2, then v1).
    fn into_dirs(self) -> Vec<PathBuf> {
        match self.cgroup {
            None => Vec::new(),
            Some(c) => std::iter::once(c.dir).chain(c.v1_dirs).collect(),
        }
    }
}

/// How long the blocking removals ([`TaskContainment::remove`], [`remove_task_dir`]) retry
/// a cgroup the kernel still counts busy.
pub(crate) const BLOCKING_REMOVAL: Duration = Duration::from_millis(200);

/// What one removal attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Gone (or already gone).
    Removed,
    /// `EBUSY`/`ENOTEMPTY`: retry later (or hand it to the cleanup thread).
    Busy,
}

/// Removing a released task's cgroup, the calls a worker makes:
///
/// - On the event loop, never a wait: io_uring removes a single v2 directory
///   ([`TaskContainment::into_single_dir`]) with `IORING_OP_UNLINKAT` (`AT_REMOVEDIR`); any
///   driver can call [`try_remove_task_dir`] (or [`TaskContainment::try_remove`]) once,
///   which makes one `rmdir` per directory and reports `Busy` instead of sleeping.
/// - Whatever is still busy (or more than one directory, v1 limit hierarchies) goes to the
///   pool's cleanup thread, which calls [`remove_task_dir`] / [`TaskContainment::remove`]:
///   those retry `EBUSY` for up to [`BLOCKING_REMOVAL`].
///
/// One `rmdir` is cheap (tens of µs) but takes the hierarchy's mutex, which other pools'
/// `mkdir`s contend for; during a kill-all of thousands of tasks the cleanup thread keeps
/// that off the loop's core.
#[allow(dead_code)] // io_uring removes through the ring and epoll hands over; kept for drivers that try once
pub(crate) fn try_remove_task_dir(dir: &Path) -> io::Result<Attempt> {
    let mut removal = Removal {
        dirs: vec![dir.to_owned()],
        _held: None,
    };
    Ok(if removal::try_remove(&mut removal)? {
        Attempt::Removed
    } else {
        Attempt::Busy
    })
}

/// Removes a task's cgroup directory (and any cgroup the task made below it), retrying
/// `EBUSY` for up to [`BLOCKING_REMOVAL`]. Blocks: for the pool's cleanup thread only.
pub(crate) fn remove_task_dir(dir: &Path) -> io::Result<()> {
    let mut removal = Removal {
        dirs: vec![dir.to_owned()],
        _held: None,
    };
    removal::remove_blocking(&mut removal, BLOCKING_REMOVAL)
}

/// A lock that a panic elsewhere cannot make unusable (the data are plain sets and queues).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
