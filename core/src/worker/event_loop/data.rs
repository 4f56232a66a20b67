//! The data path of the loop: bytes read become credited chunks (`Event::Output`) or, on a
//! framed channel, whole frames (`Event::Message`), each copied once out of the driver's
//! buffer; a task whose application holds its whole budget is paused (the machine stops its
//! reads) until a consumer gives enough back; bytes for stdin and channels wait in per-stream
//! queues and go out one write at a time, in order, partial writes resumed.

use std::collections::VecDeque;

use super::*;
use crate::error::WriteError;
use crate::event::{ChannelEnd, Chunk};
use crate::task::Op;
use crate::worker::driver::{Outcome, ReadBytes, WriteBuf};
use crate::worker::framing::Framer;
use crate::worker::shared::{WriteSide, CHUNK_OVERHEAD};

/// A write takes consecutive queued buffers together while the first is smaller than this
/// (many small frames or lines go out in one system call).
const COALESCE_BELOW: usize = 16 * 1024;
/// ... up to this many bytes.
const COALESCE_UP_TO: usize = 64 * 1024;

/// What a stream carries.
pub(super) enum StreamKind {
    /// stdout, stderr or a raw channel: `Event::Output`.
    Output,
    /// The task's stdin: written only.
    Stdin,
    /// A framed channel: frames both ways.
    Framed {
        channel: u8,
        framer: Framer,
        /// A header announced this many bytes, over the maximum: the channel was aborted.
        too_large: Option<u64>,
    },
}

/// Bytes waiting to be written to one stream; the front buffer may be partly written.
#[derive(Default)]
pub(super) struct WriteQueue {
    bufs: VecDeque<WriteBuf>,
}

impl WriteQueue {
    fn push(&mut self, bytes: Vec<u8>) {
        self.bufs.push_back(WriteBuf { bytes, start: 0 });
    }

    /// The next buffer to write: the front one, or several small ones copied together.
    fn take_next(&mut self) -> Option<WriteBuf> {
        let first = self.bufs.pop_front()?;
        if first.remaining().len() >= COALESCE_BELOW || self.bufs.is_empty() {
            return Some(first);
        }
        let mut bytes = Vec::with_capacity(COALESCE_UP_TO);
        bytes.extend_from_slice(first.remaining());
        while let Some(next) = self.bufs.front() {
            if bytes.len() + next.remaining().len() > COALESCE_UP_TO {
                break;
            }
            bytes.extend_from_slice(next.remaining());
            self.bufs.pop_front();
        }
        Some(WriteBuf { bytes, start: 0 })
    }

    /// A write ended; what it did not write goes back to the front.
    fn put_back(&mut self, mut buf: WriteBuf, written: usize) {
        buf.start = buf.start.saturating_add(written);
        if !buf.remaining().is_empty() {
            self.bufs.push_front(buf);
        }
    }

    /// Bytes still queued.
    pub(super) fn unwritten(&self) -> u64 {
        self.bufs.iter().map(|b| b.remaining().len() as u64).sum()
    }
}

