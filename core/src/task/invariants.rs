//! The invariant checker: watches every input fed to a [`TaskMachine`] and every action
//! polled from it, keeps its own model of what is in flight, and reports a typed
//! [`Violation`] on any break of the contract of `shared/DESIGN.md`:
//!
//! 1. `Release` exactly once, only when the process is reaped, every stream closed, the tree
//!    empty or killed, and no op in flight ([`Violation::ReleaseTooEarly`]).
//! 2. Nothing after `Release` ([`Violation::ActionAfterRelease`]); every later input rejected
//!    ([`Violation::WrongResult`]). More generally the checker predicts the result of every
//!    input from its model and flags any difference, and the `rejected()` count.
//! 3. `Close` at most once per stream, never with its read in flight.
//! 4. `Exited` only after the reap and after every stream closed (all output precedes it),
//!    then exactly one `Done` (with the bytes, status, duration and signalling the checker
//!    saw, and a reason it can justify), immediately followed by `Release`.
//! 5. and 7. Liveness: no stream is ever left neither reading nor closed, no process neither
//!    reaped nor waited for; [`Checker::finish`] fails if `Release` never came (the driver in
//!    [`super::sim`] completes every op and runs the clock, so every sequence must end).
//!    With `TreeWatch::Notifies`, a watch still in flight `grace` after SIGKILL must be
//!    cancelled ([`Violation::KillWaitUnbounded`]); a stream whose read was cancelled is never
//!    read again.
//! 6. Kill escalation: `Terminate` sends SIGTERM to a tree that may live, `Kill` SIGKILL, and
//!    SIGKILL follows once `grace` has passed since SIGTERM; no SIGKILL early, no SIGTERM
//!    after SIGKILL, no signal twice, no signal to a tree known empty, no `SignalMain` after
//!    the reap.
//! 8. Flow control never loses data nor looks like a pipe holder: while paused no read is
//!    submitted ([`Violation::ReadWhilePaused`]) and every read in flight is stopped in the
//!    batch of the `Pause` ([`Violation::PauseIgnored`]); `StopRead` only while paused; a
//!    read is cancelled or given up only when its stream was aborted, the tree was killed
//!    without being seen empty, or the drain period passed *counting only unpaused time*
//!    since the reap ([`Violation::ReadDropped`]), and `DrainExpired` needs the same.
//! 9. Writes: `SubmitWrite` only with bytes queued and no write in flight; queued bytes never
//!    wait without a write in flight ([`Violation::WriteStuck`]); a write is cancelled or
//!    given up only when nobody can read it any more: the stream's own read side is over, or
//!    the process is reaped, every read side over and the tree empty or killed
//!    ([`Violation::WriteDropped`]).
//!
//! Use [`Checked`] to run a machine under a checker.

use std::time::{Duration, Instant};

use super::{
    Action, AfterExit, ExitStatus, Input, Notice, Op, Outcome, Reason, Rejected, StreamId,
    TaskConfig, TaskMachine, TreeWatch, SIGKILL, SIGTERM,
};

