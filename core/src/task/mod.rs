//! The per-task state machine: pure logic that decides, for one supervised task, what the
//! driver must do next and when the task's resources may be released.
//!
//! Sans-IO, shaped like quinn-proto's `Connection`: the driver feeds completions and user
//! requests in through `handle_*` methods (or [`TaskMachine::handle`] with an [`Input`]), time
//! passed in as `now`, and drains what to do through [`TaskMachine::poll_action`] and
//! [`TaskMachine::poll_timeout`]. No syscalls, no fds, no clock reads, no `unsafe`, no panics
//! on any input: cargo-fuzz drives it directly (see `fuzz/`), and `invariants::Checker`
//! (with the `test-support` feature) checks the contract of `shared/DESIGN.md` on every
//! input and action.
//!
//! # Parts
//!
//! One state enum per part, each changed in one `set_state` that traces `old ⇒ new`:
//! - **process** (`process.rs`): `Running` → `Stopping { level: Term | Kill }` (the tree was
//!   signalled while it runs) → `Reaped(status)`. The `Wait` op is in flight until the reap;
//!   a second [`TaskMachine::handle_process_exited`] is [`Rejected::AlreadyReaped`].
//! - **streams** (`stream.rs`), one per id of [`TaskConfig::streams`] and
//!   [`TaskConfig::writable`] (duplicates ignored), each with a read side, a write side or
//!   both (a framed channel). Read side: `Reading` (a read op in flight) → `Cancelling`
//!   (`Cancel(Op::Read)` sent, the op still in flight) → `Ended`, or `Reading` → `Ended` on
//!   EOF, I/O error or cancellation; flow control adds `Reading` → `Stopping` (`StopRead`
//!   sent) → `Paused` → `Reading`. Write side: `Idle` ⇄ `Writing` (`SubmitWrite`, op in
//!   flight) → (`Cancelling`) → `Ended`, with the count of bytes queued. `Close(s)` is
//!   emitted exactly once, when every side of the stream has ended with no op in flight.
//! - **tree** (`tree.rs`): `Unwatched` → `Watching` (`WatchTree` emitted, [`Op::TreeWatch`] in
//!   flight) → (`CancellingWatch`) → `Occupied` | `Empty`; plus the strongest signal sent to
//!   it and whether it counts as killed.
//! - **timers** (`timers.rs`): task timeout, grace, drain, and the wait for emptiness after a
//!   SIGKILL (`TreeWatch::Notifies`). The driver never arms timers: it reads
//!   [`TaskMachine::poll_timeout`] after each batch and calls
//!   [`TaskMachine::handle_timeout`] once that instant has passed; that fires every deadline
//!   `<= now` in deadline order (a call with nothing due is a no-op).
//!
//! # Semantics
//!
//! - [`TaskMachine::new`] queues `SubmitWait` and one `SubmitRead(s)` per read stream and arms the
//!   timeout at `now + timeout`. [`TaskMachine::spawn_failed`] yields
//!   `Emit(Done { reason: SpawnFailed(errno), status: Unknown, .. })` then `Release`, with
//!   nothing in flight and no `Exited`.
//! - Streams: the driver emits the bytes to the user itself and calls `handle_data(s, len,
//!   more)` for accounting ([`Outcome::stream_bytes`]). `more == false` (the read op ended
//!   after the data) and `handle_read_stopped` (it ended without data: `-ENOBUFS`, multishot
//!   stopped) re-submit `SubmitRead(s)`, or close the stream when it is being cancelled.
//!   `handle_eof`, `handle_io_error` and `handle_cancelled(Op::Read(s))` end the stream:
//!   `Close(s)`. A completion for a stream whose read is not in flight is
//!   [`Rejected::NotInFlight`]; for a stream not in the config, [`Rejected::UnknownStream`].
//!   `handle_abort(s)` (a frame over the maximum) cancels the read and closes the stream.
//! - Flow control: `handle_pause` (the application holds the task's whole budget of
//!   delivered data) sends `StopRead(s)` for every read in flight; a stopped read that ends
//!   (`Cancelled`, `ReadStopped`, data without `more`) waits, and no `SubmitRead` goes out
//!   until `handle_resume`, which resubmits them. While paused the drain period does not
//!   count (it is suspended and resumed with the time it had left): a stalled consumer never
//!   makes a drain expire. Nothing read is ever dropped by a pause; a paused read is given up
//!   only where a running one would be cancelled (below).
//! - Writes (stdin, framed channels): `handle_write(s, len)` queues `len` bytes (the driver
//!   keeps them) and sends `SubmitWrite(s)` unless a write is in flight; `handle_written(s,
//!   n)` (partial writes are normal) submits the next unless the queue is empty.
//!   `handle_close_stdin` closes stdin once its queue is written. `handle_write_failed`
//!   (`EPIPE`) ends the write side and drops its queue. A write side is given up (the op
//!   cancelled and awaited, the queue dropped) when nobody can read it any more: a duplex
//!   stream whose read side ended, or any stream once the process is reaped, every read side
//!   ended and the tree empty or killed. A write to a closed side is
//!   [`Rejected::WriteClosed`].
//! - `Emit(Exited(status))` comes once the process is reaped **and** every read stream is
//!   closed, so all output precedes it ("exit before EOF waits for EOF"). `Emit(Done)`
//!   follows once the tree is also done (empty or killed), every stream (stdin too) is closed
//!   and no op is in flight, then `Release`, and nothing after. After `Release` every input
//!   is [`Rejected::AfterRelease`].
//! - Tree: with [`TreeWatch::None`] the tree counts as empty once the process is reaped.
//!   Otherwise the reap emits `WatchTree` once (unless the tree already counts as killed).
//!   `ProbeOnce`: the driver answers `handle_tree_empty` or `handle_tree_occupied`; the watch
//!   is then over. `Notifies`: the watch stays in flight until `handle_tree_empty`, or until
//!   the machine's `Cancel(Op::TreeWatch)` completes (`handle_cancelled`, or a racing
//!   `handle_tree_empty`). With either mode, `handle_tree_occupied` ends the watch with the
//!   tree occupied (a `Notifies` driver that cannot watch says so), and so does a
//!   cancellation the machine did not ask for: nothing will say when the tree empties.
//! - After the exit, while a stream is open or the tree is not done: with
//!   [`AfterExit::KillTree`] the drain timer runs (`reap time + drain`) and, when it fires,
//!   the tree is terminated (reason `DrainExpired`). With [`AfterExit::DrainUntilEof`] there
//!   is no drain timer: only the task timeout bounds the wait for EOF; once every stream is
//!   closed, a tree the probe found occupied (nothing will ever say when it empties) is
//!   terminated with reason `DrainExpired` ("the drain lasted until EOF").
//! - Termination (`handle_terminate`, timeout, drain): `SignalTree(SIGTERM)` (the tree holds
//!   the main process too) and the grace timer; when grace fires, `SignalTree(SIGKILL)`.
//!   `handle_kill`: `SignalTree(SIGKILL)` at once. After SIGKILL, with `Notifies` the machine
//!   waits for `handle_tree_empty` at most one more `grace` (then cancels the watch and
//!   counts the tree as killed); with `ProbeOnce`/`None` the tree counts as killed at once.
//!   Once the task is ending, the process reaped and the tree empty or killed, every stream
//!   still reading gets `Cancel(Op::Read(s))` and the machine awaits each cancellation
//!   (contract item 5). No signal ever goes to a tree known empty, no `SignalMain` after the
//!   reap, no SIGTERM after SIGKILL, no signal twice.
//! - `handle_signal(sig)`: `SignalMain(sig)` while the process runs, a no-op after the reap.
//!   `handle_terminate`/`handle_kill` once everything is finished (reaped, streams closed,
//!   tree empty or killed): no-ops. When the tree is done but streams are open they send no
//!   signal and cancel the reads.
//! - Reason precedence: `SpawnFailed` > `TimedOut` > `Terminated` (user terminate/kill) >
//!   `DrainExpired` > the natural reason from the status (`Exited(code)`, `Signaled(sig)`,
//!   `StatusUnknown`). `tree_signalled` is true when any `SignalTree` was emitted;
//!   `duration` is the `now` of the call that emitted `Done` minus the creation `now`.
//! - Deadlines past what `Instant` can hold never fire.

