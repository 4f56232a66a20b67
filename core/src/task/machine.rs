//! [`TaskMachine`]: the parts (process, streams, tree, timers) tied together, the events in
//! and the actions out. The semantics are written down in the module docs of [`super`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::process::{Level, Process, ProcessState};
use super::stream::{ReadState, Stream, WriteState};
use super::timers::{TimerKind, Timers};
use super::tree::{Tree, TreeState};
use super::*;

/// The sans-IO state machine of one task. See the [module docs](super) for the contract.
#[derive(Debug)]
pub struct TaskMachine {
    created: Instant,
    grace: Duration,
    drain: Duration,
    after_exit: AfterExit,
    process: Process,
    streams: Vec<Stream>,
    tree: Tree,
    timers: Timers,
    /// The strongest supervisor-side reason so far (termination, spawn failure); `None`
    /// means the task ends naturally and the reason comes from the exit status.
    reason: Option<Reason>,
    /// Flow control: the application holds the task's whole budget; reads wait.
    paused: bool,
    /// The drain period left when it was suspended by a pause (the drain counts only time
    /// during which the task could be read: a stalled consumer is not a pipe holder).
    drain_left: Option<Duration>,
    /// `Emit(Exited)` was queued.
    exited: bool,
    /// The drain period ran out: reads still open are cancelled rather than awaited.
    drain_over: bool,
    /// `Emit(Done)` and `Release` were queued: the machine accepts nothing any more.
    released: bool,
    actions: VecDeque<Action>,
    rejected: u64,
}

fn rank(reason: Reason) -> u8 {
    match reason {
        Reason::SpawnFailed(_) => 4,
        Reason::TimedOut => 3,
        Reason::Terminated => 2,
        Reason::DrainExpired => 1,
        Reason::Exited(_) | Reason::Signaled(_) | Reason::StatusUnknown => 0,
    }
}

fn natural_reason(status: ExitStatus) -> Reason {
    match status {
        ExitStatus::Code(code) => Reason::Exited(code),
        ExitStatus::Signal(sig) => Reason::Signaled(sig),
        ExitStatus::Unknown => Reason::StatusUnknown,
    }
}

/// The streams of `config` without duplicates (first occurrence kept): the read streams in
/// their order (written too when also in `writable`), then the write-only ones.
fn streams_of(config: &TaskConfig, read: ReadState) -> Vec<Stream> {
    let mut streams: Vec<Stream> = Vec::with_capacity(config.streams.len() + config.writable.len());
    for &id in &config.streams {
        if !streams.iter().any(|s| s.id == id) {
            streams.push(Stream::new(id, Some(read), config.writable.contains(&id)));
        }
    }
    for &id in &config.writable {
        if !streams.iter().any(|s| s.id == id) {
            streams.push(Stream::new(id, None, true));
        }
    }
    streams
}

impl TaskMachine {
    /// A machine for a freshly spawned process: queues `SubmitWait` and one `SubmitRead` per
    /// read stream, and arms the task timeout (`now + timeout`) if there is one.
    pub fn new(config: TaskConfig, now: Instant) -> Self {
        let streams = streams_of(&config, ReadState::Reading);
        let mut actions = VecDeque::with_capacity(streams.len() + 4);
        actions.push_back(Action::SubmitWait);
        actions.extend(
            streams
                .iter()
                .filter(|s| s.read().is_some())
                .map(|s| Action::SubmitRead(s.id)),
        );
        let mut timers = Timers::default();
        if let Some(timeout) = config.timeout {
            timers.arm(TimerKind::Timeout, now.checked_add(timeout));
        }
        TaskMachine {
            created: now,
            grace: config.grace,
            drain: config.drain,
            after_exit: config.after_exit,
            process: Process::new(ProcessState::Running),
            streams,
            tree: Tree::new(config.tree),
            timers,
            reason: None,
            paused: false,
            drain_left: None,
            exited: false,
            drain_over: false,
            released: false,
            actions,
            rejected: 0,
        }
    }