/// A break of the machine's contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// `Exited` with no reap, with a status other than the reaped one, or after a spawn
    /// failure (item 4).
    #[error("action {0:?} after Release")]
    ActionAfterRelease(Action),
    /// A second `Release` (item 1).
    #[error("Release emitted twice")]
    ReleaseTwice,
    /// `Release` without a `Done` before it (item 4).
    #[error("Release before Done")]
    ReleaseBeforeDone,
    /// `Release` (or `Done`) while something still holds the task: the process not
    /// reaped, a stream open, the tree neither empty nor killed, or an op in flight
    /// (item 1).
    #[error("{action:?} while {blocker}")]
    ReleaseTooEarly {
        /// The action that came too early.
        action: Action,
        /// What still held the task.
        blocker: &'static str,
    },
    /// The run ended, every op completed, and `Release` never came (items 5 and 7).
    #[error("Release never came")]
    NotReleased,
    /// A second `Done` (item 4).
    #[error("Done emitted twice")]
    DoneTwice,
    /// `Done` before `Exited`, for a task whose process ran (item 4).
    #[error("Done before Exited")]
    DoneBeforeExited,
    /// An action other than `Release` after `Done` (item 4).
    #[error("{0:?} after Done (only Release may follow)")]
    DoneNotLast(Action),
    /// `Done` not followed by `Release` in the same batch of actions (item 4).
    #[error("Done came without Release in the same batch")]
    DoneWithoutRelease,
    /// `Done`'s outcome disagrees with what the checker saw (status, bytes, duration,
    /// signalling, or a reason it cannot justify) (item 4).
    #[error("Done outcome wrong ({what}): {outcome:?}")]
    BadOutcome {
        /// Which part of the outcome is wrong.
        what: &'static str,
        /// The outcome as emitted.
        outcome: Outcome,
    },
    /// A second `Exited` (item 4).
    #[error("Exited emitted twice")]
    ExitedTwice,
    /// `Exited` with no reap, or with a status other than the reaped one (item 4).
    #[error("Exited({0:?}) does not match the reap")]
    ExitedWithoutReap(ExitStatus),
    /// `Exited` while a read stream is still open: output could follow it (item 4).
    #[error("Exited while stream {0:?} is open")]
    ExitedBeforeEof(StreamId),
    /// An action naming a stream that is not in the config.
    #[error("{0:?} names a stream not in the config")]
    UnknownStream(Action),
    /// A second `Close` of one stream (item 3).
    #[error("Close({0:?}) twice")]
    CloseTwice(StreamId),
    /// `Close` of a stream whose read is in flight (item 3).
    #[error("Close({0:?}) while its read is in flight")]
    CloseWhileReading(StreamId),
    /// `SubmitRead`, `SubmitWait` or `WatchTree` while that op is in flight, for a
    /// closed stream, or after the reap.
    #[error("{0:?} while that op is in flight (or the stream is closed, or after the reap)")]
    BadSubmit(Action),
    /// `Cancel` of an op not in flight, or a second one (item 5).
    #[error("Cancel({0:?}) for an op not in flight, or cancelled twice")]
    BadCancel(Op),
    /// `SignalMain` after the reap: the pid may be reused (item 6).
    #[error("SignalMain({0}) after the reap")]
    SignalMainAfterReap(i32),
    /// `SignalTree` to a tree known empty (item 6).
    #[error("SignalTree({0}) to a tree known empty")]
    SignalEmptyTree(i32),
    /// The same tree signal twice (item 6).
    #[error("SignalTree({0}) twice")]
    SignalTwice(i32),
    /// SIGTERM after SIGKILL (item 6).
    #[error("SIGTERM after SIGKILL")]
    EscalatedBackwards,
    /// `SignalTree` with a signal other than SIGTERM or SIGKILL (item 6).
    #[error("SignalTree({0}): the machine only sends SIGTERM and SIGKILL to the tree")]
    UnexpectedSignal(i32),
    /// SIGKILL before `grace` passed since SIGTERM, without a kill request (item 6).
    #[error("SIGKILL before grace expired and without a kill request")]
    EarlyKill,
    /// A terminate (request, timeout or drain) accepted, and no SIGTERM to a tree that
    /// may live (item 6).
    #[error("terminate accepted but no SIGTERM reached a tree that may live")]
    MissingTerm,
    /// A kill requested or grace passed, and no SIGKILL to a tree that may live (item
    /// 6).
    #[error("kill requested or grace expired but no SIGKILL reached a tree that may live")]
    MissingKill,
    /// An input's result differs from the one the checker's model predicts (item 2).
    #[error("{input:?}: expected {expected:?}, machine said {got:?}")]
    WrongResult {
        /// The input.
        input: Input,
        /// The result the model predicts.
        expected: Result<(), Rejected>,
        /// The machine's result.
        got: Result<(), Rejected>,
    },
    /// `TaskMachine::rejected` differs from the checker's count of rejected inputs.
    #[error("rejected() is {machine}, the checker counted {checker}")]
    RejectedCount {
        /// `TaskMachine::rejected`.
        machine: u64,
        /// The checker's count.
        checker: u64,
    },
    /// `TaskMachine::is_released` disagrees with the actions seen after a batch.
    #[error("is_released() is {0} after the batch")]
    ReleasedFlag(bool),
    /// `poll_timeout` is a deadline after `Release`, or one already due right after
    /// `handle_timeout` (carried: its distance from now).
    #[error(
        "poll_timeout() is {0:?} (after Release, or a deadline left due after handle_timeout)"
    )]
    BadTimeout(Option<Duration>),
    /// With `TreeWatch::Notifies`, the watch is still in flight and not cancelled
    /// `grace` after SIGKILL (item 7).
    #[error("SIGKILL + grace passed and the tree watch was not cancelled")]
    KillWaitUnbounded,
    /// A stream neither reading nor closed, with nothing that will ever move it (item
    /// 5).
    #[error("stream {0:?} is neither reading nor closed")]
    StreamStuck(StreamId),
    /// The process neither reaped nor waited for (item 7).
    #[error("the process is neither reaped nor waited for")]
    WaitStuck,
    /// A `SubmitRead` while reads are paused by flow control (item 8).
    #[error("{0:?} while reads are paused by flow control")]
    ReadWhilePaused(Action),
    /// `StopRead` without a pause, or for a read not in flight (item 8).
    #[error("StopRead({0:?}) without a pause, or for a read not in flight")]
    BadStop(StreamId),
    /// A pause accepted, and a read in flight neither stopped nor cancelled in that
    /// batch (item 8).
    #[error("Pause accepted but the read of {0:?} was neither stopped nor cancelled")]
    PauseIgnored(StreamId),
    /// A read cancelled or given up without cause: its stream not aborted, the tree not
    /// killed, the drain not passed in unpaused time (item 8).
    #[error("{0:?} drops unread data without cause (not aborted, tree not killed, drain not passed in unpaused time)")]
    ReadDropped(Action),
    /// Queued bytes dropped (a write given up) while the task may still read them (item
    /// 9).
    #[error("{0:?} drops bytes to write while the task may still read them")]
    WriteDropped(Action),
    /// `SubmitWrite` with no bytes queued, with a write in flight, or after the write
    /// side ended (item 9).
    #[error("{0:?}: no bytes queued, or a write already in flight, or the write side is over")]
    BadWrite(Action),
    /// Bytes queued and no write in flight to write them (item 9).
    #[error("stream {0:?} has bytes queued and no write in flight")]
    WriteStuck(StreamId),
}

