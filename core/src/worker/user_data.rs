//! `user_data` tags: which task (slot and generation) and which operation a completion is
//! for. The generation lets the worker drop a completion that outlived its task's slot.
//!
//! Layout: bits 0..32 slot, 32..48 generation, 48..56 operation argument, 56..64 operation.

/// What a lent pidfd is for (see `Driver::lend_pidfd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidfdUse {
    /// Reap the exited main process.
    Reap,
    /// Send this signal to the main process.
    SignalMain(u8),
    /// Send this signal to the tree.
    SignalTree(u8),
    /// Ask whether the tree (process group) is empty.
    Probe,
}

/// The operation a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpTag {
    /// Watching the task's pidfd for the exit.
    Exit,
    /// Reads on a stream.
    Read(u8),
    /// A write to a stream (one in flight per stream).
    Write(u8),
    /// `POLLPRI` on the task's `cgroup.events`.
    TreeWatch,
    /// A pidfd lent for one use.
    Pidfd(PidfdUse),
    /// A driver's `AsyncCancel` submission; its own completion carries nothing.
    Cancel,
    /// A driver closing a fixed slot; `slot` is the fixed-file index, freed when this
    /// completes.
    CloseFixed,
    /// A driver's wake-up eventfd.
    Wake,
    /// Removing a released task's cgroup directory; `slot` is a removal number.
    Rmdir,
}

impl OpTag {
    fn encode(self) -> (u8, u8) {
        match self {
            OpTag::Exit => (1, 0),
            OpTag::Read(stream) => (2, stream),
            OpTag::TreeWatch => (3, 0),
            OpTag::Cancel => (4, 0),
            OpTag::Pidfd(PidfdUse::Reap) => (5, 0),
            OpTag::Pidfd(PidfdUse::SignalMain(sig)) => (6, sig),
            OpTag::Pidfd(PidfdUse::SignalTree(sig)) => (7, sig),
            OpTag::Pidfd(PidfdUse::Probe) => (8, 0),
            OpTag::CloseFixed => (9, 0),
            OpTag::Wake => (10, 0),
            OpTag::Rmdir => (11, 0),
            OpTag::Write(stream) => (12, stream),
        }
    }

    fn decode(kind: u8, arg: u8) -> Option<OpTag> {
        Some(match kind {
            1 => OpTag::Exit,
            2 => OpTag::Read(arg),
            3 => OpTag::TreeWatch,
            4 => OpTag::Cancel,
            5 => OpTag::Pidfd(PidfdUse::Reap),
            6 => OpTag::Pidfd(PidfdUse::SignalMain(arg)),
            7 => OpTag::Pidfd(PidfdUse::SignalTree(arg)),
            8 => OpTag::Pidfd(PidfdUse::Probe),
            9 => OpTag::CloseFixed,
            10 => OpTag::Wake,
            11 => OpTag::Rmdir,
            12 => OpTag::Write(arg),
            _ => return None,
        })
    }
}

/// A decoded tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The task's slot in its worker (or, for `CloseFixed` and `Rmdir`, the fixed-file
    /// index or the removal number).
    pub slot: u32,
    /// The slot's generation when the op was submitted (wraps at 65,536 reuses).
    pub generation: u16,
    /// The operation.
    pub op: OpTag,
}

/// The 64-bit `user_data` of `tag`, laid out as the module docs say. Lossless:
/// `unpack(pack(t)) == Some(t)`.
#[inline]
pub fn pack(tag: Tag) -> u64 {
    let (kind, arg) = tag.op.encode();
    u64::from(tag.slot)
        | u64::from(tag.generation) << 32
        | u64::from(arg) << 48
        | u64::from(kind) << 56
}

/// The tag of a completion's `user_data`, or `None` when its operation byte is none of
/// [`OpTag`]'s (not a value [`pack`] made).
#[inline]
pub fn unpack(user_data: u64) -> Option<Tag> {
    let op = OpTag::decode((user_data >> 56) as u8, (user_data >> 48) as u8)?;
    Some(Tag {
        slot: user_data as u32,
        generation: (user_data >> 32) as u16,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_round_trips() {
        let ops = [
            OpTag::Exit,
            OpTag::Read(0),
            OpTag::Read(255),
            OpTag::TreeWatch,
            OpTag::Cancel,
            OpTag::Pidfd(PidfdUse::Reap),
            OpTag::Pidfd(PidfdUse::SignalMain(9)),
            OpTag::Pidfd(PidfdUse::SignalTree(15)),
            OpTag::Pidfd(PidfdUse::Probe),
            OpTag::CloseFixed,
            OpTag::Wake,
            OpTag::Rmdir,
            OpTag::Write(0),
            OpTag::Write(255),
        ];
        for op in ops {
            for (slot, generation) in [(0, 0), (1, 1), (u32::MAX, u16::MAX), (12345, 777)] {
                let tag = Tag {
                    slot,
                    generation,
                    op,
                };
                assert_eq!(unpack(pack(tag)), Some(tag));
            }
        }
    }

    #[test]
    fn unknown_kind_is_rejected() {
        assert_eq!(unpack(0), None);
        assert_eq!(unpack(0xff << 56), None);
    }
}
