//! The worker's wake-ups: each task's machine deadline, its tree-watch backoff and its
//! retry of a failed driver operation, in one ordered set. A task holds at most one entry of
//! each kind, and it is removed when the deadline changes or the task is released, so the
//! set never holds more than a few entries per live task (a lazy-deletion heap would keep
//! every finished task's 24-hour timeout until it expired).

use std::collections::BTreeSet;
use std::time::Instant;

/// Why a task wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum WakeKind {
    /// The machine's `poll_timeout`.
    Machine,
    /// The tree watch's probe backoff is over.
    WatchSleep,
    /// A failed driver operation is due for another try.
    Retry,
}

/// The registered wake-ups of one task, so they can be moved or removed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TaskWakeups {
    machine: Option<Instant>,
    watch_sleep: Option<Instant>,
    retry: Option<Instant>,
}

impl TaskWakeups {
    fn slot(&mut self, kind: WakeKind) -> &mut Option<Instant> {
        match kind {
            WakeKind::Machine => &mut self.machine,
            WakeKind::WatchSleep => &mut self.watch_sleep,
            WakeKind::Retry => &mut self.retry,
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, kind: WakeKind) -> Option<Instant> {
        match kind {
            WakeKind::Machine => self.machine,
            WakeKind::WatchSleep => self.watch_sleep,
            WakeKind::Retry => self.retry,
        }
    }
}

#[derive(Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Instant, u32, WakeKind)>,
}

impl Timers {
    /// Sets (or, with `None`, clears) the `kind` wake-up of the task in `slot`.
    pub(crate) fn set(
        &mut self,
        slot: u32,
        wakeups: &mut TaskWakeups,
        kind: WakeKind,
        at: Option<Instant>,
    ) {
        let current = wakeups.slot(kind);
        if *current == at {
            return;
        }
        if let Some(old) = current.take() {
            self.set.remove(&(old, slot, kind));
        }
        if let Some(at) = at {
            self.set.insert((at, slot, kind));
            *current = Some(at);
        }
    }

    /// Removes every wake-up of a task that is being released.
    pub(crate) fn clear(&mut self, slot: u32, wakeups: &mut TaskWakeups) {
        for kind in [WakeKind::Machine, WakeKind::WatchSleep, WakeKind::Retry] {
            self.set(slot, wakeups, kind, None);
        }
    }

    /// The earliest wake-up.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _, _)| at)
    }

    /// Removes and returns one wake-up due at `now`; the caller clears the task's record of
    /// it (`TaskWakeups`) with [`Timers::fired`].
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(u32, WakeKind)> {
        match self.set.first() {
            Some(&(at, slot, kind)) if at <= now => {
                self.set.pop_first();
                Some((slot, kind))
            }
            _ => None,
        }
    }

    /// Forgets a fired wake-up in the task's record.
    pub(crate) fn fired(wakeups: &mut TaskWakeups, kind: WakeKind) {
        *wakeups.slot(kind) = None;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (mut a, mut b) = (TaskWakeups::default(), TaskWakeups::default());
        timers.set(
            1,
            &mut a,
            WakeKind::Machine,
            Some(t0 + Duration::from_secs(2)),
        );
        timers.set(
            2,
            &mut b,
            WakeKind::Machine,
            Some(t0 + Duration::from_secs(1)),
        );
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let due = t0 + Duration::from_secs(3);
        assert_eq!(timers.pop_due(due), Some((2, WakeKind::Machine)));
        assert_eq!(timers.pop_due(due), Some((1, WakeKind::Machine)));
        assert_eq!(timers.pop_due(due), None);
    }

    #[test]
    fn moving_or_clearing_a_deadline_leaves_no_entry_behind() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut w = TaskWakeups::default();
        for i in 0..1000 {
            let at = t0 + Duration::from_secs(86_400 + i);
            timers.set(7, &mut w, WakeKind::Machine, Some(at));
            timers.set(7, &mut w, WakeKind::Retry, Some(at));
        }
        assert_eq!(timers.len(), 2);
        timers.clear(7, &mut w);
        assert_eq!(timers.len(), 0);
        assert_eq!(w.get(WakeKind::Machine), None);
    }
}