#[derive(Debug, Clone)]
struct StreamModel {
    id: StreamId,
    /// The stream is read / written by the supervisor.
    read: bool,
    write: bool,
    read_in_flight: bool,
    /// `StopRead` was sent for the read in flight.
    stop_sent: bool,
    cancel_sent: bool,
    /// A `Cancel(Op::Read)` was ever sent: the stream must not be read again.
    cancel_ever: bool,
    /// The read side ended for good (EOF, error, cancellation).
    read_ended: bool,
    /// `Abort` was accepted for this stream.
    aborted: bool,
    queued: u64,
    write_in_flight: bool,
    write_cancel_sent: bool,
    close_requested: bool,
    /// The write side ended (failed, cancelled, or the queue of a closed stdin written).
    write_ended: bool,
    closed: bool,
    bytes: u64,
}

impl StreamModel {
    /// The write side takes no more bytes.
    fn write_closed(&self) -> bool {
        self.closed || self.close_requested || self.write_ended || self.write_cancel_sent
    }
}

/// Watches one machine's inputs and actions; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Checker {
    mode: TreeWatch,
    after_exit: AfterExit,
    timeout: Option<Duration>,
    grace: Duration,
    drain: Duration,
    created: Instant,
    now: Instant,
    streams: Vec<StreamModel>,
    spawn_failed: Option<i32>,
    wait_in_flight: bool,
    reaped: Option<ExitStatus>,
    reaped_at: Option<Instant>,
    watch_sent: bool,
    watch_in_flight: bool,
    watch_cancel_sent: bool,
    tree_empty: bool,
    sigterm_at: Option<Instant>,
    sigkill_sent: bool,
    sigkill_at: Option<Instant>,
    exited: bool,
    done: Option<Outcome>,
    released: bool,
    rejected: u64,
    terminate_requested: bool,
    timeout_passed: bool,
    drain_passed: bool,
    /// Reads are paused by flow control.
    paused: bool,
    /// Time since the reap during which reads were not paused (what the drain counts).
    unpaused_since_reap: Duration,
    // The current batch (one input and the actions polled after it).
    batch_input: Option<Input>,
    batch_accepted: bool,
    tree_may_live_before: bool,
}

fn streams_model(config: &TaskConfig, closed: bool) -> Vec<StreamModel> {
    let mut streams: Vec<StreamModel> = Vec::new();
    let read_ids = config.streams.iter().map(|&id| (id, true));
    let write_ids = config.writable.iter().map(|&id| (id, false));
    for (id, read) in read_ids.chain(write_ids) {
        if !streams.iter().any(|s| s.id == id) {
            streams.push(StreamModel {
                id,
                read,
                write: config.writable.contains(&id),
                read_in_flight: false,
                stop_sent: false,
                cancel_sent: false,
                cancel_ever: false,
                read_ended: closed,
                aborted: false,
                queued: 0,
                write_in_flight: false,
                write_cancel_sent: false,
                close_requested: false,
                write_ended: closed,
                closed,
                bytes: 0,
            });
        }
    }
    streams
}

impl Checker {
    /// A checker for `TaskMachine::new(config, now)`.
    pub fn new(config: &TaskConfig, now: Instant) -> Self {
        Checker {
            mode: config.tree,
            after_exit: config.after_exit,
            timeout: config.timeout,
            grace: config.grace,
            drain: config.drain,
            created: now,
            now,
            streams: streams_model(config, false),
            spawn_failed: None,
            wait_in_flight: false,
            reaped: None,
            reaped_at: None,
            watch_sent: false,
            watch_in_flight: false,
            watch_cancel_sent: false,
            tree_empty: false,
            sigterm_at: None,
            sigkill_sent: false,
            sigkill_at: None,
            exited: false,
            done: None,
            released: false,
            rejected: 0,
            terminate_requested: false,
            timeout_passed: false,
            drain_passed: false,
            paused: false,
            unpaused_since_reap: Duration::ZERO,
            batch_input: None,
            batch_accepted: false,
            tree_may_live_before: true,
        }
    }

    /// A checker for `TaskMachine::spawn_failed(config, errno, now)`.
    pub fn spawn_failed(config: &TaskConfig, errno: i32, now: Instant) -> Self {
        let mut checker = Checker::new(config, now);
        checker.streams = streams_model(config, true);
        checker.spawn_failed = Some(errno);
        checker.tree_empty = true;
        checker
    }

    /// The result the machine must give for `input` in the current state.
    pub fn expected(&self, input: &Input) -> Result<(), Rejected> {
        if self.released {
            return Err(Rejected::AfterRelease);
        }
        match *input {
            Input::ProcessExited(_) if self.reaped.is_some() => Err(Rejected::AlreadyReaped),
            Input::Data { stream, .. }
            | Input::Eof(stream)
            | Input::ReadStopped(stream)
            | Input::IoError(stream, _)
            | Input::Cancelled(Op::Read(stream)) => match self.stream(stream) {
                None => Err(Rejected::UnknownStream(stream)),
                Some(s) if !s.read_in_flight => Err(Rejected::NotInFlight(Op::Read(stream))),
                Some(_) => Ok(()),
            },
            Input::Written { stream, .. }
            | Input::WriteFailed(stream, _)
            | Input::Cancelled(Op::Write(stream)) => match self.stream(stream) {
                None => Err(Rejected::UnknownStream(stream)),
                Some(s) if !s.write_in_flight => Err(Rejected::NotInFlight(Op::Write(stream))),
                Some(_) => Ok(()),
            },
            Input::Write { stream, .. } => match self.stream(stream) {
                None => Err(Rejected::UnknownStream(stream)),
                Some(s) if !s.write => Err(Rejected::NotWritable(stream)),
                Some(s) if s.write_closed() => Err(Rejected::WriteClosed(stream)),
                Some(_) => Ok(()),
            },
            Input::CloseStdin => match self.stream(StreamId::STDIN) {
                None => Err(Rejected::UnknownStream(StreamId::STDIN)),
                Some(s) if !s.write => Err(Rejected::NotWritable(StreamId::STDIN)),
                Some(_) => Ok(()),
            },
            Input::Abort(stream) => match self.stream(stream) {
                None => Err(Rejected::UnknownStream(stream)),
                Some(s) if !s.read => Err(Rejected::NotInFlight(Op::Read(stream))),
                Some(_) => Ok(()),
            },
            Input::Cancelled(Op::Wait) if !self.wait_in_flight => {
                Err(Rejected::NotInFlight(Op::Wait))
            }
            Input::Cancelled(Op::TreeWatch) | Input::TreeEmpty | Input::TreeOccupied
                if !self.watch_in_flight =>
            {
                Err(Rejected::NotInFlight(Op::TreeWatch))
            }
            _ => Ok(()),
        }
    }