    /// A machine for a process that could not be started: it yields
    /// `Emit(Done { reason: SpawnFailed(errno), status: Unknown, .. })` then `Release`, with
    /// nothing in flight, and rejects every later input with [`Rejected::AfterRelease`].
    pub fn spawn_failed(config: TaskConfig, errno: i32, now: Instant) -> Self {
        let mut streams = streams_of(&config, ReadState::Ended);
        for s in &mut streams {
            s.set_write(WriteState::Ended);
            s.closed = true;
        }
        let mut machine = TaskMachine {
            created: now,
            grace: config.grace,
            drain: config.drain,
            after_exit: config.after_exit,
            process: Process::new(ProcessState::Reaped(ExitStatus::Unknown)),
            streams,
            tree: Tree::new(config.tree),
            timers: Timers::default(),
            reason: Some(Reason::SpawnFailed(errno)),
            paused: false,
            drain_left: None,
            exited: true,
            drain_over: false,
            released: false,
            actions: VecDeque::with_capacity(2),
            rejected: 0,
        };
        machine.tree.set_state(TreeState::Empty);
        machine.release(ExitStatus::Unknown, now);
        machine
    }

    /// Feeds one [`Input`]: dispatches to the matching `handle_*` method.
    pub fn handle(&mut self, input: Input, now: Instant) -> Result<(), Rejected> {
        match input {
            Input::ProcessExited(status) => self.handle_process_exited(status, now),
            Input::Data { stream, len, more } => self.handle_data(stream, len as usize, more, now),
            Input::Eof(stream) => self.handle_eof(stream, now),
            Input::ReadStopped(stream) => self.handle_read_stopped(stream, now),
            Input::IoError(stream, errno) => self.handle_io_error(stream, errno, now),
            Input::Cancelled(op) => self.handle_cancelled(op, now),
            Input::TreeEmpty => self.handle_tree_empty(now),
            Input::TreeOccupied => self.handle_tree_occupied(now),
            Input::Timeout => self.handle_timeout(now),
            Input::Signal(signal) => self.handle_signal(signal, now),
            Input::Terminate => self.handle_terminate(now),
            Input::Kill => self.handle_kill(now),
            Input::Pause => self.handle_pause(now),
            Input::Resume => self.handle_resume(now),
            Input::Abort(stream) => self.handle_abort(stream, now),
            Input::Write { stream, len } => self.handle_write(stream, len as usize, now),
            Input::CloseStdin => self.handle_close_stdin(now),
            Input::Written { stream, len } => self.handle_written(stream, len as usize, now),
            Input::WriteFailed(stream, errno) => self.handle_write_failed(stream, errno, now),
        }
    }

    /// The `Wait` op completed: the main process was reaped with `status`.
    pub fn handle_process_exited(
        &mut self,
        status: ExitStatus,
        now: Instant,
    ) -> Result<(), Rejected> {
        self.check_live()?;
        if self.process.reaped().is_some() {
            return self.reject(Rejected::AlreadyReaped);
        }
        self.process.set_state(ProcessState::Reaped(status));
        match self.tree.mode {
            TreeWatch::None => self.tree.set_state(TreeState::Empty),
            TreeWatch::ProbeOnce | TreeWatch::Notifies => {
                if !self.tree.done() && self.tree.state() == TreeState::Unwatched {
                    self.tree.set_state(TreeState::Watching);
                    self.actions.push_back(Action::WatchTree);
                }
            }
        }
        if self.after_exit == AfterExit::KillTree {
            self.arm_drain(now);
        }
        self.update(now);
        Ok(())
    }

    /// `len` bytes were read on `stream` (the driver emits them to the user itself).
    /// `more == false`: the read op ended after delivering them and is re-submitted (or, when
    /// it was being cancelled, the stream ends; when stopped by flow control, it waits).
    pub fn handle_data(
        &mut self,
        stream: StreamId,
        len: usize,
        more: bool,
        now: Instant,
    ) -> Result<(), Rejected> {
        let i = self.reading(stream)?;
        let s = &mut self.streams[i];
        s.bytes = s.bytes.saturating_add(len as u64);
        if !more {
            self.read_op_ended(i);
        }
        self.update(now);
        Ok(())
    }

    /// The read on `stream` ended at end of file.
    pub fn handle_eof(&mut self, stream: StreamId, now: Instant) -> Result<(), Rejected> {
        let i = self.reading(stream)?;
        self.streams[i].set_read(ReadState::Ended);
        self.update(now);
        Ok(())
    }