use std::time::Duration;

#[cfg(any(test, feature = "test-support"))]
pub mod invariants;
mod machine;
mod process;
#[cfg(feature = "test-support")]
pub mod sim;
mod stream;
#[cfg(test)]
mod tests;
mod timers;
mod tree;

pub use machine::TaskMachine;

/// `SIGTERM`, the signal that starts a termination (then `grace`, then [`SIGKILL`]). The
/// machine names its own signals so that it needs no `libc`.
pub const SIGTERM: i32 = 15;
/// `SIGKILL`, the signal that ends a termination, or a `kill` request at once.
pub const SIGKILL: i32 = 9;

/// A stream of a task: 0 is stdout, 1 is stderr, `2 + k` is the k-th extra channel (raw
/// channels first, then framed ones), 255 is stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct StreamId(pub u8);

impl StreamId {
    /// The task's stdout (read by the supervisor when captured).
    pub const STDOUT: StreamId = StreamId(0);
    /// The task's stderr (read by the supervisor when captured).
    pub const STDERR: StreamId = StreamId(1);
    /// The task's stdin (written by the supervisor, never read).
    pub const STDIN: StreamId = StreamId(255);
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
    /// A write of queued bytes to a stream (stdin, a framed channel).
    Write(StreamId),
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

/// What the machine of one task is set up with: the streams the driver reads and writes, the
/// timers, and how the tree is watched and treated after the exit. Built by the driver from
/// the user's [`TaskSpec`](crate::TaskSpec) and the pool's containment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfig {
    /// The streams the driver reads, in any order, without duplicates.
    pub streams: Vec<StreamId>,
    /// The streams the driver writes (stdin, framed channels). One that is also in
    /// `streams` is a single descriptor read and written (a socketpair channel).
    pub writable: Vec<StreamId>,
    /// The task timeout from the machine's creation: when it fires the tree is terminated
    /// (reason [`Reason::TimedOut`]). `None`: no timeout.
    pub timeout: Option<Duration>,
    /// Time from SIGTERM to SIGKILL on any termination; with [`TreeWatch::Notifies`], also
    /// the longest wait for the tree to empty after SIGKILL.
    pub grace: Duration,
    /// With [`AfterExit::KillTree`]: how long after the reap the tree may keep streams open
    /// or live before it is terminated ([`Reason::DrainExpired`]). Time spent paused by flow
    /// control does not count.
    pub drain: Duration,
    /// How the driver learns that the tree is empty.
    pub tree: TreeWatch,
    /// What happens when the main process has exited and its tree lives on.
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
    /// Why the task ended, by the precedence of the module docs (`SpawnFailed` >
    /// `TimedOut` > `Terminated` > `DrainExpired` > the natural reason).
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
    /// The main process was reaped and every read stream is closed (all of its output came
    /// before); at most once, never after a spawn failure.
    Exited(ExitStatus),
    /// The task is over: reaped, every stream closed, the tree empty or killed, nothing in
    /// flight. Exactly once, immediately followed by [`Action::Release`].
    Done(Outcome),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a read op on this stream ([`Op::Read`]); the driver answers `handle_data`,
    /// `handle_eof`, `handle_read_stopped`, `handle_io_error` or `handle_cancelled`.
    SubmitRead(StreamId),
    /// Flow control: end the read op in flight on this stream early (like a cancellation),
    /// without ending the stream; a `SubmitRead` follows once the task is resumed.
    StopRead(StreamId),
    /// Write (some of) the bytes queued for this stream; the driver answers `Written` with
    /// how many went out, or `WriteFailed`.
    SubmitWrite(StreamId),
    /// Wait for the main process to exit and reap it ([`Op::Wait`]); the driver answers
    /// `handle_process_exited`. Emitted once, by [`TaskMachine::new`].
    SubmitWait,
    /// The main process is reaped: find out whether the tree is empty ([`Op::TreeWatch`]),
    /// once or until it is, as [`TaskConfig::tree`] says. At most once.
    WatchTree,
    /// Send this signal to the main process only, through its pidfd (a user's
    /// [`TaskHandle::signal`](crate::TaskHandle::signal)); never after the reap.
    SignalMain(i32),
    /// Send this signal ([`SIGTERM`] or [`SIGKILL`]) to every process of the task's tree,
    /// the main process included; each at most once, never to a tree known empty.
    SignalTree(i32),
    /// Cancel this op in flight; the driver answers `handle_cancelled`, or the op's own
    /// completion if it won the race.
    Cancel(Op),
    /// Close the stream's descriptor: every side of it has ended and no op on it is in
    /// flight. Exactly once per stream.
    Close(StreamId),
    /// Deliver this notice to the user.
    Emit(Notice),
    /// The terminal transition: free everything the task holds (its slot, pidfd, cgroup,
    /// buffers). Exactly once, last; every later input is [`Rejected::AfterRelease`].
    Release,
}