    /// Observes `input`, fed at `now`, and the machine's `result`; starts a batch.
    pub fn on_input(
        &mut self,
        input: Input,
        now: Instant,
        result: Result<(), Rejected>,
    ) -> Result<(), Violation> {
        if self.reaped.is_some() && !self.paused {
            self.unpaused_since_reap += now.saturating_duration_since(self.now);
        }
        self.now = now;
        self.batch_input = Some(input);
        self.batch_accepted = result.is_ok();
        self.tree_may_live_before = self.tree_may_live();
        let expected = self.expected(&input);
        if expected != result {
            return Err(Violation::WrongResult {
                input,
                expected,
                got: result,
            });
        }
        if result.is_err() {
            self.rejected += 1;
            return Ok(());
        }
        match input {
            Input::ProcessExited(status) => {
                self.reaped = Some(status);
                self.reaped_at = Some(now);
                self.wait_in_flight = false;
                if self.mode == TreeWatch::None {
                    self.tree_empty = true;
                }
            }
            Input::Data { stream, len, more } => {
                let s = self.stream_mut(stream);
                s.bytes = s.bytes.saturating_add(u64::from(len));
                if !more {
                    Self::read_op_ended(s);
                }
            }
            Input::ReadStopped(stream) => Self::read_op_ended(self.stream_mut(stream)),
            Input::Eof(stream) | Input::IoError(stream, _) => {
                let s = self.stream_mut(stream);
                s.read_in_flight = false;
                s.read_ended = true;
            }
            Input::Cancelled(Op::Read(stream)) => {
                let s = self.stream_mut(stream);
                if s.stop_sent && !s.cancel_sent {
                    Self::read_op_ended(s);
                } else {
                    s.read_in_flight = false;
                    s.read_ended = true;
                }
            }
            Input::Written { stream, len } => {
                let s = self.stream_mut(stream);
                s.write_in_flight = false;
                s.queued = s.queued.saturating_sub(u64::from(len));
                if s.write_cancel_sent || (s.close_requested && s.queued == 0) {
                    s.write_ended = true;
                    s.queued = 0;
                }
            }
            Input::WriteFailed(stream, _) | Input::Cancelled(Op::Write(stream)) => {
                let s = self.stream_mut(stream);
                s.write_in_flight = false;
                s.write_ended = true;
                s.queued = 0;
            }
            Input::Write { stream, len } => {
                let s = self.stream_mut(stream);
                s.queued = s.queued.saturating_add(u64::from(len));
            }
            Input::CloseStdin => {
                let s = self.stream_mut(StreamId::STDIN);
                if !s.write_closed() {
                    s.close_requested = true;
                    if !s.write_in_flight {
                        s.write_ended = true;
                    }
                }
            }
            Input::Abort(stream) => self.stream_mut(stream).aborted = true,
            Input::Pause => self.paused = true,
            Input::Resume => self.paused = false,
            Input::Cancelled(Op::Wait) => self.wait_in_flight = false,
            Input::Cancelled(Op::TreeWatch) => self.watch_in_flight = false,
            Input::TreeEmpty => {
                self.watch_in_flight = false;
                self.tree_empty = true;
            }
            Input::TreeOccupied => self.watch_in_flight = false,
            Input::Timeout => {
                if let Some(at) = self.timeout.and_then(|t| self.created.checked_add(t)) {
                    self.timeout_passed |= at <= now;
                }
                if self.reaped.is_some() {
                    self.drain_passed |= self.unpaused_since_reap >= self.drain;
                }
            }
            Input::Terminate | Input::Kill => self.terminate_requested = true,
            Input::Signal(_) => {}
        }
        Ok(())
    }

    /// A read op ended without ending its stream (it is resubmitted, or waits for a resume,
    /// or the stream ends when it was being cancelled).
    fn read_op_ended(s: &mut StreamModel) {
        s.read_in_flight = false;
        if s.cancel_sent {
            s.read_ended = true;
        }
    }

    /// Unread data may be dropped: the stream was aborted, the tree was killed without being
    /// seen empty, or the drain period passed in unpaused time since the reap.
    fn read_drop_justified(&self, s: &StreamModel) -> bool {
        s.aborted || (self.sigkill_sent && !self.tree_empty) || self.drain_passed
    }