impl<D: Driver> Worker<D> {
    /// Bytes read on `stream`: delivered (with their credit), then accounted by the machine.
    pub(super) fn data_read(
        &mut self,
        key: usize,
        stream: StreamId,
        bytes: ReadBytes,
        more: bool,
        now: Instant,
    ) -> Result<(), Rejected> {
        let len = bytes.len();
        let task = &mut self.tasks[key];
        let Some(slot) = task.streams.iter_mut().find(|s| s.id == stream) else {
            return Err(Rejected::UnknownStream(stream));
        };
        let mut events = Vec::new();
        let mut full = false;
        let mut abort = false;
        match &mut slot.kind {
            StreamKind::Output => {
                // The one copy out of the driver's buffer (none for epoll's own buffers).
                let bytes = match bytes {
                    ReadBytes::Owned(v) => self.buffers.fit(v),
                    lent => self.buffers.copy(self.driver.data(&lent)),
                };
                let charge = bytes.capacity() as u64 + CHUNK_OVERHEAD;
                full |= task.shared.charge(charge);
                events.push(Event::Output {
                    task: task.id,
                    stream,
                    bytes: Chunk::credited(bytes, Arc::clone(&task.shared), charge),
                });
            }
            StreamKind::Framed {
                channel,
                framer,
                too_large,
            } if too_large.is_none() => {
                let shared = &task.shared;
                let fed = framer.feed(self.driver.data(&bytes), |frame| {
                    let charge = frame.capacity() as u64 + CHUNK_OVERHEAD;
                    full |= shared.charge(charge);
                    events.push(Event::Message {
                        task: task.id,
                        channel: *channel,
                        frame: Chunk::credited(frame, Arc::clone(shared), charge),
                    });
                });
                if let Err(e) = fed {
                    tracing::debug!(
                        channel = *channel,
                        len = e.len,
                        max = framer.max(),
                        "frame over the maximum: closing the channel"
                    );
                    *too_large = Some(e.len);
                    abort = true;
                }
            }
            // After a frame over the maximum, the rest is dropped until the read ends.
            StreamKind::Framed { .. } => {}
            StreamKind::Stdin => {
                tracing::error!("data read on stdin");
            }
        }
        for event in events {
            self.deliver(event);
        }
        let task = &mut self.tasks[key];
        let result = task.machine.handle_data(stream, len, more, now);
        if abort {
            self.later(key, Input::Abort(stream));
        }
        if full {
            self.maybe_pause(key);
        }
        result
    }

