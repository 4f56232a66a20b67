//! PROVISIONAL signatures: the public pool API.
#![allow(unused_variables, dead_code)]

use crossbeam_channel::Receiver;

use crate::containment::{Containment, ContainmentKind};
use crate::error::{BuildError, ControlError, SpawnError};
use crate::event::{Event, TaskId};
use crate::spec::TaskSpec;

/// Which driver runs the state machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Auto,
    Uring,
    Epoll,
}

/// The driver a pool chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Uring,
    Epoll,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Uring => "uring",
            BackendKind::Epoll => "epoll",
        }
    }
}

/// Counters, summed over the workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub live_tasks: u64,
    pub spawned: u64,
    pub stale_completions: u64,
    pub rejected_events: u64,
}

pub struct PoolBuilder {}

impl PoolBuilder {
    /// Number of worker threads, each with its own ring. Default: the number of cores.
    pub fn workers(self, n: usize) -> Self { todo!() }
    pub fn containment(self, c: Containment) -> Self { todo!() }
    pub fn backend(self, b: Backend) -> Self { todo!() }
    /// Makes this process a child subreaper, and reaps orphaned descendants that come back.
    pub fn subreaper(self, on: bool) -> Self { todo!() }
    /// Delivers events to this callback (on the worker threads) instead of `Pool::events`.
    pub fn on_event(self, f: impl Fn(Event) + Send + Sync + 'static) -> Self { todo!() }
    pub fn build(self) -> Result<Pool, BuildError> { todo!() }
}

pub struct Pool {}

impl Pool {
    pub fn builder() -> PoolBuilder { todo!() }
    pub fn spawn(&self, spec: TaskSpec) -> Result<TaskHandle, SpawnError> { todo!() }
    pub fn events(&self) -> &Receiver<Event> { todo!() }
    pub fn containment(&self) -> ContainmentKind { todo!() }
    pub fn backend(&self) -> BackendKind { todo!() }
    /// How many tasks the pool can hold at once (fixed-file tables and fd limit).
    pub fn capacity(&self) -> usize { todo!() }
    pub fn stats(&self) -> PoolStats { todo!() }
    /// Kills every live task's tree, waits for their `Done`, and joins the workers.
    pub fn shutdown(self) { todo!() }
}

#[derive(Clone)]
pub struct TaskHandle {}

impl TaskHandle {
    pub fn id(&self) -> TaskId { todo!() }
    pub fn pid(&self) -> u32 { todo!() }
    pub fn signal(&self, signal: i32) -> Result<(), ControlError> { todo!() }
    /// SIGTERM to the tree, SIGKILL after the task's grace.
    pub fn terminate(&self) -> Result<(), ControlError> { todo!() }
    /// SIGKILL to the tree at once.
    pub fn kill(&self) -> Result<(), ControlError> { todo!() }
}
