//! Deadlines of the worker's tasks: a min-heap with lazy deletion. A task re-registers
//! whenever its machine's `poll_timeout` changes; outdated entries are skipped when popped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u32, u16)>>,
}

impl Timers {
    pub(super) fn insert(&mut self, deadline: Instant, slot: u32, generation: u16) {
        self.heap.push(Reverse((deadline, slot, generation)));
    }

    /// The earliest deadline, possibly of an outdated entry (a harmless early wake-up).
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// Removes and returns one entry due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, u32, u16)> {
        match self.heap.peek() {
            Some(Reverse((deadline, _, _))) if *deadline <= now => {
                self.heap.pop().map(|Reverse(entry)| entry)
            }
            _ => None,
        }
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
        timers.insert(t0 + Duration::from_secs(2), 1, 0);
        timers.insert(t0 + Duration::from_secs(1), 2, 0);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let due = t0 + Duration::from_secs(3);
        assert_eq!(timers.pop_due(due).map(|e| e.1), Some(2));
        assert_eq!(timers.pop_due(due).map(|e| e.1), Some(1));
        assert_eq!(timers.pop_due(due), None);
    }
}
