//! One stream of a task, with up to two directions on the same descriptor:
//! - a **read side** (stdout, stderr, an extra channel): `Reading` → (`Stopping` → `Paused`
//!   → `Reading`)* → (`Cancelling`) → `Ended`. `Stopping`/`Paused` are flow control: the
//!   application holds its whole budget of this task's data, so the read op is ended early
//!   and not resubmitted until the application consumed some.
//! - a **write side** (stdin, a framed channel): `Idle` ⇄ `Writing` → (`Cancelling`) →
//!   `Ended`, with the number of bytes queued and not yet written.
//!
//! The descriptor is closed (`Close`) once, when each side it has is `Ended` with no op in
//! flight.

use super::StreamId;

/// The read side of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadState {
    /// A read op is in flight (a multishot read, or the re-submitted one after it ended).
    Reading,
    /// Flow control: `StopRead` was sent; the op is still in flight. When it ends the side
    /// waits in `Paused`, or is read again if the task was resumed meanwhile.
    Stopping,
    /// Flow control: no op in flight, read again on resume.
    Paused,
    /// `Cancel(Op::Read)` was sent (the task is ending, or the stream was aborted); the op
    /// is still in flight. When it ends the side is `Ended`.
    Cancelling,
    /// The read op ended for good (EOF, error, cancellation), or the side was given up
    /// while paused.
    Ended,
}

impl ReadState {
    pub(super) fn in_flight(self) -> bool {
        matches!(
            self,
            ReadState::Reading | ReadState::Stopping | ReadState::Cancelling
        )
    }
}

/// The write side of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteState {
    /// No write op in flight (bytes may be queued only while one is).
    Idle,
    /// A write op is in flight.
    Writing,
    /// `Cancel(Op::Write)` was sent; the op is still in flight.
    Cancelling,
    /// No more writes: closed by the user, failed, or given up because nobody can read.
    Ended,
}

#[derive(Debug)]
pub(super) struct WriteSide {
    pub(super) state: WriteState,
    /// Bytes accepted by `handle_write` and not yet written.
    pub(super) queued: u64,
    /// The user asked to close once the queue is written (`CloseStdin`).
    pub(super) close_requested: bool,
}

#[derive(Debug)]
pub(super) struct Stream {
    pub(super) id: StreamId,
    read: Option<ReadState>,
    pub(super) write: Option<WriteSide>,
    /// `Close` was emitted.
    pub(super) closed: bool,
    /// Bytes accounted by `handle_data`.
    pub(super) bytes: u64,
}

impl Stream {
    pub(super) fn new(id: StreamId, read: Option<ReadState>, write: bool) -> Self {
        Stream {
            id,
            read,
            write: write.then_some(WriteSide {
                state: WriteState::Idle,
                queued: 0,
                close_requested: false,
            }),
            closed: false,
            bytes: 0,
        }
    }

    pub(super) fn read(&self) -> Option<ReadState> {
        self.read
    }

    /// The one place where a read side's state changes.
    pub(super) fn set_read(&mut self, new: ReadState) {
        tracing::trace!(stream = self.id.0, old = ?self.read, new = ?new, "task stream: read");
        self.read = Some(new);
    }

    /// The one place where a write side's state changes.
    pub(super) fn set_write(&mut self, new: WriteState) {
        if let Some(w) = &mut self.write {
            tracing::trace!(stream = self.id.0, old = ?w.state, new = ?new, queued = w.queued, "task stream: write");
            w.state = new;
        }
    }

    pub(super) fn read_in_flight(&self) -> bool {
        self.read.is_some_and(ReadState::in_flight)
    }

    pub(super) fn write_in_flight(&self) -> bool {
        self.write
            .as_ref()
            .is_some_and(|w| matches!(w.state, WriteState::Writing | WriteState::Cancelling))
    }

    /// The read side is over (or there is none).
    pub(super) fn read_done(&self) -> bool {
        self.read.is_none_or(|r| r == ReadState::Ended)
    }

    /// The write side is over (or there is none).
    pub(super) fn write_done(&self) -> bool {
        self.write
            .as_ref()
            .is_none_or(|w| w.state == WriteState::Ended)
    }

    /// Accepts more bytes to write.
    pub(super) fn writable(&self) -> bool {
        !self.closed
            && self.write.as_ref().is_some_and(|w| {
                !w.close_requested && matches!(w.state, WriteState::Idle | WriteState::Writing)
            })
    }
}
