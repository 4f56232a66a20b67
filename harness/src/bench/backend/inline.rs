//! Consuming pidring's events where they are produced, as tokio's per-child task does: an
//! `on_event` callback on the pool's worker threads (the `chatty` and `reqrep` scenarios).
//! Each chunk is consumed when the callback returns, so a task's budget never fills and no
//! line waits in a queue; a request is answered from the worker that read it, through the
//! handle its frame carries (`Chunk::task`). The callback
//! keeps each task's figures (line clock, round trips) in its worker thread's own map (all
//! events of a task come from one worker) and hands them over with the task's `Done`; every
//! event other than `Output` and `Message` goes on to the measuring thread as usual.

use std::cell::RefCell;
use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender};
use pidring::{Event, StreamId, TaskId};

use super::common::RoundTrips;
use crate::bench::resources::mono_ns;
use crate::bench::stats::LineClock;

/// One task's figures, kept on its worker.
#[derive(Default)]
pub struct TaskStats {
    pub clock: LineClock,
    pub trips: RoundTrips,
}

thread_local! {
    static STATS: RefCell<HashMap<TaskId, TaskStats>> = RefCell::new(HashMap::new());
}

/// What the measuring thread keeps of an inline consumer.
pub struct Inline {
    /// The events the callback passes on (everything but `Output` and `Message`).
    pub events: Receiver<Event>,
    /// Each task's figures, sent just before its `Done` is passed on.
    pub stats: Receiver<(TaskId, TaskStats)>,
}

/// The callback, and what the measuring thread reads from it. `reqrep_size`: answer each
/// message with itself, checking it as a `reqrep` request of that size.
pub fn consumer(reqrep_size: Option<usize>) -> (impl Fn(Event) + Send + Sync + 'static, Inline) {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let (stats_tx, stats): (Sender<(TaskId, TaskStats)>, _) = crossbeam_channel::unbounded();
    let callback = move |event: Event| match event {
        Event::Output {
            task,
            stream,
            bytes,
        } => {
            if stream == StreamId::STDOUT {
                let now = mono_ns();
                STATS.with(|s| {
                    s.borrow_mut()
                        .entry(task)
                        .or_default()
                        .clock
                        .feed(&bytes, now)
                });
            }
        }
        Event::Message {
            task,
            channel,
            frame,
        } => {
            if let Some(size) = reqrep_size {
                STATS.with(|s| {
                    s.borrow_mut()
                        .entry(task)
                        .or_default()
                        .trips
                        .request(&frame, size)
                });
                // The frame knows its task: no map of handles, no lock.
                if let Some(handle) = frame.task() {
                    let _ = handle.send(channel, &frame);
                }
            }
        }
        Event::Done { task, .. } => {
            let stats = STATS
                .with(|s| s.borrow_mut().remove(&task))
                .unwrap_or_default();
            let _ = stats_tx.send((task, stats));
            let _ = events_tx.send(event);
        }
        other => {
            let _ = events_tx.send(other);
        }
    };
    (callback, Inline { events, stats })
}