    /// The read side of `s` is over (or was given up with cause), or it has none.
    fn read_over(&self, s: &StreamModel) -> bool {
        !s.read
            || (!s.read_in_flight
                && (s.closed || s.read_ended || s.cancel_ever || self.read_drop_justified(s)))
    }

    /// Nobody can read what is queued for `s` any more.
    fn write_drop_justified(&self, s: &StreamModel) -> bool {
        (s.read && self.read_over(s))
            || (self.reaped.is_some()
                && (self.tree_empty || self.sigkill_sent)
                && self.streams.iter().all(|t| self.read_over(t)))
    }

    /// Observes one action polled from the machine.
    pub fn on_action(&mut self, action: &Action) -> Result<(), Violation> {
        if self.released {
            return Err(Violation::ActionAfterRelease(action.clone()));
        }
        if self.done.is_some() && *action != Action::Release {
            return Err(Violation::DoneNotLast(action.clone()));
        }
        match *action {
            Action::SubmitRead(id) => {
                let paused = self.paused;
                let Some(s) = self.streams.iter_mut().find(|s| s.id == id && s.read) else {
                    return Err(Violation::UnknownStream(action.clone()));
                };
                if s.closed || s.read_in_flight || s.cancel_ever || s.read_ended {
                    return Err(Violation::BadSubmit(action.clone()));
                }
                if paused {
                    return Err(Violation::ReadWhilePaused(action.clone()));
                }
                s.read_in_flight = true;
                s.stop_sent = false;
                s.cancel_sent = false;
            }
            Action::StopRead(id) => {
                let paused = self.paused;
                let Some(s) = self.streams.iter_mut().find(|s| s.id == id && s.read) else {
                    return Err(Violation::UnknownStream(action.clone()));
                };
                if !paused || !s.read_in_flight || s.stop_sent || s.cancel_sent {
                    return Err(Violation::BadStop(id));
                }
                s.stop_sent = true;
            }
            Action::SubmitWrite(id) => {
                let Some(s) = self.streams.iter_mut().find(|s| s.id == id && s.write) else {
                    return Err(Violation::UnknownStream(action.clone()));
                };
                if s.closed
                    || s.write_in_flight
                    || s.write_ended
                    || s.write_cancel_sent
                    || s.queued == 0
                {
                    return Err(Violation::BadWrite(action.clone()));
                }
                s.write_in_flight = true;
            }
            Action::SubmitWait => {
                if self.reaped.is_some() || self.wait_in_flight {
                    return Err(Violation::BadSubmit(action.clone()));
                }
                self.wait_in_flight = true;
            }
            Action::WatchTree => {
                if self.mode == TreeWatch::None || self.reaped.is_none() || self.watch_sent {
                    return Err(Violation::BadSubmit(action.clone()));
                }
                self.watch_sent = true;
                self.watch_in_flight = true;
            }
            Action::Cancel(op) => {
                let ok = match op {
                    Op::Read(id) => match self.streams.iter().position(|s| s.id == id) {
                        Some(i)
                            if self.streams[i].read_in_flight && !self.streams[i].cancel_sent =>
                        {
                            if !self.read_drop_justified(&self.streams[i]) {
                                return Err(Violation::ReadDropped(action.clone()));
                            }
                            let s = &mut self.streams[i];
                            s.cancel_sent = true;
                            s.cancel_ever = true;
                            true
                        }
                        _ => false,
                    },
                    Op::Write(id) => match self.streams.iter().position(|s| s.id == id) {
                        Some(i)
                            if self.streams[i].write_in_flight
                                && !self.streams[i].write_cancel_sent =>
                        {
                            if !self.write_drop_justified(&self.streams[i]) {
                                return Err(Violation::WriteDropped(action.clone()));
                            }
                            let s = &mut self.streams[i];
                            s.write_cancel_sent = true;
                            // A duplex stream stops writing once its read side is over: one
                            // that was waiting (paused) was given up just now, with cause.
                            if s.read && !s.read_in_flight {
                                s.read_ended = true;
                            }
                            true
                        }
                        _ => false,
                    },
                    Op::Wait => false,
                    Op::TreeWatch => {
                        let ok = self.watch_in_flight && !self.watch_cancel_sent;
                        self.watch_cancel_sent = true;
                        ok
                    }
                };
                if !ok {
                    return Err(Violation::BadCancel(op));
                }
            }
            Action::Close(id) => {
                let Some(i) = self.streams.iter().position(|s| s.id == id) else {
                    return Err(Violation::UnknownStream(action.clone()));
                };
                let s = &self.streams[i];
                if s.closed {
                    return Err(Violation::CloseTwice(id));
                }
                if s.read_in_flight || s.write_in_flight {
                    return Err(Violation::CloseWhileReading(id));
                }
                // A read side that neither ended nor was cancelled was given up while paused.
                if s.read && !s.read_ended && !s.cancel_ever && !self.read_drop_justified(s) {
                    return Err(Violation::ReadDropped(action.clone()));
                }
                // A write side still open is given up: only when nobody can read it.
                let closed_by_user = s.close_requested && s.queued == 0;
                let given_up = s.write && !s.write_ended && !s.write_cancel_sent && !closed_by_user;
                if given_up && !self.write_drop_justified(s) {
                    return Err(Violation::WriteDropped(action.clone()));
                }
                let s = &mut self.streams[i];
                s.closed = true;
                s.read_ended |= s.read;
                s.write_ended |= s.write;
                s.queued = 0;
            }
            Action::SignalMain(sig) => {
                if self.reaped.is_some() {
                    return Err(Violation::SignalMainAfterReap(sig));
                }
            }
            Action::SignalTree(sig) => self.on_signal_tree(sig)?,
            Action::Emit(Notice::Exited(status)) => {
                if self.exited {
                    return Err(Violation::ExitedTwice);
                }
                if self.reaped != Some(status) || self.spawn_failed.is_some() {
                    return Err(Violation::ExitedWithoutReap(status));
                }
                if let Some(s) = self.streams.iter().find(|s| s.read && !s.closed) {
                    return Err(Violation::ExitedBeforeEof(s.id));
                }
                self.exited = true;
            }
            Action::Emit(Notice::Done(ref outcome)) => {
                if self.done.is_some() {
                    return Err(Violation::DoneTwice);
                }
                if !self.exited && self.spawn_failed.is_none() {
                    return Err(Violation::DoneBeforeExited);
                }
                if let Some(blocker) = self.release_blocker() {
                    return Err(Violation::ReleaseTooEarly {
                        action: action.clone(),
                        blocker,
                    });
                }
                self.check_outcome(outcome)?;
                self.done = Some(outcome.clone());
            }
            Action::Release => {
                if self.done.is_none() {
                    return Err(Violation::ReleaseBeforeDone);
                }
                if let Some(blocker) = self.release_blocker() {
                    return Err(Violation::ReleaseTooEarly {
                        action: Action::Release,
                        blocker,
                    });
                }
                self.released = true;
            }
        }
        Ok(())
    }

