//! PROVISIONAL signatures: starting a child (clone3 + CLONE_PIDFD, child setup, exec).
#![allow(unused_variables, dead_code)]
use std::os::fd::OwnedFd;

use crate::containment::Placement;
use crate::error::SpawnError;
use crate::spec::TaskSpec;
use crate::task::StreamId;

/// Everything the child needs, resolved in the parent before the clone (the child may not allocate).
pub(crate) struct Prepared {}

pub(crate) fn prepare(spec: &TaskSpec) -> Result<Prepared, SpawnError> { todo!() }

pub(crate) struct Child {
    pub(crate) pid: i32,
    /// Blocking pidfd, `O_CLOEXEC`.
    pub(crate) pidfd: OwnedFd,
    /// Supervisor ends of the captured streams, `O_CLOEXEC`, in `StreamId` order.
    pub(crate) streams: Vec<(StreamId, OwnedFd)>,
}

pub(crate) fn spawn(prepared: &Prepared, placement: &Placement) -> Result<Child, SpawnError> { todo!() }