    /// The read op on `stream` ended without data or EOF (`-ENOBUFS`, or the kernel stopped
    /// the multishot read): re-submitted, or the stream ended when it was being cancelled,
    /// or left waiting when stopped by flow control.
    pub fn handle_read_stopped(&mut self, stream: StreamId, now: Instant) -> Result<(), Rejected> {
        let i = self.reading(stream)?;
        self.read_op_ended(i);
        self.update(now);
        Ok(())
    }

    /// The read on `stream` failed with `errno`: its read side ends.
    pub fn handle_io_error(
        &mut self,
        stream: StreamId,
        errno: i32,
        now: Instant,
    ) -> Result<(), Rejected> {
        let i = self.reading(stream)?;
        tracing::trace!(stream = stream.0, errno, "task stream: read error");
        self.streams[i].set_read(ReadState::Ended);
        self.update(now);
        Ok(())
    }

    /// The op `op` ended cancelled (`-ECANCELED`). A read stopped by flow control then
    /// waits for the resume; any other read ends; a write ends (its queued bytes are
    /// dropped); the tree watch is over; a cancelled `Wait` (the machine never asks for that)
    /// is re-submitted.
    pub fn handle_cancelled(&mut self, op: Op, now: Instant) -> Result<(), Rejected> {
        match op {
            Op::Read(stream) => {
                let i = self.reading(stream)?;
                if self.streams[i].read() == Some(ReadState::Stopping) {
                    self.read_op_ended(i);
                } else {
                    self.streams[i].set_read(ReadState::Ended);
                }
            }
            Op::Write(stream) => {
                let i = self.writing(stream)?;
                self.end_write_op(i);
            }
            Op::Wait => {
                self.check_live()?;
                if self.process.reaped().is_some() {
                    return self.reject(Rejected::NotInFlight(Op::Wait));
                }
                self.actions.push_back(Action::SubmitWait);
            }
            // A cancelled watch ends without having seen the tree empty.
            Op::TreeWatch => return self.end_watch(TreeState::Occupied, now),
        }
        self.update(now);
        Ok(())
    }

    /// The tree watch reports the tree empty; the watch is over.
    pub fn handle_tree_empty(&mut self, now: Instant) -> Result<(), Rejected> {
        self.end_watch(TreeState::Empty, now)
    }

    /// The watch found the tree occupied and will tell nothing more (the `ProbeOnce` answer,
    /// or a `Notifies` driver that cannot watch): the watch is over, the tree not empty.
    pub fn handle_tree_occupied(&mut self, now: Instant) -> Result<(), Rejected> {
        self.end_watch(TreeState::Occupied, now)
    }

    /// The tree watch in flight ended, leaving the tree in `state`.
    fn end_watch(&mut self, state: TreeState, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        if !self.tree.watch_in_flight() {
            return self.reject(Rejected::NotInFlight(Op::TreeWatch));
        }
        self.tree.set_state(state);
        self.update(now);
        Ok(())
    }

