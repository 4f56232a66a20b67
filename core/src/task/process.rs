//! The main process's part of a task: `Running` → `Stopping { level }` → `Reaped(status)`.

use super::ExitStatus;

/// How far the supervisor has gone in stopping the tree. Only ever rises: `Term` → `Kill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Level {
    /// SIGTERM was sent to the tree; the grace timer runs.
    Term,
    /// SIGKILL was sent to the tree.
    Kill,
}

/// The state of the main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProcessState {
    /// Running; the `Wait` op is in flight.
    Running,
    /// Running, and the supervisor has signalled the tree at `level`; the `Wait` op is in flight.
    Stopping { level: Level },
    /// Reaped (by us, or by a foreign reaper: `ExitStatus::Unknown`); no `Wait` op in flight.
    Reaped(ExitStatus),
}

#[derive(Debug)]
pub(super) struct Process {
    state: ProcessState,
}

impl Process {
    pub(super) fn new(state: ProcessState) -> Self {
        Process { state }
    }

    /// The one place where the process state changes.
    pub(super) fn set_state(&mut self, new: ProcessState) {
        tracing::trace!(old = ?self.state, new = ?new, "task process: state");
        self.state = new;
    }

    /// The reaped status, or `None` while the process runs (and its `Wait` op is in flight).
    pub(super) fn reaped(&self) -> Option<ExitStatus> {
        match self.state {
            ProcessState::Reaped(status) => Some(status),
            _ => None,
        }
    }

    /// Records that the tree was signalled at `level` while the process still runs.
    pub(super) fn stopping(&mut self, level: Level) {
        match self.state {
            ProcessState::Running => self.set_state(ProcessState::Stopping { level }),
            ProcessState::Stopping { level: old } if old < level => {
                self.set_state(ProcessState::Stopping { level })
            }
            _ => {}
        }
    }
}
