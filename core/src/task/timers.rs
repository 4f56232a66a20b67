//! The task's deadlines. The driver never arms or disarms anything: it reads
//! [`super::TaskMachine::poll_timeout`] after each batch of actions and calls
//! `handle_timeout` when that instant has passed.

use std::time::Instant;

/// The deadlines of one task, in tie-break order (earlier kind fires first at equal instants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKind {
    /// The task timeout (`created + timeout`).
    Timeout = 0,
    /// SIGTERM → SIGKILL escalation (`SIGTERM time + grace`).
    Grace = 1,
    /// The main process exited but the tree or a pipe lives on (`reap time + drain`).
    Drain = 2,
    /// After SIGKILL with `TreeWatch::Notifies`: how long to wait for `populated 0`
    /// (`SIGKILL time + grace`).
    KillWait = 3,
}

const KINDS: [TimerKind; 4] = [
    TimerKind::Timeout,
    TimerKind::Grace,
    TimerKind::Drain,
    TimerKind::KillWait,
];

#[derive(Debug, Default)]
pub(super) struct Timers {
    deadlines: [Option<Instant>; 4],
}

impl Timers {
    /// Arms `kind` at `at`; `None` (an instant past what `Instant` can hold) means never.
    pub(super) fn arm(&mut self, kind: TimerKind, at: Option<Instant>) {
        tracing::trace!(?kind, ?at, "task timer: arm");
        self.deadlines[kind as usize] = at;
    }

    pub(super) fn disarm(&mut self, kind: TimerKind) {
        if self.deadlines[kind as usize].take().is_some() {
            tracing::trace!(?kind, "task timer: disarm");
        }
    }

    pub(super) fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        self.deadlines[kind as usize]
    }

    pub(super) fn is_armed(&self, kind: TimerKind) -> bool {
        self.deadlines[kind as usize].is_some()
    }

    pub(super) fn clear(&mut self) {
        self.deadlines = [None; 4];
    }

    pub(super) fn earliest(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The earliest deadline at or before `now`, ties broken by kind order.
    pub(super) fn next_due(&self, now: Instant) -> Option<TimerKind> {
        let mut best: Option<(Instant, TimerKind)> = None;
        for kind in KINDS {
            if let Some(at) = self.deadlines[kind as usize] {
                if at <= now && best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, kind));
                }
            }
        }
        best.map(|(_, kind)| kind)
    }
}
