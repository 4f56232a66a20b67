//! The task's process tree: whether it is known empty, watched, signalled or counted as killed.

use super::process::Level;
use super::TreeWatch;

/// What the machine knows about the tree and its watch op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TreeState {
    /// Not watched (yet): the process runs, or the tree is not tracked, or it counts as killed.
    Unwatched,
    /// `WatchTree` was emitted; the probe answer or the notification is pending
    /// (`Op::TreeWatch` in flight).
    Watching,
    /// `Cancel(Op::TreeWatch)` was sent (`Notifies` only); the watch op is still in flight.
    CancellingWatch,
    /// The watch is over and the tree was not empty (probe answered occupied, or the watch
    /// ended without telling).
    Occupied,
    /// The tree is known empty (or, with `TreeWatch::None`, counts as empty after the reap).
    Empty,
}

#[derive(Debug)]
pub(super) struct Tree {
    pub(super) mode: TreeWatch,
    state: TreeState,
    /// The strongest signal sent to the tree.
    pub(super) signalled: Option<Level>,
    /// The tree counts as killed: SIGKILL was sent (and, with `Notifies`, the wait for its
    /// emptiness ran out).
    killed: bool,
}

impl Tree {
    pub(super) fn new(mode: TreeWatch) -> Self {
        Tree {
            mode,
            state: TreeState::Unwatched,
            signalled: None,
            killed: false,
        }
    }

    pub(super) fn state(&self) -> TreeState {
        self.state
    }

    /// The one place where the tree state changes.
    pub(super) fn set_state(&mut self, new: TreeState) {
        tracing::trace!(old = ?self.state, new = ?new, killed = self.killed, "task tree: state");
        self.state = new;
    }

    /// Records the signal level sent to the tree (it only rises).
    pub(super) fn set_signalled(&mut self, level: Level) {
        tracing::trace!(old = ?self.signalled, new = ?level, "task tree: signalled");
        self.signalled = Some(level);
    }

    /// From now on the tree counts as killed.
    pub(super) fn set_killed(&mut self) {
        tracing::trace!(state = ?self.state, "task tree: counts as killed");
        self.killed = true;
    }

    pub(super) fn known_empty(&self) -> bool {
        self.state == TreeState::Empty
    }

    /// Empty or killed: nothing of the tree is left to wait for.
    pub(super) fn done(&self) -> bool {
        self.known_empty() || self.killed
    }

    /// The tree may still hold processes the supervisor can signal.
    pub(super) fn may_signal(&self) -> bool {
        !self.done() && self.signalled != Some(Level::Kill)
    }

    /// `Op::TreeWatch` is in flight.
    pub(super) fn watch_in_flight(&self) -> bool {
        matches!(self.state, TreeState::Watching | TreeState::CancellingWatch)
    }
}