/// An event that is impossible in the machine's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Any input after [`Action::Release`].
    #[error("the task was already released")]
    AfterRelease,
    /// The stream is in neither [`TaskConfig::streams`] nor [`TaskConfig::writable`].
    #[error("no such stream {0:?}")]
    UnknownStream(StreamId),
    /// A completion for an op the machine does not have in flight (a duplicate, or one
    /// that arrived after the op was already settled).
    #[error("completion for {0:?}, which is not in flight")]
    NotInFlight(Op),
    /// A second `handle_process_exited`.
    #[error("the process was already reaped")]
    AlreadyReaped,
    /// A write or `close_stdin` on a stream the driver only reads (in
    /// [`TaskConfig::streams`], not in [`TaskConfig::writable`]).
    #[error("stream {0:?} is not written by the supervisor")]
    NotWritable(StreamId),
    /// A write to a stream whose write side has ended (closed, failed or given up).
    #[error("stream {0:?} is closed for writing")]
    WriteClosed(StreamId),
}

/// One input to the machine: a completion, a timer tick or a user request, as fed by
/// [`TaskMachine::handle`] (the fuzz target and the replay tests use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Input {
    /// [`TaskMachine::handle_process_exited`].
    ProcessExited(ExitStatus),
    /// [`TaskMachine::handle_data`] (`len` is a `u32` so that fuzz inputs do not depend on
    /// the platform's `usize`).
    Data {
        /// The stream read.
        stream: StreamId,
        /// Bytes read.
        len: u32,
        /// The read op stays in flight (multishot) and will complete again.
        more: bool,
    },
    /// [`TaskMachine::handle_eof`].
    Eof(StreamId),
    /// [`TaskMachine::handle_read_stopped`].
    ReadStopped(StreamId),
    /// [`TaskMachine::handle_io_error`].
    IoError(StreamId, i32),
    /// [`TaskMachine::handle_cancelled`].
    Cancelled(Op),
    /// [`TaskMachine::handle_tree_empty`].
    TreeEmpty,
    /// [`TaskMachine::handle_tree_occupied`].
    TreeOccupied,
    /// [`TaskMachine::handle_timeout`].
    Timeout,
    /// [`TaskMachine::handle_signal`].
    Signal(i32),
    /// [`TaskMachine::handle_terminate`].
    Terminate,
    /// [`TaskMachine::handle_kill`].
    Kill,
    /// [`TaskMachine::handle_pause`].
    Pause,
    /// [`TaskMachine::handle_resume`].
    Resume,
    /// [`TaskMachine::handle_abort`].
    Abort(StreamId),
    /// [`TaskMachine::handle_write`].
    Write {
        /// The stream written (stdin, a framed channel).
        stream: StreamId,
        /// Bytes queued.
        len: u32,
    },
    /// [`TaskMachine::handle_close_stdin`].
    CloseStdin,
    /// [`TaskMachine::handle_written`].
    Written {
        /// The stream written.
        stream: StreamId,
        /// Bytes the write op wrote (a partial write is normal).
        len: u32,
    },
    /// [`TaskMachine::handle_write_failed`].
    WriteFailed(StreamId, i32),
}
