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

use crate::task::StreamId;

/// Queued events at which reading pauses (at most 16 KiB each: 16 MiB).
pub(super) const PAUSE_AT: usize = 1024;
/// Queued events at which reading resumes.
pub(super) const RESUME_AT: usize = 256;

#[derive(Default)]
pub(super) struct Backpressure {
    paused: bool,
    /// Reads the machines asked for while paused: (slot, generation, stream).
    deferred_reads: Vec<(u32, u16, StreamId)>,
}

/// The reads to submit once the queue drained.
pub(super) struct Resumed {
    pub(super) reads: Vec<(u32, u16, StreamId)>,
}

impl Backpressure {
    pub(super) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Updates the state from the number of queued events; `None` for "unbounded"
    /// (a callback sink, a disconnected queue, or a shutting-down worker).
    pub(super) fn update(&mut self, queued: Option<usize>) -> Option<Resumed> {
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
                Some(Resumed {
                    reads: std::mem::take(&mut self.deferred_reads),
                })
            }
            _ => None,
        }
    }

    pub(super) fn defer_read(&mut self, slot: u32, generation: u16, stream: StreamId) {
        self.deferred_reads.push((slot, generation, stream));
    }

    /// Takes the deferred reads of one task (its process exited: what is left in its pipes
    /// is bounded, and its drain period must not run out while the worker holds back).
    pub(super) fn take_task(&mut self, slot: u32, generation: u16) -> Vec<StreamId> {
        let mut taken = Vec::new();
        self.deferred_reads.retain(|&(s, g, stream)| {
            let ours = s == slot && g == generation;
            if ours {
                taken.push(stream);
            }
            !ours
        });
        taken
    }

    /// Forgets a deferred read (the machine cancelled it); whether there was one.
    pub(super) fn take_deferred(&mut self, slot: u32, generation: u16, stream: StreamId) -> bool {
        let before = self.deferred_reads.len();
        self.deferred_reads
            .retain(|r| *r != (slot, generation, stream));
        before != self.deferred_reads.len()
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
        bp.defer_read(1, 2, StreamId::STDOUT);
        bp.defer_read(1, 2, StreamId::STDERR);
        assert!(bp.take_deferred(1, 2, StreamId::STDERR));
        bp.defer_read(3, 0, StreamId::STDOUT);
        assert_eq!(bp.take_task(3, 0), vec![StreamId::STDOUT]);
        assert!(bp.take_task(3, 0).is_empty());
        assert!(!bp.take_deferred(1, 3, StreamId::STDOUT));
        assert!(bp.update(Some(RESUME_AT + 1)).is_none());
        let resumed = bp.update(Some(RESUME_AT)).expect("resumes");
        assert_eq!(resumed.reads, vec![(1, 2, StreamId::STDOUT)]);
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