    /// Fires every deadline at or before `now`, in deadline order. Nothing due: a no-op.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        // Each timer is armed at most once at a time and fires once per arming; a fired timer
        // is re-armed only by a later input, so this loop ends.
        while let Some(kind) = self.timers.next_due(now) {
            if self.released {
                break;
            }
            self.timers.disarm(kind);
            tracing::trace!(?kind, "task timer: fired");
            match kind {
                TimerKind::Timeout => {
                    if !self.finished() {
                        self.begin_terminate(Reason::TimedOut, now);
                    }
                }
                TimerKind::Grace => {
                    if self.tree.signalled == Some(Level::Term) {
                        self.begin_kill(now);
                    }
                }
                TimerKind::Drain => {
                    self.drain_over = true;
                    if !self.finished() {
                        self.begin_terminate(Reason::DrainExpired, now);
                    }
                }
                TimerKind::KillWait => {
                    if !self.tree.known_empty() {
                        self.tree.set_killed();
                        if self.tree.state() == TreeState::Watching {
                            self.tree.set_state(TreeState::CancellingWatch);
                            self.actions.push_back(Action::Cancel(Op::TreeWatch));
                        }
                    }
                }
            }
            self.update(now);
        }
        Ok(())
    }

    /// The user asks to send `signal` to the main process. After the reap: a no-op.
    pub fn handle_signal(&mut self, signal: i32, _now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        if self.process.reaped().is_none() {
            self.actions.push_back(Action::SignalMain(signal));
        }
        Ok(())
    }

    /// The user asks to terminate the task: SIGTERM to the tree, SIGKILL after `grace`.
    /// When everything is finished (reaped, streams read to the end, tree empty or killed):
    /// a no-op.
    pub fn handle_terminate(&mut self, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        if !self.finished() {
            self.begin_terminate(Reason::Terminated, now);
            self.update(now);
        }
        Ok(())
    }

    /// The user asks to kill the task: SIGKILL to the tree at once.
    /// When everything is finished (reaped, streams read to the end, tree empty or killed):
    /// a no-op.
    pub fn handle_kill(&mut self, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        if !self.finished() {
            self.set_reason(Reason::Terminated);
            self.begin_kill(now);
            self.update(now);
        }
        Ok(())
    }

    /// Flow control: the application holds the task's whole budget of delivered data. Every
    /// read in flight is stopped (`StopRead`) and no read is submitted until
    /// [`handle_resume`](Self::handle_resume); the drain period stops counting. Already
    /// paused: a no-op.
    pub fn handle_pause(&mut self, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        if self.paused {
            return Ok(());
        }
        tracing::trace!("task: reads paused by flow control");
        self.paused = true;
        if let Some(at) = self.timers.deadline(TimerKind::Drain) {
            self.drain_left = Some(at.saturating_duration_since(now));
            self.timers.disarm(TimerKind::Drain);
        }
        for s in &mut self.streams {
            if s.read() == Some(ReadState::Reading) {
                s.set_read(ReadState::Stopping);
                self.actions.push_back(Action::StopRead(s.id));
            }
        }
        self.update(now);
        Ok(())
    }

    /// Flow control: the application consumed enough; paused reads are submitted again and
    /// the drain period counts again from where it stopped. Not paused: a no-op.
    pub fn handle_resume(&mut self, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        if !self.paused {
            return Ok(());
        }
        tracing::trace!("task: reads resumed");
        self.paused = false;
        if let Some(left) = self.drain_left.take() {
            self.timers.arm(TimerKind::Drain, now.checked_add(left));
        }
        for s in &mut self.streams {
            if s.read() == Some(ReadState::Paused) {
                s.set_read(ReadState::Reading);
                self.actions.push_back(Action::SubmitRead(s.id));
            }
        }
        self.update(now);
        Ok(())
    }

    /// The stream's content is unusable (a frame over the maximum): its read is cancelled
    /// and the stream closed, writes included. The task itself goes on.
    pub fn handle_abort(&mut self, stream: StreamId, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        let Some(i) = self.streams.iter().position(|s| s.id == stream) else {
            return self.reject(Rejected::UnknownStream(stream));
        };
        if self.streams[i].read().is_none() {
            return self.reject(Rejected::NotInFlight(Op::Read(stream)));
        }
        self.give_up_read(i);
        self.update(now);
        Ok(())
    }

    /// The user queued `len` bytes for `stream` (stdin or a framed channel); the driver keeps
    /// the bytes, the machine the count. A write op is submitted unless one is in flight.
    pub fn handle_write(
        &mut self,
        stream: StreamId,
        len: usize,
        now: Instant,
    ) -> Result<(), Rejected> {
        self.check_live()?;
        let Some(i) = self.streams.iter().position(|s| s.id == stream) else {
            return self.reject(Rejected::UnknownStream(stream));
        };
        if self.streams[i].write.is_none() {
            return self.reject(Rejected::NotWritable(stream));
        }
        if !self.streams[i].writable() {
            return self.reject(Rejected::WriteClosed(stream));
        }
        if len == 0 {
            return Ok(());
        }
        let s = &mut self.streams[i];
        let idle = match &mut s.write {
            Some(w) => {
                w.queued = w.queued.saturating_add(len as u64);
                w.state == WriteState::Idle
            }
            None => false,
        };
        if idle {
            s.set_write(WriteState::Writing);
            self.actions.push_back(Action::SubmitWrite(stream));
        }
        self.update(now);
        Ok(())
    }

    /// The user closes stdin: once the queued bytes are written, the stream is closed (the
    /// task reads EOF). Already closing or closed: a no-op.
    pub fn handle_close_stdin(&mut self, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        let stream = StreamId::STDIN;
        let Some(i) = self.streams.iter().position(|s| s.id == stream) else {
            return self.reject(Rejected::UnknownStream(stream));
        };
        let s = &mut self.streams[i];
        let Some(w) = &mut s.write else {
            return self.reject(Rejected::NotWritable(stream));
        };
        if s.closed || w.close_requested || w.state == WriteState::Ended {
            return Ok(());
        }
        w.close_requested = true;
        if w.state == WriteState::Idle {
            s.set_write(WriteState::Ended);
        }
        self.update(now);
        Ok(())
    }

    /// The write op on `stream` ended having written `len` bytes (maybe fewer than queued:
    /// the rest is written by the next op).
    pub fn handle_written(
        &mut self,
        stream: StreamId,
        len: usize,
        now: Instant,
    ) -> Result<(), Rejected> {
        let i = self.writing(stream)?;
        let s = &mut self.streams[i];
        let (state, queued, close_requested) = match &mut s.write {
            Some(w) => {
                w.queued = w.queued.saturating_sub(len as u64);
                (w.state, w.queued, w.close_requested)
            }
            None => return Ok(()),
        };
        match state {
            WriteState::Writing if queued > 0 => {
                self.actions.push_back(Action::SubmitWrite(stream))
            }
            WriteState::Writing if !close_requested => s.set_write(WriteState::Idle),
            _ => self.end_write_op(i),
        }
        self.update(now);
        Ok(())
    }

    /// The write op on `stream` failed (`EPIPE`: nobody reads it any more): the write side
    /// ends and its queued bytes are dropped.
    pub fn handle_write_failed(
        &mut self,
        stream: StreamId,
        errno: i32,
        now: Instant,
    ) -> Result<(), Rejected> {
        let i = self.writing(stream)?;
        tracing::trace!(stream = stream.0, errno, "task stream: write failed");
        self.end_write_op(i);
        self.update(now);
        Ok(())
    }

    /// The next thing the driver must do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest armed deadline: call `handle_timeout` once it has passed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.released {
            None
        } else {
            self.timers.earliest()
        }
    }

    /// The machine has queued `Release` (the last action it will ever produce): it accepts
    /// nothing any more.
    pub fn is_released(&self) -> bool {
        self.released
    }

    /// Reads are paused by flow control.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// How many inputs were rejected as impossible in their state.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    // ----- internals -----

    fn reject<T>(&mut self, rejected: Rejected) -> Result<T, Rejected> {
        self.rejected += 1;
        tracing::trace!(%rejected, "task: input rejected");
        Err(rejected)
    }

    fn check_live(&mut self) -> Result<(), Rejected> {
        if self.released {
            self.reject(Rejected::AfterRelease)
        } else {
            Ok(())
        }
    }

    /// The index of `stream`, whose read must be in flight.
    fn reading(&mut self, stream: StreamId) -> Result<usize, Rejected> {
        self.check_live()?;
        match self.streams.iter().position(|s| s.id == stream) {
            None => self.reject(Rejected::UnknownStream(stream)),
            Some(i) if !self.streams[i].read_in_flight() => {
                self.reject(Rejected::NotInFlight(Op::Read(stream)))
            }
            Some(i) => Ok(i),
        }
    }

    /// The index of `stream`, whose write must be in flight.
    fn writing(&mut self, stream: StreamId) -> Result<usize, Rejected> {
        self.check_live()?;
        match self.streams.iter().position(|s| s.id == stream) {
            None => self.reject(Rejected::UnknownStream(stream)),
            Some(i) if !self.streams[i].write_in_flight() => {
                self.reject(Rejected::NotInFlight(Op::Write(stream)))
            }
            Some(i) => Ok(i),
        }
    }

    /// A read op on stream `i` ended without ending the stream: re-submit, unless paused
    /// (then wait for the resume) or cancelling (then the read side ends).
    fn read_op_ended(&mut self, i: usize) {
        let s = &mut self.streams[i];
        match s.read() {
            Some(ReadState::Reading | ReadState::Stopping) if self.paused => {
                s.set_read(ReadState::Paused)
            }
            Some(ReadState::Reading | ReadState::Stopping) => {
                s.set_read(ReadState::Reading);
                self.actions.push_back(Action::SubmitRead(s.id));
            }
            Some(ReadState::Cancelling) => s.set_read(ReadState::Ended),
            Some(ReadState::Paused | ReadState::Ended) | None => {}
        }
    }

    /// Stops reading stream `i` for good: the op in flight is cancelled (a stopped one too:
    /// the cancellation then makes sure it ends), a paused side just ends.
    fn give_up_read(&mut self, i: usize) {
        let s = &mut self.streams[i];
        match s.read() {
            Some(ReadState::Reading | ReadState::Stopping) => {
                s.set_read(ReadState::Cancelling);
                self.actions.push_back(Action::Cancel(Op::Read(s.id)));
            }
            Some(ReadState::Paused) => s.set_read(ReadState::Ended),
            Some(ReadState::Cancelling | ReadState::Ended) | None => {}
        }
    }

    /// The write op on stream `i` ended for good (failed, cancelled, or completed while
    /// being cancelled, or completed the queue of a stream the user closed).
    fn end_write_op(&mut self, i: usize) {
        let s = &mut self.streams[i];
        if let Some(w) = &mut s.write {
            w.queued = 0;
        }
        s.set_write(WriteState::Ended);
    }

    /// Stops writing stream `i`: nobody can read what is queued. A write in flight is
    /// cancelled and awaited; otherwise the side ends at once.
    fn give_up_write(&mut self, i: usize) {
        let s = &mut self.streams[i];
        match s.write.as_ref().map(|w| w.state) {
            Some(WriteState::Idle) => self.end_write_op(i),
            Some(WriteState::Writing) => {
                s.set_write(WriteState::Cancelling);
                self.actions.push_back(Action::Cancel(Op::Write(s.id)));
            }
            Some(WriteState::Cancelling | WriteState::Ended) | None => {}
        }
    }

    /// Every read side has ended (EOF, error, cancellation).
    fn reads_done(&self) -> bool {
        self.streams.iter().all(Stream::read_done)
    }

    /// Every stream that is read was closed (all output was delivered).
    fn reads_closed(&self) -> bool {
        self.streams.iter().all(|s| s.read().is_none() || s.closed)
    }

    fn all_closed(&self) -> bool {
        self.streams.iter().all(|s| s.closed)
    }

    /// Nothing is left to stop or read: reaped, every read side ended, tree empty or killed.
    fn finished(&self) -> bool {
        self.process.reaped().is_some() && self.reads_done() && self.tree.done()
    }

    /// Arms the drain period from `now`; while paused it waits, suspended, for the resume.
    fn arm_drain(&mut self, now: Instant) {
        if self.paused {
            self.drain_left = Some(self.drain);
        } else {
            self.timers
                .arm(TimerKind::Drain, now.checked_add(self.drain));
        }
    }

    fn drain_pending(&self) -> bool {
        self.timers.is_armed(TimerKind::Drain) || self.drain_left.is_some()
    }

    fn clear_timers(&mut self) {
        self.timers.clear();
        self.drain_left = None;
    }

    fn set_reason(&mut self, reason: Reason) {
        if self.reason.is_none_or(|old| rank(reason) > rank(old)) {
            tracing::trace!(old = ?self.reason, new = ?reason, "task: reason");
            self.reason = Some(reason);
        }
    }

    /// Starts terminating the task: SIGTERM to the tree (unless it was already signalled or
    /// nothing is left to signal), grace armed. Reads are cancelled by `update` once the
    /// process is reaped and the tree is empty or killed.
    fn begin_terminate(&mut self, reason: Reason, now: Instant) {
        self.set_reason(reason);
        if self.tree.may_signal() && self.tree.signalled.is_none() {
            self.tree.set_signalled(Level::Term);
            self.actions.push_back(Action::SignalTree(SIGTERM));
            self.process.stopping(Level::Term);
            self.timers
                .arm(TimerKind::Grace, now.checked_add(self.grace));
        }
    }

    /// SIGKILL to the tree (unless nothing is left to signal). With `Notifies` the machine
    /// then waits up to `grace` for the tree to empty; otherwise the tree counts as killed.
    fn begin_kill(&mut self, now: Instant) {
        if !self.tree.may_signal() {
            return;
        }
        self.tree.set_signalled(Level::Kill);
        self.actions.push_back(Action::SignalTree(SIGKILL));
        self.process.stopping(Level::Kill);
        self.timers.disarm(TimerKind::Grace);
        if self.tree.mode == TreeWatch::Notifies {
            self.timers
                .arm(TimerKind::KillWait, now.checked_add(self.grace));
        } else {
            self.tree.set_killed();
        }
    }

    /// Closes every stream whose sides are all over with nothing in flight; a duplex stream
    /// whose read side ended stops writing first (the peer is gone).
    fn close_finished_streams(&mut self) {
        for i in 0..self.streams.len() {
            let s = &self.streams[i];
            if s.closed {
                continue;
            }
            if s.read().is_some() && s.read_done() && !s.write_done() {
                self.give_up_write(i);
            }
            let s = &mut self.streams[i];
            if s.read_done() && s.write_done() && !s.read_in_flight() && !s.write_in_flight() {
                s.closed = true;
                tracing::trace!(stream = s.id.0, "task stream: closed");
                self.actions.push_back(Action::Close(s.id));
            }
        }
    }

    /// Derives what follows from the current state: streams closed, drain-until-EOF over,
    /// read cancellation, writes given up, `Exited`, `Done` and `Release`, disarming what
    /// can no longer matter.
    fn update(&mut self, now: Instant) {
        if self.released {
            return;
        }
        self.close_finished_streams();
        let Some(status) = self.process.reaped() else {
            return;
        };
        if self.tree.known_empty() {
            self.timers.disarm(TimerKind::Grace);
            self.timers.disarm(TimerKind::KillWait);
        }
        // Drain until EOF: every stream reached EOF, but the probe found the tree occupied and
        // nothing will tell when it empties. The drain is over: terminate what remains.
        if self.after_exit == AfterExit::DrainUntilEof
            && self.reads_done()
            && self.tree.state() == TreeState::Occupied
            && !self.tree.done()
        {
            self.begin_terminate(Reason::DrainExpired, now);
        }
        // Ending (terminated, timed out, drain expired), the process reaped and the tree empty
        // or killed. A tree known empty has no writer left: its pipes reach EOF by themselves
        // and their last bytes are still delivered, so the reads are awaited, for at most the
        // drain period (a pipe end passed outside the tree), which does not count while the
        // application holds the task's budget. A tree killed but not seen empty, or a drain
        // period that ran out: cancel the reads.
        if self.reason.is_some() && self.tree.done() && !self.reads_done() {
            if self.tree.known_empty() && !self.drain_over {
                if !self.drain_pending() {
                    self.arm_drain(now);
                }
            } else {
                for i in 0..self.streams.len() {
                    self.give_up_read(i);
                }
            }
        }
        // Nobody is left to read stdin (or a channel whose read side is still open).
        if self.finished() {
            for i in 0..self.streams.len() {
                self.give_up_write(i);
            }
        }
        self.close_finished_streams();
        if !self.reads_closed() {
            return;
        }
        if !self.exited {
            self.exited = true;
            self.actions.push_back(Action::Emit(Notice::Exited(status)));
        }
        if self.tree.done() {
            self.clear_timers();
            if !self.tree.watch_in_flight() && self.all_closed() {
                self.release(status, now);
            }
        }
    }

    /// Queues `Emit(Done)` and `Release`: the machine's last actions.
    fn release(&mut self, status: ExitStatus, now: Instant) {
        let outcome = Outcome {
            reason: self.reason.unwrap_or(natural_reason(status)),
            status,
            duration: now.saturating_duration_since(self.created),
            stream_bytes: self
                .streams
                .iter()
                .filter(|s| s.read().is_some())
                .map(|s| (s.id, s.bytes))
                .collect(),
            tree_signalled: self.tree.signalled.is_some(),
            descendants_killed: 0,
        };
        tracing::trace!(?outcome, "task: done, release");
        self.clear_timers();
        self.released = true;
        self.actions.push_back(Action::Emit(Notice::Done(outcome)));
        self.actions.push_back(Action::Release);
    }
}