    fn on_signal_tree(&mut self, sig: i32) -> Result<(), Violation> {
        if self.tree_empty {
            return Err(Violation::SignalEmptyTree(sig));
        }
        match sig {
            SIGTERM => {
                if self.sigkill_sent {
                    return Err(Violation::EscalatedBackwards);
                }
                if self.sigterm_at.is_some() {
                    return Err(Violation::SignalTwice(sig));
                }
                self.sigterm_at = Some(self.now);
            }
            SIGKILL => {
                if self.sigkill_sent {
                    return Err(Violation::SignalTwice(sig));
                }
                let requested = self.batch_accepted && self.batch_input == Some(Input::Kill);
                if !requested && !self.grace_expired() {
                    return Err(Violation::EarlyKill);
                }
                self.sigkill_sent = true;
                self.sigkill_at = Some(self.now);
            }
            other => return Err(Violation::UnexpectedSignal(other)),
        }
        Ok(())
    }

    /// This batch is a timer tick at or after SIGTERM + grace.
    fn grace_expired(&self) -> bool {
        self.batch_accepted
            && self.batch_input == Some(Input::Timeout)
            && self
                .sigterm_at
                .and_then(|t| t.checked_add(self.grace))
                .is_some_and(|at| at <= self.now)
    }

    fn tree_may_live(&self) -> bool {
        !self.tree_empty && !self.sigkill_sent
    }

    fn tree_signalled(&self) -> bool {
        self.sigterm_at.is_some() || self.sigkill_sent
    }

