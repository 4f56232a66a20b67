//! Back-pressure: when the user reads events more slowly than children write, the worker
//! stops feeding the event queue instead of growing it without bound.
//!
//! A pause cancels the armed reads of running tasks (the data stays in the pipe and the
//! child blocks on a full pipe); the reads the machines then ask for again wait here until
//! the queue drains. Memory stays bounded by the pause threshold plus one batch of
//! completions, and no byte is dropped.
//!
//! A task whose main process has exited is exempt: what is left in its pipes is bounded,
//! and its drain period (which ends by cancelling reads) must not run out while the worker
//! holds its reads back.

/// Queued events at which reading pauses (at most 16 KiB each: 16 MiB).
pub(super) const PAUSE_AT: usize = 1024;
/// Queued events at which reading resumes.
pub(super) const RESUME_AT: usize = 256;

#[derive(Default)]
pub(super) struct Backpressure {
    paused: bool,
    /// Tasks with a read held back while paused: (slot, generation). The streams are
    /// flagged on the task itself, so resuming or cancelling is O(streams), never a scan.
    deferred: Vec<(u32, u16)>,
}

impl Backpressure {
    pub(super) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Updates the state from the number of queued events; `None` for "unbounded"
    /// (a callback sink, a disconnected queue, or a shutting-down worker). On resuming,
    /// returns the tasks whose held-back reads must now be submitted.
    pub(super) fn update(&mut self, queued: Option<usize>) -> Option<Vec<(u32, u16)>> {
        match queued {
            Some(n) if !self.paused && n >= PAUSE_AT => {
                self.paused = true;
                tracing::debug!(queued = n, "event queue full: pausing reads");
                None
            }
            Some(n) if self.paused && n > RESUME_AT => None,
            _ if self.paused => {
                self.paused = false;
                tracing::debug!("event queue drained: resuming reads");
                Some(std::mem::take(&mut self.deferred))
            }
            _ => None,
        }
    }

    /// A task had a read held back.
    pub(super) fn defer(&mut self, slot: u32, generation: u16) {
        if self.deferred.last() != Some(&(slot, generation)) {
            self.deferred.push((slot, generation));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_at_the_high_mark_and_resumes_at_the_low_one() {
        let mut bp = Backpressure::default();
        assert!(bp.update(Some(PAUSE_AT - 1)).is_none());
        assert!(!bp.is_paused());
        assert!(bp.update(Some(PAUSE_AT)).is_none());
        assert!(bp.is_paused());
        bp.defer(1, 2);
        bp.defer(1, 2);
        bp.defer(3, 0);
        assert!(bp.update(Some(RESUME_AT + 1)).is_none());
        let resumed = bp.update(Some(RESUME_AT)).expect("resumes");
        assert_eq!(resumed, vec![(1, 2), (3, 0)]);
        assert!(!bp.is_paused());
    }

    #[test]
    fn an_unbounded_sink_never_stays_paused() {
        let mut bp = Backpressure::default();
        bp.update(Some(PAUSE_AT));
        assert!(bp.update(None).is_some());
        assert!(!bp.is_paused());
    }
}
