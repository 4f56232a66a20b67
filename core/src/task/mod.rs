//! The per-task state machine: pure logic that decides, for one supervised task, what the
//! driver must do next and when the task's resources may be released.
//!
//! Sans-IO, shaped like quinn-proto's `Connection`: the driver feeds completions and user
//! requests in through `handle_*` methods (time passed in as `now`), and drains what to do
//! through [`TaskMachine::poll_action`] and [`TaskMachine::poll_timeout`]. No syscalls, no
//! fds, no clock reads, no `unsafe`: cargo-fuzz drives it directly (see `fuzz/`).
//!
//! Contract (`shared/DESIGN.md`): see [`invariants`], which checks it.

// API CONTRACT (filled in by the state-machine work; the worker codes against these names).

use std::time::{Duration, Instant};

pub mod invariants;

/// Signal numbers the machine itself decides to send.
pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

/// A stream of a task: 0 is stdout, 1 is stderr, `2 + k` is the k-th extra channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct StreamId(pub u8);

impl StreamId {
    pub const STDOUT: StreamId = StreamId(0);
    pub const STDERR: StreamId = StreamId(1);
    /// The k-th extra channel (socketpair) of a task.
    pub const fn channel(k: u8) -> StreamId {
        StreamId(2 + k)
    }
}

/// How the main process ended, as far as anyone can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Reaped by someone else and the kernel could not tell us the status.
    Unknown,
}

/// An operation the driver has in flight on the machine's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// A (possibly multishot) read on a stream.
    Read(StreamId),
    /// Waiting for the main process to exit (pidfd poll + reap).
    Wait,
    /// Watching the tree until it is empty (cgroup `populated 0`).
    TreeWatch,
}

/// How the driver can learn that the task's process tree is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TreeWatch {
    /// No tree tracking: the tree counts as empty once the main process is reaped.
    None,
    /// The driver probes once when asked ([`Action::WatchTree`]) and answers
    /// `handle_tree_empty` or `handle_tree_occupied` (process-group mode).
    ProbeOnce,
    /// The driver keeps watching until the tree is empty and answers `handle_tree_empty`,
    /// or until the watch is cancelled (cgroup mode).
    Notifies,
}

/// What happens when the main process has exited but its tree lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AfterExit {
    /// systemd's `KillMode=control-group`: after `drain`, terminate what remains.
    KillTree,
    /// Keep draining until EOF, bounded only by the task timeout.
    DrainUntilEof,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfig {
    /// The streams the driver reads, in any order, without duplicates.
    pub streams: Vec<StreamId>,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub drain: Duration,
    pub tree: TreeWatch,
    pub after_exit: AfterExit,
}

/// Why a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The main process exited on its own with this code.
    Exited(i32),
    /// The main process died of this signal, not sent by the supervisor.
    Signaled(i32),
    /// The main process ended and a foreign reaper took its status.
    StatusUnknown,
    /// The task timeout fired and the tree was terminated.
    TimedOut,
    /// A user `terminate`/`kill` request ended it.
    Terminated,
    /// The main process exited, its tree outlived the drain period and was killed.
    DrainExpired,
    /// The process could not be started (errno).
    SpawnFailed(i32),
}

/// What the user learns in `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reason: Reason,
    /// The main process's status (`Unknown` when it never ran).
    pub status: ExitStatus,
    /// From the machine's creation to `Done`.
    pub duration: Duration,
    /// Bytes read per stream, in the order of `TaskConfig::streams`.
    pub stream_bytes: Vec<(StreamId, u64)>,
    /// The supervisor had to signal the tree (SIGTERM and/or SIGKILL).
    pub tree_signalled: bool,
    /// Descendants (not the main process) alive when the supervisor signalled the tree.
    /// The machine leaves it 0; the driver, which can count them, fills it in.
    pub descendants_killed: u64,
}

/// What the machine tells the user through the driver (the driver itself emits `Output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Exited(ExitStatus),
    Done(Outcome),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SubmitRead(StreamId),
    SubmitWait,
    WatchTree,
    SignalMain(i32),
    SignalTree(i32),
    Cancel(Op),
    Close(StreamId),
    Emit(Notice),
    Release,
}

/// An event that is impossible in the machine's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the task was already released")]
    AfterRelease,
    #[error("no such stream {0:?}")]
    UnknownStream(StreamId),
    #[error("completion for {0:?}, which is not in flight")]
    NotInFlight(Op),
    #[error("the process was already reaped")]
    AlreadyReaped,
}

mod machine;
pub use machine::TaskMachine;