    /// Why the task may not be released yet (contract item 1), if anything.
    fn release_blocker(&self) -> Option<&'static str> {
        if self.spawn_failed.is_some() {
            return None;
        }
        if self.reaped.is_none() {
            return Some("the process is not reaped");
        }
        if self.streams.iter().any(|s| !s.closed) {
            return Some("a stream is open");
        }
        if self.wait_in_flight {
            return Some("the wait is in flight");
        }
        if self.watch_in_flight {
            return Some("the tree watch is in flight");
        }
        if !self.tree_empty && !self.sigkill_sent {
            return Some("the tree is neither empty nor killed");
        }
        None
    }

    fn check_outcome(&self, o: &Outcome) -> Result<(), Violation> {
        let bad = |what| {
            Err(Violation::BadOutcome {
                what,
                outcome: o.clone(),
            })
        };
        let status = self.reaped.unwrap_or(ExitStatus::Unknown);
        if self.spawn_failed.is_none() && o.status != status {
            return bad("status");
        }
        let bytes: Vec<(StreamId, u64)> = self
            .streams
            .iter()
            .filter(|s| s.read)
            .map(|s| (s.id, s.bytes))
            .collect();
        if o.stream_bytes != bytes {
            return bad("stream_bytes");
        }
        if o.tree_signalled != self.tree_signalled() {
            return bad("tree_signalled");
        }
        if o.duration != self.now.saturating_duration_since(self.created) {
            return bad("duration");
        }
        if o.descendants_killed != 0 {
            return bad("descendants_killed");
        }
        let justified = match o.reason {
            Reason::SpawnFailed(errno) => self.spawn_failed == Some(errno),
            _ if self.spawn_failed.is_some() => false,
            Reason::TimedOut => self.timeout_passed,
            Reason::Terminated => self.terminate_requested,
            Reason::DrainExpired => {
                self.reaped.is_some()
                    && (self.after_exit == AfterExit::DrainUntilEof || self.drain_passed)
            }
            Reason::Exited(code) => status == ExitStatus::Code(code) && !self.tree_signalled(),
            Reason::Signaled(sig) => status == ExitStatus::Signal(sig) && !self.tree_signalled(),
            Reason::StatusUnknown => status == ExitStatus::Unknown && !self.tree_signalled(),
        };
        if !justified {
            return bad("reason");
        }
        Ok(())
    }

    /// Ends a batch: the machine has no more actions; checks the batch as a whole.
    pub fn end_batch(&mut self, machine: &TaskMachine) -> Result<(), Violation> {
        let input = self.batch_input.take();
        let accepted = std::mem::replace(&mut self.batch_accepted, false);
        if machine.is_released() != self.released {
            return Err(Violation::ReleasedFlag(machine.is_released()));
        }
        if machine.rejected() != self.rejected {
            return Err(Violation::RejectedCount {
                machine: machine.rejected(),
                checker: self.rejected,
            });
        }
        if self.done.is_some() && !self.released {
            return Err(Violation::DoneWithoutRelease);
        }
        let timeout = machine.poll_timeout();
        let ticked = accepted && input == Some(Input::Timeout);
        if (self.released && timeout.is_some())
            || (ticked && timeout.is_some_and(|t| t <= self.now))
        {
            return Err(Violation::BadTimeout(
                timeout.map(|t| t.saturating_duration_since(self.created)),
            ));
        }
        if self.released {
            return Ok(());
        }
        for s in self.streams.iter().filter(|s| !s.closed) {
            // A read side waits (neither in flight nor over) only while paused.
            // (With a write in flight, a read side given up while paused awaits the write's
            // cancellation before the close.)
            let read_waits = s.read && !s.read_in_flight && !s.read_ended && !s.cancel_ever;
            if read_waits && !self.paused && !s.write_in_flight {
                return Err(Violation::StreamStuck(s.id));
            }
            // Both sides over and nothing in flight: it must have been closed.
            let read_over = !s.read || (!s.read_in_flight && (s.read_ended || s.cancel_ever));
            let write_over = !s.write || (!s.write_in_flight && s.write_ended);
            if read_over && write_over {
                return Err(Violation::StreamStuck(s.id));
            }
            if s.write && s.queued > 0 && !s.write_in_flight && !s.write_closed() {
                return Err(Violation::WriteStuck(s.id));
            }
        }
        if accepted && input == Some(Input::Pause) {
            if let Some(s) = self
                .streams
                .iter()
                .find(|s| s.read_in_flight && !s.stop_sent && !s.cancel_sent)
            {
                return Err(Violation::PauseIgnored(s.id));
            }
        }
        if self.reaped.is_none() && !self.wait_in_flight {
            return Err(Violation::WaitStuck);
        }
        if accepted && self.tree_may_live_before {
            if input == Some(Input::Kill) && !self.sigkill_sent {
                return Err(Violation::MissingKill);
            }
            if input == Some(Input::Terminate) && !self.tree_signalled() {
                return Err(Violation::MissingTerm);
            }
        }
        if ticked && self.tree_may_live() {
            let grace_over = self
                .sigterm_at
                .and_then(|t| t.checked_add(self.grace))
                .is_some_and(|at| at <= self.now);
            if grace_over {
                return Err(Violation::MissingKill);
            }
        }
        if ticked
            && self.mode == TreeWatch::Notifies
            && self.watch_in_flight
            && !self.watch_cancel_sent
            && !self.tree_empty
        {
            let wait_over = self
                .sigkill_at
                .and_then(|t| t.checked_add(self.grace))
                .is_some_and(|at| at <= self.now);
            if wait_over {
                return Err(Violation::KillWaitUnbounded);
            }
        }
        Ok(())
    }

    /// At the end of a run whose driver completed every op: `Release` must have come.
    pub fn finish(&self) -> Result<(), Violation> {
        if self.released {
            Ok(())
        } else {
            Err(Violation::NotReleased)
        }
    }

    fn stream(&self, id: StreamId) -> Option<&StreamModel> {
        self.streams.iter().find(|s| s.id == id)
    }

    fn stream_mut(&mut self, id: StreamId) -> &mut StreamModel {
        // Only called for an input `expected` accepted, so the stream exists.
        let i = self.streams.iter().position(|s| s.id == id).unwrap_or(0);
        &mut self.streams[i]
    }

    // ----- the model, for drivers (see `super::sim`) -----

    /// How the tree is watched ([`TaskConfig::tree`]).
    pub fn tree_mode(&self) -> TreeWatch {
        self.mode
    }
    /// The streams, in config order (duplicates dropped).
    pub fn stream_ids(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.streams.iter().map(|s| s.id)
    }
    /// The read on `id` is in flight.
    pub fn read_in_flight(&self, id: StreamId) -> bool {
        self.stream(id).is_some_and(|s| s.read_in_flight)
    }
    /// `Cancel(Op::Read(id))` or `StopRead(id)` was sent for the read in flight.
    pub fn read_cancel_sent(&self, id: StreamId) -> bool {
        self.stream(id)
            .is_some_and(|s| s.read_in_flight && (s.cancel_sent || s.stop_sent))
    }
    /// A write on `id` is in flight.
    pub fn write_in_flight(&self, id: StreamId) -> bool {
        self.stream(id).is_some_and(|s| s.write_in_flight)
    }
    /// `Cancel(Op::Write(id))` was sent for the write in flight.
    pub fn write_cancel_sent(&self, id: StreamId) -> bool {
        self.stream(id)
            .is_some_and(|s| s.write_in_flight && s.write_cancel_sent)
    }
    /// Bytes queued for `id` and not yet written.
    pub fn queued(&self, id: StreamId) -> u64 {
        self.stream(id).map_or(0, |s| s.queued)
    }
    /// `id` takes more bytes to write.
    pub fn writable(&self, id: StreamId) -> bool {
        self.stream(id)
            .is_some_and(|s| s.write && !s.write_closed())
    }
    /// Reads are paused by flow control.
    pub fn paused(&self) -> bool {
        self.paused
    }
    /// The status of the reap (`handle_process_exited` accepted), if it came.
    pub fn reaped(&self) -> Option<ExitStatus> {
        self.reaped
    }
    /// The wait op (`SubmitWait`) is in flight: the process is not reaped yet.
    pub fn wait_in_flight(&self) -> bool {
        self.wait_in_flight
    }
    /// The tree watch (`WatchTree`) is in flight.
    pub fn watch_in_flight(&self) -> bool {
        self.watch_in_flight
    }
    /// `Cancel(Op::TreeWatch)` was sent for the watch in flight.
    pub fn watch_cancel_sent(&self) -> bool {
        self.watch_in_flight && self.watch_cancel_sent
    }
    /// `SignalTree(SIGKILL)` was sent.
    pub fn sigkill_sent(&self) -> bool {
        self.sigkill_sent
    }
    /// `Release` came.
    pub fn released(&self) -> bool {
        self.released
    }
    /// The outcome of `Done`, once it came.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.done.as_ref()
    }
}

