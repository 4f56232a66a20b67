//! One stream of a task (stdout, stderr, an extra channel): `Reading` → (`Cancelling`) → `Closed`.

use super::StreamId;

/// The state of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamState {
    /// A read op is in flight (a multishot read, or the re-submitted one after it ended).
    Reading,
    /// `Cancel(Op::Read)` was sent; the read op is still in flight until its completion.
    Cancelling,
    /// The read op ended for good (EOF, error, cancellation) and `Close` was emitted.
    Closed,
}

#[derive(Debug)]
pub(super) struct Stream {
    pub(super) id: StreamId,
    state: StreamState,
    /// Bytes accounted by `handle_data`.
    pub(super) bytes: u64,
}

impl Stream {
    pub(super) fn new(id: StreamId, state: StreamState) -> Self {
        Stream {
            id,
            state,
            bytes: 0,
        }
    }

    pub(super) fn state(&self) -> StreamState {
        self.state
    }

    /// The one place where a stream's state changes.
    pub(super) fn set_state(&mut self, new: StreamState) {
        tracing::trace!(stream = self.id.0, old = ?self.state, new = ?new, "task stream: state");
        self.state = new;
    }

    pub(super) fn in_flight(&self) -> bool {
        self.state != StreamState::Closed
    }
}
