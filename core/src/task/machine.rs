//! [`TaskMachine`]: the parts (process, streams, tree, timers) tied together, the events in
//! and the actions out. The semantics are written down in the module docs of [`super`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::process::{Level, Process, ProcessState};
use super::stream::{Stream, StreamState};
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

/// `config.streams` without duplicates (first occurrence kept), as `Stream`s in `state`.
fn streams_of(config: &TaskConfig, state: StreamState) -> Vec<Stream> {
    let mut streams: Vec<Stream> = Vec::with_capacity(config.streams.len());
    for &id in &config.streams {
        if !streams.iter().any(|s| s.id == id) {
            streams.push(Stream::new(id, state));
        }
    }
    streams
}

impl TaskMachine {
    /// A machine for a freshly spawned process: queues `SubmitWait` and one `SubmitRead` per
    /// stream, and arms the task timeout (`now + timeout`) if there is one.
    pub fn new(config: TaskConfig, now: Instant) -> Self {
        let streams = streams_of(&config, StreamState::Reading);
        let mut actions = VecDeque::with_capacity(streams.len() + 4);
        actions.push_back(Action::SubmitWait);
        actions.extend(streams.iter().map(|s| Action::SubmitRead(s.id)));
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
        let mut machine = TaskMachine {
            created: now,
            grace: config.grace,
            drain: config.drain,
            after_exit: config.after_exit,
            process: Process::new(ProcessState::Reaped(ExitStatus::Unknown)),
            streams: streams_of(&config, StreamState::Closed),
            tree: Tree::new(config.tree),
            timers: Timers::default(),
            reason: Some(Reason::SpawnFailed(errno)),
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
            self.timers
                .arm(TimerKind::Drain, now.checked_add(self.drain));
        }
        self.update(now);
        Ok(())
    }

    /// `len` bytes were read on `stream` (the driver emits them to the user itself).
    /// `more == false`: the read op ended after delivering them and is re-submitted (or, when
    /// it was being cancelled, the stream is closed).
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
            self.read_ended(i);
        }
        self.update(now);
        Ok(())
    }

    /// The read on `stream` ended at end of file.
    pub fn handle_eof(&mut self, stream: StreamId, now: Instant) -> Result<(), Rejected> {
        let i = self.reading(stream)?;
        self.close(i);
        self.update(now);
        Ok(())
    }

    /// The read op on `stream` ended without data or EOF (`-ENOBUFS`, or the kernel stopped
    /// the multishot read): re-submitted, or the stream closed when it was being cancelled.
    pub fn handle_read_stopped(&mut self, stream: StreamId, now: Instant) -> Result<(), Rejected> {
        let i = self.reading(stream)?;
        self.read_ended(i);
        self.update(now);
        Ok(())
    }

    /// The read on `stream` failed with `errno`: the stream is closed.
    pub fn handle_io_error(
        &mut self,
        stream: StreamId,
        errno: i32,
        now: Instant,
    ) -> Result<(), Rejected> {
        let i = self.reading(stream)?;
        tracing::trace!(stream = stream.0, errno, "task stream: read error");
        self.close(i);
        self.update(now);
        Ok(())
    }

    /// The op `op` ended cancelled (`-ECANCELED`). A read is then closed; the tree watch is
    /// over; a cancelled `Wait` (the machine never asks for that) is re-submitted.
    pub fn handle_cancelled(&mut self, op: Op, now: Instant) -> Result<(), Rejected> {
        match op {
            Op::Read(stream) => {
                let i = self.reading(stream)?;
                self.close(i);
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
        // Each timer is armed at most once in a machine's life, so this loop ends.
        while let Some(kind) = self.timers.next_due(now) {
            if self.released {
                break;
            }
            self.timers.disarm(kind);
            tracing::trace!(?kind, "task timer: fired");
            match kind {
                TimerKind::Timeout => {
                    if !self.settled() {
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
                    if !self.settled() {
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
    /// When everything is finished (reaped, streams closed, tree empty or killed): a no-op.
    pub fn handle_terminate(&mut self, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        if !self.settled() {
            self.begin_terminate(Reason::Terminated, now);
            self.update(now);
        }
        Ok(())
    }

    /// The user asks to kill the task: SIGKILL to the tree at once.
    /// When everything is finished (reaped, streams closed, tree empty or killed): a no-op.
    pub fn handle_kill(&mut self, now: Instant) -> Result<(), Rejected> {
        self.check_live()?;
        if !self.settled() {
            self.set_reason(Reason::Terminated);
            self.begin_kill(now);
            self.update(now);
        }
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
            Some(i) if !self.streams[i].in_flight() => {
                self.reject(Rejected::NotInFlight(Op::Read(stream)))
            }
            Some(i) => Ok(i),
        }
    }

    /// A read op on stream `i` ended without ending the stream: re-submit, unless cancelling.
    fn read_ended(&mut self, i: usize) {
        match self.streams[i].state() {
            StreamState::Reading => self
                .actions
                .push_back(Action::SubmitRead(self.streams[i].id)),
            StreamState::Cancelling => self.close(i),
            StreamState::Closed => {}
        }
    }

    fn close(&mut self, i: usize) {
        let s = &mut self.streams[i];
        if s.state() != StreamState::Closed {
            s.set_state(StreamState::Closed);
            self.actions.push_back(Action::Close(s.id));
        }
    }

    fn all_closed(&self) -> bool {
        self.streams
            .iter()
            .all(|s| s.state() == StreamState::Closed)
    }

    /// Nothing is left to stop: reaped, every stream closed, tree empty or killed.
    fn settled(&self) -> bool {
        self.process.reaped().is_some() && self.all_closed() && self.tree.done()
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

    /// Derives what follows from the current state: drain-until-EOF over, read
    /// cancellation, `Exited`, `Done` and `Release`, disarming what can no longer matter.
    fn update(&mut self, now: Instant) {
        if self.released {
            return;
        }
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
            && self.all_closed()
            && self.tree.state() == TreeState::Occupied
            && !self.tree.done()
        {
            self.begin_terminate(Reason::DrainExpired, now);
        }
        // Ending (terminated, timed out, drain expired), the process reaped and the tree empty
        // or killed. A tree known empty has no writer left: its pipes reach EOF by themselves
        // and their last bytes are still delivered, so the reads are awaited, for at most the
        // drain period (a pipe end passed outside the tree). A tree killed but not seen empty,
        // or a drain period that ran out: cancel the reads.
        if self.reason.is_some() && self.tree.done() && !self.all_closed() {
            if self.tree.known_empty() && !self.drain_over {
                if !self.timers.is_armed(TimerKind::Drain) {
                    self.timers
                        .arm(TimerKind::Drain, now.checked_add(self.drain));
                }
                return;
            }
            for s in &mut self.streams {
                if s.state() == StreamState::Reading {
                    s.set_state(StreamState::Cancelling);
                    self.actions.push_back(Action::Cancel(Op::Read(s.id)));
                }
            }
        }
        if !self.all_closed() {
            return;
        }
        if !self.exited {
            self.exited = true;
            self.actions.push_back(Action::Emit(Notice::Exited(status)));
        }
        if self.tree.done() {
            self.timers.clear();
            if !self.tree.watch_in_flight() {
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
            stream_bytes: self.streams.iter().map(|s| (s.id, s.bytes)).collect(),
            tree_signalled: self.tree.signalled.is_some(),
            descendants_killed: 0,
        };
        tracing::trace!(?outcome, "task: done, release");
        self.timers.clear();
        self.released = true;
        self.actions.push_back(Action::Emit(Notice::Done(outcome)));
        self.actions.push_back(Action::Release);
    }
}