/// A machine run under a [`Checker`]: every input and action goes through both.
#[derive(Debug)]
pub struct Checked {
    machine: TaskMachine,
    checker: Checker,
    /// The inputs so far with their time since creation, for failure messages.
    history: Vec<(Duration, Input)>,
    created: Instant,
}

impl Checked {
    /// `TaskMachine::new` under a checker; returns the initial actions. Panics on a violation.
    pub fn new(config: TaskConfig, now: Instant) -> (Self, Vec<Action>) {
        let checker = Checker::new(&config, now);
        let machine = TaskMachine::new(config, now);
        Self::start(machine, checker, now)
    }

    /// `TaskMachine::spawn_failed` under a checker. Panics on a violation.
    pub fn spawn_failed(config: TaskConfig, errno: i32, now: Instant) -> (Self, Vec<Action>) {
        let checker = Checker::spawn_failed(&config, errno, now);
        let machine = TaskMachine::spawn_failed(config, errno, now);
        Self::start(machine, checker, now)
    }

    /// Like [`Checked::new`], returning the violation instead of panicking.
    pub fn try_new(config: TaskConfig, now: Instant) -> Result<(Self, Vec<Action>), Violation> {
        let checker = Checker::new(&config, now);
        let machine = TaskMachine::new(config, now);
        Self::try_start(machine, checker, now)
    }

    /// Like [`Checked::spawn_failed`], returning the violation instead of panicking.
    pub fn try_spawn_failed(
        config: TaskConfig,
        errno: i32,
        now: Instant,
    ) -> Result<(Self, Vec<Action>), Violation> {
        let checker = Checker::spawn_failed(&config, errno, now);
        let machine = TaskMachine::spawn_failed(config, errno, now);
        Self::try_start(machine, checker, now)
    }

    fn start(machine: TaskMachine, checker: Checker, now: Instant) -> (Self, Vec<Action>) {
        match Self::try_start(machine, checker, now) {
            Ok(started) => started,
            Err(v) => panic!("task machine contract violated at creation: {v}"),
        }
    }

    fn try_start(
        machine: TaskMachine,
        checker: Checker,
        now: Instant,
    ) -> Result<(Self, Vec<Action>), Violation> {
        let mut checked = Checked {
            machine,
            checker,
            history: Vec::new(),
            created: now,
        };
        let actions = checked.drain()?;
        Ok((checked, actions))
    }

    /// Feeds `input` at `now`, drains the actions; returns the machine's result and actions.
    /// Panics with the input history on a violation.
    pub fn feed(&mut self, input: Input, now: Instant) -> (Result<(), Rejected>, Vec<Action>) {
        match self.try_feed(input, now) {
            Ok(r) => r,
            Err(v) => panic!(
                "task machine contract violated: {v}\n  after inputs (time since creation, input):\n{}",
                self.history_text()
            ),
        }
    }

    /// Like [`Checked::feed`], returning the violation instead of panicking.
    pub fn try_feed(
        &mut self,
        input: Input,
        now: Instant,
    ) -> Result<(Result<(), Rejected>, Vec<Action>), Violation> {
        self.history
            .push((now.saturating_duration_since(self.created), input));
        let result = self.machine.handle(input, now);
        self.checker.on_input(input, now, result)?;
        let actions = self.drain()?;
        Ok((result, actions))
    }

    fn drain(&mut self) -> Result<Vec<Action>, Violation> {
        let mut actions = Vec::new();
        while let Some(action) = self.machine.poll_action() {
            self.checker.on_action(&action)?;
            actions.push(action);
        }
        self.checker.end_batch(&self.machine)?;
        Ok(actions)
    }

    /// `Release` must have come (call once every op was completed).
    pub fn finish(&self) -> Result<(), Violation> {
        self.checker.finish()
    }

    /// The machine under test.
    pub fn machine(&self) -> &TaskMachine {
        &self.machine
    }

    /// The checker, and through it its model of what is in flight (for drivers).
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The inputs fed so far, one a line, for failure messages.
    pub fn history_text(&self) -> String {
        self.history
            .iter()
            .map(|(t, i)| format!("    {t:?}  {i:?}\n"))
            .collect()
    }
}