    /// The task's budget is full: pause its reads, unless consumers already caught up.
    fn maybe_pause(&mut self, key: usize) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        if task.paused || self.shutting_down || !task.shared.try_pause() {
            return;
        }
        task.paused = true;
        tracing::trace!(task = %task.id, outstanding = task.shared.outstanding(), "budget full: pausing reads");
        self.later(key, Input::Pause);
    }

    /// A consumer gave enough of a paused task's budget back.
    pub(super) fn resume(&mut self, id: TaskId, slot: u32) {
        let key = slot as usize;
        match self.tasks.get_mut(key) {
            Some(task) if task.id == id && task.paused => task.paused = false,
            _ => return,
        }
        self.input(key, Input::Resume);
    }

    /// Resumes a paused task without waiting for consumers (shutdown).
    pub(super) fn unpause(&mut self, key: usize) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        if task.paused {
            task.paused = false;
            task.shared.force_resume();
            self.input(key, Input::Resume);
        }
    }

    /// The user queued `bytes` for `stream` (a whole frame for a channel).
    pub(super) fn queue_write(&mut self, key: usize, stream: StreamId, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let now = Instant::now();
        let task = &mut self.tasks[key];
        let span = task.span.clone();
        let _entered = span.enter();
        // The machine counts in u32 steps; a larger buffer is accounted in pieces.
        let mut result = Ok(());
        let mut left = bytes.len();
        while left > 0 && result.is_ok() {
            let len = left.min(u32::MAX as usize);
            result = task.machine.handle(
                Input::Write {
                    stream,
                    len: len as u32,
                },
                now,
            );
            left -= len;
        }
        match result {
            Ok(()) => {
                if let Some(s) = task.stream(stream) {
                    s.queue.push(bytes);
                }
            }
            Err(rejected) => {
                // Closed meanwhile (the handle checked before sending): the bytes are
                // dropped, as if they had been queued just before the close.
                tracing::debug!(task = %task.id, stream = stream.0, %rejected, "write to a closed stream dropped");
            }
        }
        // A rejected write is the user's race with the close, not an impossible event.
        self.after_input(key, Ok(()));
    }

    /// `SubmitWrite`: the next queued bytes go to the driver.
    pub(super) fn submit_write(&mut self, key: usize, stream: StreamId) {
        let task = &mut self.tasks[key];
        let user_data = task.tag(key, OpTag::Write(stream.0));
        let Some(s) = task.stream(stream) else {
            return;
        };
        let Some(buf) = s.queue.take_next() else {
            // The machine counts bytes the queue does not hold: a bug; end the write side.
            tracing::error!(stream = stream.0, "write submitted with an empty queue");
            self.later(key, Input::WriteFailed(stream, libc::EIO));
            return;
        };
        let socket = matches!(s.kind, StreamKind::Framed { .. });
        let handle = s.handle;
        self.driver.write(handle, buf, socket, user_data);
    }

    /// A write ended.
    pub(super) fn write_done(
        &mut self,
        key: usize,
        stream: StreamId,
        outcome: Outcome,
        now: Instant,
    ) -> Result<(), Rejected> {
        let task = &mut self.tasks[key];
        let Outcome::Written { buf, result } = outcome else {
            tracing::error!(?outcome, "write completion without a result");
            return Ok(());
        };
        let Some(s) = task.streams.iter_mut().find(|s| s.id == stream) else {
            return Err(Rejected::UnknownStream(stream));
        };
        let machine = &mut task.machine;
        match result {
            Ok(n) if n > 0 || buf.remaining().is_empty() => {
                let n = n.min(buf.remaining().len());
                s.queue.put_back(buf, n);
                machine.handle_written(stream, n, now)
            }
            Ok(_) | Err(_) => {
                s.queue.put_back(buf, 0);
                match result {
                    Err(libc::ECANCELED) => machine.handle_cancelled(Op::Write(stream), now),
                    Err(errno) => {
                        s.write_error = Some(errno);
                        if let Some(side) = Self::side_of(&task.shared, &s.kind) {
                            side.fail(errno);
                        }
                        machine.handle_write_failed(stream, errno, now)
                    }
                    // A write of nothing for something queued: it cannot progress.
                    Ok(_) => {
                        s.write_error = Some(libc::EIO);
                        machine.handle_write_failed(stream, libc::EIO, now)
                    }
                }
            }
        }
    }

    fn side_of<'a>(
        shared: &'a TaskShared,
        kind: &StreamKind,
    ) -> Option<&'a crate::worker::shared::SideState> {
        match kind {
            StreamKind::Stdin => Some(&shared.stdin),
            StreamKind::Framed { channel, .. } => shared.channel(*channel),
            StreamKind::Output => None,
        }
    }

    /// `Close(stream)`: the stream's last event (stdin, channels), then its descriptor.
    pub(super) fn close_stream(&mut self, key: usize, stream: StreamId) {
        let task = &mut self.tasks[key];
        let Some(pos) = task.streams.iter().position(|s| s.id == stream) else {
            return;
        };
        let slot = task.streams.swap_remove(pos);
        let unwritten = slot.queue.unwritten();
        if let Some(side) = Self::side_of(&task.shared, &slot.kind) {
            side.set(WriteSide::Closed);
        }
        let event = match slot.kind {
            StreamKind::Output => None,
            StreamKind::Stdin => Some(Event::StdinClosed {
                task: task.id,
                error: slot.write_error.map(WriteError::from_errno),
                unwritten,
            }),
            StreamKind::Framed {
                channel,
                framer,
                too_large,
            } => {
                let end = if let Some(len) = too_large {
                    ChannelEnd::FrameTooLarge {
                        len,
                        max: framer.max(),
                    }
                } else if let Some(errno) = slot.read_error {
                    ChannelEnd::Error(errno)
                } else if framer.partial() > 0 {
                    ChannelEnd::Truncated {
                        partial: framer.partial(),
                    }
                } else {
                    ChannelEnd::Closed
                };
                Some(Event::ChannelClosed {
                    task: task.id,
                    channel,
                    end,
                    unsent: unwritten,
                })
            }
        };
        self.driver.release(slot.handle);
        if let Some(event) = event {
            self.deliver(event);
        }
    }
}
