//! PROVISIONAL signatures: whole-tree containment (cgroup v2 or process group).
#![allow(unused_variables, dead_code)]

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

use crate::spec::Limits;

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

/// One pool's share of the hierarchy: a parent cgroup, removed on drop.
#[derive(Debug)]
pub(crate) struct PoolContainment {
    kind: ContainmentKind,
}

impl PoolContainment {
    pub(crate) fn new(choice: Containment) -> Result<Self, ContainmentError> {
        todo!()
    }
    pub(crate) fn kind(&self) -> ContainmentKind {
        self.kind
    }
    /// Creates the task's cgroup (cgroup mode) and applies its limits.
    pub(crate) fn prepare(
        &self,
        task_key: u64,
        limits: &Limits,
    ) -> Result<TaskContainment, ContainmentError> {
        todo!()
    }
}

/// Where the child must be placed before it runs code of its own.
pub(crate) struct Placement {
    /// Directory fd of the task's v2 cgroup, for `CLONE_INTO_CGROUP`; closed after the spawn.
    pub(crate) cgroup_dir: Option<OwnedFd>,
    /// `cgroup.procs` files of v1 hierarchies (pids, memory) the child writes itself into.
    pub(crate) v1_procs: Vec<std::ffi::CString>,
}

/// One task's containment.
#[derive(Debug)]
pub(crate) struct TaskContainment {}

impl TaskContainment {
    pub(crate) fn placement(&self) -> Result<Placement, ContainmentError> {
        todo!()
    }
    /// Signals every process of the tree. `leader` is the main process's pidfd (the group leader).
    pub(crate) fn signal_tree(&self, leader: BorrowedFd<'_>, signal: i32) -> io::Result<u64> {
        todo!()
    }
    /// Whether any process of the tree is still alive.
    pub(crate) fn is_populated(&self, leader: BorrowedFd<'_>) -> io::Result<bool> {
        todo!()
    }
    /// `cgroup.events` for a `POLLPRI` watch; `None` in process-group mode.
    pub(crate) fn open_events(&self) -> io::Result<Option<OwnedFd>> {
        todo!()
    }
    /// Removes the task's cgroup(s); the tree must be empty.
    pub(crate) fn remove(self) -> io::Result<()> {
        todo!()
    }
}

/// PROVISIONAL: PR_SET_CHILD_SUBREAPER.
pub fn become_subreaper() -> io::Result<()> {
    todo!()
}
/// PROVISIONAL: reaps zombie children that are not task runners; returns how many.
pub fn reap_orphans(is_task_runner: impl Fn(i32) -> bool) -> usize {
    todo!()
}
