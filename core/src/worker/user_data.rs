//! `user_data` tags: which task (slot and generation) and which operation a completion is
//! for. The generation lets the worker drop a completion that outlived its task's slot.
//!
//! Layout: bits 0..32 slot, 32..48 generation, 48..56 operation argument, 56..64 operation.

/// The operation a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpTag {
    /// Poll on the task's fixed pidfd.
    Wait,
    /// Multishot read on a stream.
    Read(u8),
    /// `POLLPRI` on the task's `cgroup.events`.
    TreeWatch,
    /// An `AsyncCancel` submission; its own completion carries nothing.
    Cancel,
    /// The pidfd installed as an ordinary fd in order to reap.
    InstallReap,
    /// The pidfd installed in order to send this signal to the main process.
    InstallSignalMain(u8),
    /// The pidfd installed in order to send this signal to the tree.
    InstallSignalTree(u8),
    /// The pidfd installed in order to ask whether the tree is empty.
    InstallProbe,
    /// Closing a fixed slot; `slot` is the fixed-file index, freed when this completes.
    CloseFixed,
    /// The worker's wake-up eventfd.
    Wake,
    /// Removing a released task's cgroup directory; `slot` is a removal number.
    Rmdir,
}

impl OpTag {
    fn encode(self) -> (u8, u8) {
        match self {
            OpTag::Wait => (1, 0),
            OpTag::Read(stream) => (2, stream),
            OpTag::TreeWatch => (3, 0),
            OpTag::Cancel => (4, 0),
            OpTag::InstallReap => (5, 0),
            OpTag::InstallSignalMain(sig) => (6, sig),
            OpTag::InstallSignalTree(sig) => (7, sig),
            OpTag::InstallProbe => (8, 0),
            OpTag::CloseFixed => (9, 0),
            OpTag::Wake => (10, 0),
            OpTag::Rmdir => (11, 0),
        }
    }

    fn decode(kind: u8, arg: u8) -> Option<OpTag> {
        Some(match kind {
            1 => OpTag::Wait,
            2 => OpTag::Read(arg),
            3 => OpTag::TreeWatch,
            4 => OpTag::Cancel,
            5 => OpTag::InstallReap,
            6 => OpTag::InstallSignalMain(arg),
            7 => OpTag::InstallSignalTree(arg),
            8 => OpTag::InstallProbe,
            9 => OpTag::CloseFixed,
            10 => OpTag::Wake,
            11 => OpTag::Rmdir,
            _ => return None,
        })
    }

    /// Installs hand back an ordinary fd that must be closed even when the task is gone.
    pub fn installs_fd(self) -> bool {
        matches!(
            self,
            OpTag::InstallReap
                | OpTag::InstallSignalMain(_)
                | OpTag::InstallSignalTree(_)
                | OpTag::InstallProbe
        )
    }
}

/// A decoded tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub slot: u32,
    pub generation: u16,
    pub op: OpTag,
}

#[inline]
pub fn pack(tag: Tag) -> u64 {
    let (kind, arg) = tag.op.encode();
    u64::from(tag.slot)
        | u64::from(tag.generation) << 32
        | u64::from(arg) << 48
        | u64::from(kind) << 56
}

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
            OpTag::Wait,
            OpTag::Read(0),
            OpTag::Read(255),
            OpTag::TreeWatch,
            OpTag::Cancel,
            OpTag::InstallReap,
            OpTag::InstallSignalMain(9),
            OpTag::InstallSignalTree(15),
            OpTag::InstallProbe,
            OpTag::CloseFixed,
            OpTag::Wake,
            OpTag::Rmdir,
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
