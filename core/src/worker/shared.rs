//! What one task shares between its worker, its [`TaskHandle`](crate::TaskHandle)s and the
//! [`Chunk`](crate::Chunk)s it delivered: the flow-control credit, and whether its stdin and
//! channels still take bytes (so a write to a closed one fails at once, on the caller's
//! thread).
//!
//! # Flow control
//!
//! One atomic word per task: the bytes delivered and not yet consumed (bits 0..63) and a
//! `PAUSED` bit (bit 63). Chunks are charged the memory they hold (their buffer's capacity)
//! plus [`CHUNK_OVERHEAD`] (the event itself), so many tiny chunks cannot hold more memory
//! than the budget says.
//!
//! - The worker adds each chunk's charge before delivering it; once the total reaches the
//!   task's budget it sets `PAUSED` with a compare-and-swap that succeeds only while the
//!   total is above the resume mark, and tells the machine (`Input::Pause`).
//! - A consumer (a chunk dropped on any thread) subtracts its charge. The one whose
//!   subtraction leaves the total at or below the resume mark while `PAUSED` is set clears
//!   the bit (`fetch_and`: exactly one thread sees it set) and queues a `Resume` command to
//!   the worker, waking it through its eventfd.
//!
//! Both transitions are single atomic read-modify-writes on the same word, so a resume is
//! never lost: a consumer either sees `PAUSED` (and resumes) or its subtraction happened
//! before the worker's compare-and-swap (which then sees the lower total and does not
//! pause).

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use super::buffers::BufferPool;
use super::{Command, WorkerShared};
use crate::error::WriteError;
use crate::event::TaskId;

/// Charged per chunk besides its bytes: an `Event` in the channel and a small allocation.
pub(crate) const CHUNK_OVERHEAD: u64 = 128;

const PAUSED: u64 = 1 << 63;
const COUNT: u64 = PAUSED - 1;

/// Whether a write side (stdin, a channel) takes bytes, as its handles see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum WriteSide {
    /// Not captured / no such channel.
    Absent = 0,
    Open = 1,
    /// Closed (by the user, the child, or the end of the task).
    Closed = 2,
    /// A write failed: `errno` holds why.
    Failed = 3,
}

impl WriteSide {
    fn from_u8(v: u8) -> WriteSide {
        match v {
            1 => WriteSide::Open,
            2 => WriteSide::Closed,
            3 => WriteSide::Failed,
            _ => WriteSide::Absent,
        }
    }
}

/// A write side's state, readable by handles on any thread.
#[derive(Debug)]
pub(crate) struct SideState {
    state: AtomicU8,
    errno: AtomicI32,
}

impl SideState {
    fn new(side: WriteSide) -> SideState {
        SideState {
            state: AtomicU8::new(side as u8),
            errno: AtomicI32::new(0),
        }
    }

    /// `Ok` while it takes bytes, else why not.
    pub(crate) fn check(&self, absent: WriteError) -> Result<(), WriteError> {
        match WriteSide::from_u8(self.state.load(Ordering::Acquire)) {
            WriteSide::Open => Ok(()),
            WriteSide::Absent => Err(absent),
            WriteSide::Closed => Err(WriteError::Closed),
            WriteSide::Failed => Err(WriteError::from_errno(self.errno.load(Ordering::Relaxed))),
        }
    }

    pub(crate) fn set(&self, side: WriteSide) {
        // Never reopen, and keep a failure rather than a later plain close.
        let _ = self
            .state
            .fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                |old| match WriteSide::from_u8(old) {
                    WriteSide::Open => Some(side as u8),
                    WriteSide::Closed if side == WriteSide::Failed => Some(side as u8),
                    _ => None,
                },
            );
    }

    pub(crate) fn fail(&self, errno: i32) {
        self.errno.store(errno, Ordering::Relaxed);
        self.set(WriteSide::Failed);
    }
}

