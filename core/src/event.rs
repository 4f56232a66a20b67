//! What the pool tells its user: [`Event`]s about [`TaskId`]s.

use std::fmt;

use crate::task::{ExitStatus, Outcome, StreamId};

/// A task's identity, unique within its pool for the pool's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// Per task, in this order: every `Output`, then one `Exited`, then one `Done`, last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Output {
        task: TaskId,
        stream: StreamId,
        bytes: Vec<u8>,
    },
    Exited {
        task: TaskId,
        status: ExitStatus,
    },
    Done {
        task: TaskId,
        outcome: Outcome,
    },
}

impl Event {
    pub fn task(&self) -> TaskId {
        match self {
            Event::Output { task, .. } | Event::Exited { task, .. } | Event::Done { task, .. } => {
                *task
            }
        }
    }
}
