//! What the pool tells its user: [`Event`]s about [`TaskId`]s, and the [`Chunk`]s of data
//! they carry.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::error::WriteError;
use crate::task::{ExitStatus, Outcome, StreamId};
use crate::worker::shared::TaskShared;

/// A task's identity, unique within its pool for the pool's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// Bytes a task wrote (an [`Event::Output`]) or a frame it sent (an [`Event::Message`]).
///
/// A chunk counts against its task's budget (`PoolBuilder::task_budget`) from the moment
/// the pool delivers it until it is **consumed**: dropped, or turned into a `Vec` with
/// [`into_vec`](Chunk::into_vec). While a task's unconsumed chunks fill its budget, the pool
/// stops reading that task (its writer blocks on the full pipe), and only that task: hold
/// chunks as long as needed, nothing is lost, and memory stays bounded. An `on_event`
/// callback consumes a chunk when it returns, unless it keeps it.
///
/// A chunk derefs to `[u8]`. A clone is a plain copy of the bytes that counts against no
/// budget.
pub struct Chunk {
    bytes: Vec<u8>,
    /// The task whose budget this chunk holds, and how much of it.
    credit: Option<(Arc<TaskShared>, u64)>,
}

impl Chunk {
    /// A chunk that holds `charge` of the task's budget until it is consumed.
    pub(crate) fn credited(bytes: Vec<u8>, task: Arc<TaskShared>, charge: u64) -> Chunk {
        Chunk {
            bytes,
            credit: Some((task, charge)),
        }
    }

    /// The bytes, as a `Vec` that no longer counts against the task's budget (no copy).
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
        // `self` drops here and gives the budget back.
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// A handle on the task that produced this chunk (`None` for a chunk made from a
    /// `Vec`): answer a `Message` with `frame.task()?.send(channel, ..)` without keeping a
    /// map of handles.
    pub fn task(&self) -> Option<crate::TaskHandle> {
        self.credit
            .as_ref()
            .map(|(task, _)| crate::TaskHandle::from_shared(Arc::clone(task)))
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some((task, charge)) = self.credit.take() {
            task.consumed(charge);
            task.pool.give_back(std::mem::take(&mut self.bytes));
        }
    }
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl From<Vec<u8>> for Chunk {
    /// A chunk of these bytes that counts against no budget.
    fn from(bytes: Vec<u8>) -> Chunk {
        Chunk {
            bytes,
            credit: None,
        }
    }
}

impl Clone for Chunk {
    fn clone(&self) -> Chunk {
        Chunk::from(self.bytes.clone())
    }
}

impl PartialEq for Chunk {
    fn eq(&self, other: &Chunk) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Chunk {}

impl PartialEq<[u8]> for Chunk {
    fn eq(&self, other: &[u8]) -> bool {
        self.bytes == other
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        let shown = &self.bytes[..self.bytes.len().min(SHOWN)];
        write!(
            f,
            "Chunk({} bytes: {:?}",
            self.bytes.len(),
            String::from_utf8_lossy(shown)
        )?;
        if self.bytes.len() > SHOWN {
            write!(f, "…")?;
        }
        write!(f, ")")
    }
}

/// How a framed channel ended ([`Event::ChannelClosed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelEnd {
    /// The child closed its end between two frames, or the task ended.
    Closed,
    /// The child closed its end, or died, in the middle of a frame: the `partial` bytes of
    /// that frame received so far (its header included) were dropped.
    Truncated {
        /// Bytes of the incomplete frame, header included.
        partial: u64,
    },
    /// A frame header announced `len` bytes, more than the channel's maximum: the pool
    /// closed the channel (the task goes on).
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The channel's maximum (`TaskSpec::max_frame`).
        max: u32,
    },
    /// Reading the channel failed with this errno.
    Error(i32),
}

/// Per task, in this order: every `Output` and `Message` (and each framed channel's
/// `ChannelClosed` after its last `Message`), then one `Exited`, then one `Done`, last.
/// `StdinClosed` comes once for a task whose stdin is captured, before `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Bytes the task wrote on a captured stream (stdout, stderr, a raw channel).
    Output {
        /// The task.
        task: TaskId,
        /// Which stream.
        stream: StreamId,
        /// The bytes; see [`Chunk`] for the budget they hold until consumed.
        bytes: Chunk,
    },
    /// A whole frame the task sent on framed channel `channel` (`TaskSpec::channels`).
    Message {
        /// The task.
        task: TaskId,
        /// The channel's index, from 0.
        channel: u8,
        /// The frame's payload (without its length header).
        frame: Chunk,
    },
    /// A framed channel is closed for good, in both directions.
    ChannelClosed {
        /// The task.
        task: TaskId,
        /// The channel's index.
        channel: u8,
        /// Why.
        end: ChannelEnd,
        /// Bytes queued by `TaskHandle::send` (headers included) that were never written.
        unsent: u64,
    },
    /// The task's stdin is closed: by `TaskHandle::close_stdin` once everything queued was
    /// written, because the task stopped reading it (`error: Some(BrokenPipe)`), or because
    /// the task ended.
    StdinClosed {
        /// The task.
        task: TaskId,
        /// The write error that closed it, if one did.
        error: Option<WriteError>,
        /// Bytes queued by `TaskHandle::write` that were never written.
        unwritten: u64,
    },
    /// The main process was reaped and every output stream reached its end.
    Exited {
        /// The task.
        task: TaskId,
        /// How the main process ended.
        status: ExitStatus,
    },
    /// The task is over: nothing of it is left, and nothing more comes about it.
    Done {
        /// The task.
        task: TaskId,
        /// What happened.
        outcome: Outcome,
    },
}

impl Event {
    /// The task this event is about.
    pub fn task(&self) -> TaskId {
        match self {
            Event::Output { task, .. }
            | Event::Message { task, .. }
            | Event::ChannelClosed { task, .. }
            | Event::StdinClosed { task, .. }
            | Event::Exited { task, .. }
            | Event::Done { task, .. } => *task,
        }
    }
}