/// The part of a task that outlives its slot on the worker as long as a handle or a chunk
/// refers to it.
pub(crate) struct TaskShared {
    pub(crate) id: TaskId,
    /// The main process's pid, for display.
    pub(crate) pid: u32,
    /// The task's slot on its worker (requests carry it with the id).
    pub(crate) slot: u32,
    pub(crate) worker: Arc<WorkerShared>,
    /// Delivered and unconsumed bytes, and `PAUSED`.
    credit: AtomicU64,
    budget: u64,
    resume_at: u64,
    pub(crate) stdin: SideState,
    /// Framed channels, by index.
    pub(crate) channels: Box<[SideState]>,
    /// The stream id of framed channel 0.
    pub(crate) first_channel: u8,
    pub(crate) max_frame: u32,
    /// Where its chunks' buffers go back to.
    pub(crate) pool: Arc<BufferPool>,
}

impl std::fmt::Debug for TaskShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskShared")
            .field("id", &self.id)
            .field("outstanding", &self.outstanding())
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// How a task talks to its worker besides output: what [`TaskShared::new`] needs.
pub(crate) struct SharedSetup {
    pub(crate) pid: u32,
    pub(crate) budget: u64,
    pub(crate) stdin: bool,
    pub(crate) channels: u8,
    pub(crate) first_channel: u8,
    pub(crate) max_frame: u32,
    pub(crate) pool: Arc<BufferPool>,
}

impl TaskShared {
    pub(crate) fn new(
        id: TaskId,
        slot: u32,
        worker: Arc<WorkerShared>,
        setup: SharedSetup,
    ) -> TaskShared {
        let budget = setup.budget.clamp(1, COUNT / 2);
        TaskShared {
            id,
            pid: setup.pid,
            slot,
            worker,
            credit: AtomicU64::new(0),
            budget,
            resume_at: budget / 2,
            stdin: SideState::new(if setup.stdin {
                WriteSide::Open
            } else {
                WriteSide::Absent
            }),
            channels: (0..setup.channels)
                .map(|_| SideState::new(WriteSide::Open))
                .collect(),
            first_channel: setup.first_channel,
            max_frame: setup.max_frame,
            pool: setup.pool,
        }
    }

    /// Bytes delivered and not yet consumed (with their overhead).
    pub(crate) fn outstanding(&self) -> u64 {
        self.credit.load(Ordering::Acquire) & COUNT
    }

    /// Worker: a chunk of `charge` is about to be delivered. Returns whether the budget is
    /// now full.
    pub(crate) fn charge(&self, charge: u64) -> bool {
        let before = self.credit.fetch_add(charge, Ordering::AcqRel) & COUNT;
        before + charge >= self.budget
    }

    /// Worker: pauses the task unless consumers already brought it down to the resume mark.
    /// `true`: paused (a consumer will send `Resume`).
    pub(crate) fn try_pause(&self) -> bool {
        self.credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur & PAUSED == 0 && cur & COUNT > self.resume_at).then_some(cur | PAUSED)
            })
            .is_ok()
    }

    /// Worker: clears the pause without waiting for consumers (shutdown). `true` if it was
    /// set (no consumer will send `Resume` for it any more).
    pub(crate) fn force_resume(&self) -> bool {
        self.credit.fetch_and(!PAUSED, Ordering::AcqRel) & PAUSED != 0
    }

    /// Any thread: a chunk of `charge` was consumed.
    pub(crate) fn consumed(&self, charge: u64) {
        let before = self.credit.fetch_sub(charge, Ordering::AcqRel);
        let after = (before & COUNT).saturating_sub(charge);
        if before & PAUSED != 0
            && after <= self.resume_at
            && self.credit.fetch_and(!PAUSED, Ordering::AcqRel) & PAUSED != 0
        {
            // The worker may be gone (pool shut down): then nothing is paused any more.
            let _ = self.worker.send(Command::Resume {
                id: self.id,
                slot: self.slot,
            });
        }
    }

    /// The framed channel `channel`, if the task has it.
    pub(crate) fn channel(&self, channel: u8) -> Option<&SideState> {
        self.channels.get(usize::from(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_state_never_reopens_and_keeps_a_failure() {
        let s = SideState::new(WriteSide::Open);
        assert_eq!(s.check(WriteError::NotCaptured), Ok(()));
        s.fail(libc::EPIPE);
        s.set(WriteSide::Closed);
        assert_eq!(
            s.check(WriteError::NotCaptured),
            Err(WriteError::BrokenPipe)
        );
        let s = SideState::new(WriteSide::Absent);
        s.set(WriteSide::Open);
        assert_eq!(
            s.check(WriteError::NotCaptured),
            Err(WriteError::NotCaptured)
        );
    }
}
