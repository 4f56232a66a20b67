//! Unit tests of the task machine, each run under the invariant checker.

use std::time::{Duration, Instant};

use super::invariants::Checked;
use super::*;

const S0: StreamId = StreamId::STDOUT;
const S1: StreamId = StreamId::STDERR;

fn config(tree: TreeWatch, after_exit: AfterExit) -> TaskConfig {
    TaskConfig {
        streams: vec![S0, S1],
        writable: vec![],
        timeout: None,
        grace: Duration::from_secs(5),
        drain: Duration::from_secs(1),
        tree,
        after_exit,
    }
}

fn basic() -> TaskConfig {
    config(TreeWatch::None, AfterExit::KillTree)
}

/// A machine under the checker, with a clock the test moves.
struct T {
    c: Checked,
    t0: Instant,
    now: Instant,
}

impl T {
    fn new(config: TaskConfig) -> (T, Vec<Action>) {
        let t0 = Instant::now();
        let (c, actions) = Checked::new(config, t0);
        (T { c, t0, now: t0 }, actions)
    }

    fn at(&mut self, secs: f64) -> &mut Self {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self
    }

    /// Feeds `input` at the current time; returns the result and the actions it caused.
    fn try_feed(&mut self, input: Input) -> (Result<(), Rejected>, Vec<Action>) {
        self.c.feed(input, self.now)
    }

    /// Feeds an input that must be accepted.
    fn feed(&mut self, input: Input) -> Vec<Action> {
        let (r, actions) = self.try_feed(input);
        assert_eq!(r, Ok(()), "{input:?} rejected");
        actions
    }

    /// Advances to `secs` and fires the due deadlines.
    fn tick(&mut self, secs: f64) -> Vec<Action> {
        self.at(secs);
        self.feed(Input::Timeout)
    }

    fn m(&self) -> &TaskMachine {
        self.c.machine()
    }

    fn outcome(actions: &[Action]) -> Outcome {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Emit(Notice::Done(o)) => Some(o.clone()),
                _ => None,
            })
            .expect("no Done")
    }
}

fn data(stream: StreamId, len: u32, more: bool) -> Input {
    Input::Data { stream, len, more }
}

fn exited(code: i32) -> Action {
    Action::Emit(Notice::Exited(ExitStatus::Code(code)))
}

#[test]
fn new_submits_wait_and_reads_and_arms_timeout() {
    let mut cfg = basic();
    cfg.timeout = Some(Duration::from_secs(10));
    let (t, actions) = T::new(cfg);
    assert_eq!(
        actions,
        vec![
            Action::SubmitWait,
            Action::SubmitRead(S0),
            Action::SubmitRead(S1)
        ]
    );
    assert_eq!(t.m().poll_timeout(), Some(t.t0 + Duration::from_secs(10)));
}

#[test]
fn output_before_exit_is_delivered_before_exited() {
    let (mut t, _) = T::new(basic());
    assert!(t.feed(data(S0, 10, true)).is_empty());
    assert!(t.feed(data(S1, 3, true)).is_empty());
    assert_eq!(t.feed(Input::Eof(S0)), vec![Action::Close(S0)]);
    assert_eq!(t.feed(Input::Eof(S1)), vec![Action::Close(S1)]);
    t.at(2.0);
    let a = t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert_eq!(a[0], exited(0));
    let o = T::outcome(&a);
    assert_eq!(a.last(), Some(&Action::Release));
    assert_eq!(o.reason, Reason::Exited(0));
    assert_eq!(o.stream_bytes, vec![(S0, 10), (S1, 3)]);
    assert_eq!(o.duration, Duration::from_secs(2));
    assert!(!o.tree_signalled);
    assert!(t.m().is_released());
    t.c.finish().unwrap();
}

#[test]
fn exit_before_eof_waits_for_eof() {
    let (mut t, _) = T::new(basic());
    t.feed(data(S0, 5, true));
    assert!(t.feed(Input::ProcessExited(ExitStatus::Code(3))).is_empty());
    // Output after the exit is still accounted; Exited waits for every EOF.
    t.feed(data(S0, 7, false));
    assert_eq!(t.feed(Input::Eof(S0)), vec![Action::Close(S0)]);
    t.feed(data(S1, 1, true));
    let a = t.feed(Input::Eof(S1));
    assert_eq!(a[..2], [Action::Close(S1), exited(3)]);
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::Exited(3));
    assert_eq!(o.stream_bytes, vec![(S0, 12), (S1, 1)]);
    t.c.finish().unwrap();
}

#[test]
fn data_without_more_resubmits_and_read_stopped_resubmits() {
    let (mut t, _) = T::new(basic());
    assert_eq!(t.feed(data(S0, 4, false)), vec![Action::SubmitRead(S0)]);
    assert_eq!(t.feed(Input::ReadStopped(S1)), vec![Action::SubmitRead(S1)]);
}

#[test]
fn descendant_holds_pipe_drain_kills_tree_cancels_reads_and_releases() {
    // Contract item 5, cgroup mode.
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    t.feed(Input::Eof(S1));
    t.at(1.0);
    assert_eq!(
        t.feed(Input::ProcessExited(ExitStatus::Code(0))),
        vec![Action::WatchTree]
    );
    assert_eq!(t.m().poll_timeout(), Some(t.t0 + Duration::from_secs(2)));
    // Drain expires: SIGTERM to the tree, grace armed.
    assert_eq!(t.tick(2.0), vec![Action::SignalTree(SIGTERM)]);
    assert_eq!(t.m().poll_timeout(), Some(t.t0 + Duration::from_secs(7)));
    // The descendant ignores SIGTERM: SIGKILL after grace.
    assert_eq!(t.tick(7.0), vec![Action::SignalTree(SIGKILL)]);
    // The tree empties: the reads still in flight are cancelled and awaited.
    assert_eq!(t.feed(Input::TreeEmpty), vec![Action::Cancel(Op::Read(S0))]);
    let a = t.feed(Input::Cancelled(Op::Read(S0)));
    assert_eq!(a[..2], [Action::Close(S0), exited(0)]);
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::DrainExpired);
    assert!(o.tree_signalled);
    assert_eq!(a.last(), Some(&Action::Release));
    t.c.finish().unwrap();
}

#[test]
fn descendant_holds_pipe_process_group_mode() {
    // Contract item 5, process-group mode: the probe finds the tree occupied.
    let (mut t, _) = T::new(config(TreeWatch::ProbeOnce, AfterExit::KillTree));
    t.feed(Input::Eof(S1));
    assert_eq!(
        t.feed(Input::ProcessExited(ExitStatus::Code(1))),
        vec![Action::WatchTree]
    );
    assert!(t.feed(Input::TreeOccupied).is_empty());
    assert_eq!(t.tick(1.0), vec![Action::SignalTree(SIGTERM)]);
    // SIGKILL: the tree counts as killed, the read is cancelled at once.
    assert_eq!(
        t.tick(6.0),
        vec![Action::SignalTree(SIGKILL), Action::Cancel(Op::Read(S0))]
    );
    // The read delivers a last chunk while being cancelled, then ends.
    assert!(t.feed(data(S0, 9, true)).is_empty());
    let a = t.feed(data(S0, 1, false));
    assert_eq!(a[..2], [Action::Close(S0), exited(1)]);
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::DrainExpired);
    assert_eq!(o.stream_bytes, vec![(S0, 10), (S1, 0)]);
    t.c.finish().unwrap();
}

#[test]
fn notifies_tree_that_never_empties_is_given_up_after_grace() {
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    assert_eq!(
        t.feed(Input::ProcessExited(ExitStatus::Code(0))),
        vec![Action::WatchTree, exited(0)]
    );
    assert_eq!(t.tick(1.0), vec![Action::SignalTree(SIGTERM)]);
    assert_eq!(t.tick(6.0), vec![Action::SignalTree(SIGKILL)]);
    assert_eq!(t.tick(11.0), vec![Action::Cancel(Op::TreeWatch)]);
    assert_eq!(t.m().poll_timeout(), None);
    let a = t.feed(Input::Cancelled(Op::TreeWatch));
    assert_eq!(T::outcome(&a).reason, Reason::DrainExpired);
    t.c.finish().unwrap();
}

#[test]
fn racing_tree_empty_ends_a_cancelled_watch() {
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    t.tick(1.0);
    t.tick(6.0);
    assert_eq!(t.tick(11.0), vec![Action::Cancel(Op::TreeWatch)]);
    let a = t.feed(Input::TreeEmpty);
    assert_eq!(a.last(), Some(&Action::Release));
    t.c.finish().unwrap();
}

#[test]
fn terminate_sends_sigterm_to_tree_then_sigkill_after_grace() {
    let (mut t, _) = T::new(basic());
    t.at(1.0);
    assert_eq!(t.feed(Input::Terminate), vec![Action::SignalTree(SIGTERM)]);
    assert_eq!(t.m().poll_timeout(), Some(t.t0 + Duration::from_secs(6)));
    // Early tick: nothing due, nothing happens.
    assert!(t.tick(5.9).is_empty());
    // A second terminate does not repeat the signal.
    assert!(t.feed(Input::Terminate).is_empty());
    assert_eq!(t.tick(6.0), vec![Action::SignalTree(SIGKILL)]);
    assert_eq!(t.m().poll_timeout(), None);
    // The tree counts as empty after the reap (no tree tracking): no writer is left, so the
    // pipes' last bytes are awaited, for at most the drain period; then the reads are cancelled.
    let a = t.feed(Input::ProcessExited(ExitStatus::Signal(SIGKILL)));
    assert!(a.is_empty(), "{a:?}");
    assert!(t.tick(6.9).is_empty());
    assert_eq!(
        t.tick(7.0),
        vec![Action::Cancel(Op::Read(S0)), Action::Cancel(Op::Read(S1))]
    );
    t.feed(Input::Cancelled(Op::Read(S0)));
    let a = t.feed(Input::Eof(S1));
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::Terminated);
    assert_eq!(o.status, ExitStatus::Signal(SIGKILL));
    assert!(o.tree_signalled);
    t.c.finish().unwrap();
}

#[test]
fn terminate_then_exit_within_grace_sends_no_sigkill() {
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    assert_eq!(t.feed(Input::Terminate), vec![Action::SignalTree(SIGTERM)]);
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    t.at(1.0);
    let a = t.feed(Input::ProcessExited(ExitStatus::Signal(SIGTERM)));
    assert_eq!(a, vec![Action::WatchTree, exited_sig(SIGTERM)]);
    let a = t.feed(Input::TreeEmpty);
    assert_eq!(T::outcome(&a).reason, Reason::Terminated);
    assert!(!a.contains(&Action::SignalTree(SIGKILL)));
    t.c.finish().unwrap();
}

fn exited_sig(sig: i32) -> Action {
    Action::Emit(Notice::Exited(ExitStatus::Signal(sig)))
}

#[test]
fn kill_sends_sigkill_at_once() {
    let (mut t, _) = T::new(config(TreeWatch::ProbeOnce, AfterExit::KillTree));
    assert_eq!(t.feed(Input::Kill), vec![Action::SignalTree(SIGKILL)]);
    // No SIGTERM after SIGKILL, ever.
    assert!(t.feed(Input::Terminate).is_empty());
    assert_eq!(t.m().poll_timeout(), None);
    // The tree counts as killed: no probe after the reap; reads cancelled.
    let a = t.feed(Input::ProcessExited(ExitStatus::Signal(SIGKILL)));
    assert_eq!(
        a,
        vec![Action::Cancel(Op::Read(S0)), Action::Cancel(Op::Read(S1))]
    );
    t.feed(Input::Cancelled(Op::Read(S0)));
    let a = t.feed(Input::Cancelled(Op::Read(S1)));
    assert_eq!(T::outcome(&a).reason, Reason::Terminated);
    t.c.finish().unwrap();
}

#[test]
fn kill_after_reap_sends_no_signal() {
    let (mut t, _) = T::new(config(TreeWatch::None, AfterExit::DrainUntilEof));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert!(t.feed(Input::Signal(SIGTERM)).is_empty());
    // The tree counts as empty after the reap: no signal; the open reads are awaited for
    // the drain period (their last bytes still count), then cancelled.
    let a = t.feed(Input::Kill);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(
        t.tick(1.0),
        vec![Action::Cancel(Op::Read(S0)), Action::Cancel(Op::Read(S1))]
    );
}

#[test]
fn kill_when_everything_is_finished_is_a_no_op() {
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::DrainUntilEof));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    t.tick(0.0);
    // Notifies, tree not yet known empty: it may hold a descendant, so the kill reaches it.
    assert_eq!(t.feed(Input::Kill), vec![Action::SignalTree(SIGKILL)]);
    assert!(t.m().poll_timeout().is_some());
    let a = t.feed(Input::TreeEmpty);
    assert_eq!(T::outcome(&a).reason, Reason::Terminated);

    let (mut t, _) = T::new(config(TreeWatch::ProbeOnce, AfterExit::DrainUntilEof));
    t.feed(Input::Kill);
    t.feed(Input::ProcessExited(ExitStatus::Signal(SIGKILL)));
    t.feed(Input::Cancelled(Op::Read(S0)));
    // Reaped, tree killed, one cancellation still awaited: nothing left to stop.
    assert!(t.feed(Input::Kill).is_empty());
    assert!(t.feed(Input::Terminate).is_empty());
    assert!(t.feed(Input::Signal(1)).is_empty());
    let a = t.feed(Input::Cancelled(Op::Read(S1)));
    assert_eq!(a.last(), Some(&Action::Release));
}

#[test]
fn requests_and_events_after_done_are_rejected_and_counted() {
    let (mut t, _) = T::new(basic());
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert!(t.m().is_released());
    for input in [
        Input::Terminate,
        Input::Kill,
        Input::Signal(SIGTERM),
        Input::Timeout,
        Input::ProcessExited(ExitStatus::Code(0)),
        Input::Eof(S0),
        data(S1, 1, true),
        Input::TreeEmpty,
        Input::Cancelled(Op::Wait),
    ] {
        let (r, a) = t.try_feed(input);
        assert_eq!(r, Err(Rejected::AfterRelease));
        assert!(a.is_empty());
    }
    assert_eq!(t.m().rejected(), 9);
    t.c.finish().unwrap();
}

#[test]
fn stale_and_duplicate_events_are_rejected_and_counted() {
    let (mut t, _) = T::new(config(TreeWatch::ProbeOnce, AfterExit::KillTree));
    let reject = |t: &mut T, input, want| {
        let (r, a) = t.try_feed(input);
        assert_eq!(r, Err(want), "{input:?}");
        assert!(a.is_empty());
    };
    reject(
        &mut t,
        Input::Eof(StreamId(7)),
        Rejected::UnknownStream(StreamId(7)),
    );
    reject(
        &mut t,
        Input::TreeEmpty,
        Rejected::NotInFlight(Op::TreeWatch),
    );
    reject(
        &mut t,
        Input::TreeOccupied,
        Rejected::NotInFlight(Op::TreeWatch),
    );
    reject(
        &mut t,
        Input::Cancelled(Op::TreeWatch),
        Rejected::NotInFlight(Op::TreeWatch),
    );
    t.feed(Input::Eof(S0));
    reject(&mut t, Input::Eof(S0), Rejected::NotInFlight(Op::Read(S0)));
    reject(
        &mut t,
        data(S0, 1, true),
        Rejected::NotInFlight(Op::Read(S0)),
    );
    reject(
        &mut t,
        Input::ReadStopped(S0),
        Rejected::NotInFlight(Op::Read(S0)),
    );
    reject(
        &mut t,
        Input::IoError(S0, 5),
        Rejected::NotInFlight(Op::Read(S0)),
    );
    reject(
        &mut t,
        Input::Cancelled(Op::Read(S0)),
        Rejected::NotInFlight(Op::Read(S0)),
    );
    t.feed(Input::ProcessExited(ExitStatus::Unknown));
    reject(
        &mut t,
        Input::ProcessExited(ExitStatus::Code(0)),
        Rejected::AlreadyReaped,
    );
    reject(
        &mut t,
        Input::Cancelled(Op::Wait),
        Rejected::NotInFlight(Op::Wait),
    );
    assert_eq!(t.m().rejected(), 11);
    t.feed(Input::TreeEmpty);
    reject(
        &mut t,
        Input::TreeEmpty,
        Rejected::NotInFlight(Op::TreeWatch),
    );
    let a = t.feed(Input::IoError(S1, 5));
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::StatusUnknown);
    assert_eq!(o.status, ExitStatus::Unknown);
    assert_eq!(t.m().rejected(), 12);
    t.c.finish().unwrap();
}

#[test]
fn unknown_status_still_reaches_done() {
    let (mut t, _) = T::new(basic());
    t.feed(Input::ProcessExited(ExitStatus::Unknown));
    t.feed(Input::Eof(S0));
    let a = t.feed(Input::Eof(S1));
    assert_eq!(a[1], Action::Emit(Notice::Exited(ExitStatus::Unknown)));
    assert_eq!(T::outcome(&a).reason, Reason::StatusUnknown);
    t.c.finish().unwrap();
}

#[test]
fn natural_signal_reason() {
    let (mut t, _) = T::new(basic());
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    let a = t.feed(Input::ProcessExited(ExitStatus::Signal(11)));
    assert_eq!(T::outcome(&a).reason, Reason::Signaled(11));
}

#[test]
fn signal_goes_to_main_until_reaped() {
    let (mut t, _) = T::new(basic());
    assert_eq!(t.feed(Input::Signal(10)), vec![Action::SignalMain(10)]);
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert!(t.feed(Input::Signal(10)).is_empty());
}

#[test]
fn spawn_failed_yields_done_then_release() {
    let t0 = Instant::now();
    let (mut c, a) = Checked::spawn_failed(basic(), 2, t0);
    assert_eq!(a.len(), 2);
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::SpawnFailed(2));
    assert_eq!(o.status, ExitStatus::Unknown);
    assert_eq!(o.stream_bytes, vec![(S0, 0), (S1, 0)]);
    assert_eq!(a[1], Action::Release);
    assert!(c.machine().is_released());
    assert_eq!(c.machine().poll_timeout(), None);
    let (r, _) = c.feed(Input::Kill, t0);
    assert_eq!(r, Err(Rejected::AfterRelease));
    c.finish().unwrap();
}

#[test]
fn timeout_beats_terminate_beats_drain() {
    // Timeout, then a user terminate: TimedOut.
    let mut cfg = basic();
    cfg.timeout = Some(Duration::from_secs(10));
    let (mut t, _) = T::new(cfg.clone());
    assert_eq!(t.tick(10.0), vec![Action::SignalTree(SIGTERM)]);
    t.feed(Input::Kill);
    t.feed(Input::ProcessExited(ExitStatus::Signal(SIGKILL)));
    t.feed(Input::Cancelled(Op::Read(S0)));
    let a = t.feed(Input::Cancelled(Op::Read(S1)));
    assert_eq!(T::outcome(&a).reason, Reason::TimedOut);

    // Drain expiry, then a user terminate: Terminated.
    let (mut t, _) = T::new(config(TreeWatch::ProbeOnce, AfterExit::KillTree));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    t.feed(Input::TreeOccupied);
    assert_eq!(t.tick(1.0), vec![Action::SignalTree(SIGTERM)]);
    t.feed(Input::Terminate);
    assert_eq!(
        t.feed(Input::Kill),
        vec![
            Action::SignalTree(SIGKILL),
            Action::Cancel(Op::Read(S0)),
            Action::Cancel(Op::Read(S1))
        ]
    );
    t.feed(Input::Eof(S0));
    let a = t.feed(Input::Cancelled(Op::Read(S1)));
    assert_eq!(T::outcome(&a).reason, Reason::Terminated);

    // Terminate, then the timeout while still stopping: TimedOut wins.
    let (mut t, _) = T::new(cfg);
    t.at(9.0);
    t.feed(Input::Terminate);
    assert!(t.tick(10.0).is_empty());
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    let a = t.feed(Input::ProcessExited(ExitStatus::Signal(SIGTERM)));
    assert_eq!(T::outcome(&a).reason, Reason::TimedOut);
}

#[test]
fn timeout_after_exit_cancels_reads_when_draining_until_eof() {
    let mut cfg = config(TreeWatch::None, AfterExit::DrainUntilEof);
    cfg.timeout = Some(Duration::from_secs(30));
    let (mut t, _) = T::new(cfg);
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    t.feed(Input::Eof(S1));
    // No drain timer: only the task timeout.
    assert_eq!(t.m().poll_timeout(), Some(t.t0 + Duration::from_secs(30)));
    // The timeout fires; no writer is left, so the read gets the drain period to see EOF.
    assert!(t.tick(30.0).is_empty());
    assert_eq!(t.tick(31.0), vec![Action::Cancel(Op::Read(S0))]);
    let a = t.feed(Input::Cancelled(Op::Read(S0)));
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::TimedOut);
    assert!(!o.tree_signalled);
    assert_eq!(o.duration, Duration::from_secs(31));
    t.c.finish().unwrap();
}

#[test]
fn drain_until_eof_with_occupied_probe_terminates_after_eof() {
    let (mut t, _) = T::new(config(TreeWatch::ProbeOnce, AfterExit::DrainUntilEof));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    t.feed(Input::TreeOccupied);
    assert_eq!(t.m().poll_timeout(), None);
    t.feed(Input::Eof(S0));
    assert_eq!(
        t.feed(Input::Eof(S1)),
        vec![Action::Close(S1), Action::SignalTree(SIGTERM), exited(0)]
    );
    let a = t.tick(5.0);
    assert_eq!(a[0], Action::SignalTree(SIGKILL));
    assert_eq!(T::outcome(&a).reason, Reason::DrainExpired);
    t.c.finish().unwrap();
}

#[test]
fn drain_timer_is_disarmed_when_everything_closes_in_time() {
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert!(t.m().poll_timeout().is_some());
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    let a = t.feed(Input::TreeEmpty);
    assert_eq!(T::outcome(&a).reason, Reason::Exited(0));
    assert_eq!(t.m().poll_timeout(), None);
}

#[test]
fn zero_grace_fires_chained_deadlines_in_one_tick() {
    let mut cfg = config(TreeWatch::Notifies, AfterExit::KillTree);
    cfg.grace = Duration::ZERO;
    cfg.drain = Duration::ZERO;
    let (mut t, _) = T::new(cfg);
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert_eq!(
        t.tick(0.0),
        vec![
            Action::SignalTree(SIGTERM),
            Action::SignalTree(SIGKILL),
            Action::Cancel(Op::TreeWatch)
        ]
    );
    let a = t.feed(Input::Cancelled(Op::TreeWatch));
    assert_eq!(a.last(), Some(&Action::Release));
}

#[test]
fn huge_durations_never_fire_and_never_panic() {
    let mut cfg = basic();
    cfg.timeout = Some(Duration::MAX);
    cfg.grace = Duration::MAX;
    cfg.drain = Duration::MAX;
    let (mut t, _) = T::new(cfg);
    assert_eq!(t.m().poll_timeout(), None);
    t.feed(Input::Terminate);
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert!(t.tick(1e6).is_empty());
}

#[test]
fn extra_channels_and_duplicate_stream_ids() {
    let mut cfg = basic();
    cfg.streams = vec![S0, StreamId::channel(0), S0, StreamId::channel(3)];
    let (mut t, a) = T::new(cfg);
    assert_eq!(
        a,
        vec![
            Action::SubmitWait,
            Action::SubmitRead(S0),
            Action::SubmitRead(StreamId(2)),
            Action::SubmitRead(StreamId(5))
        ]
    );
    let (r, _) = t.try_feed(Input::Eof(S1));
    assert_eq!(r, Err(Rejected::UnknownStream(S1)));
    t.feed(Input::Eof(S0));
    t.feed(Input::IoError(StreamId(2), 104));
    t.feed(data(StreamId(5), 8, true));
    t.feed(Input::Eof(StreamId(5)));
    let a = t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert_eq!(
        T::outcome(&a).stream_bytes,
        vec![(S0, 0), (StreamId(2), 0), (StreamId(5), 8)]
    );
}

#[test]
fn no_streams() {
    let mut cfg = basic();
    cfg.streams.clear();
    let (mut t, a) = T::new(cfg);
    assert_eq!(a, vec![Action::SubmitWait]);
    let a = t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert_eq!(a.len(), 3);
}

#[test]
fn unrequested_wait_cancellation_resubmits() {
    let (mut t, _) = T::new(basic());
    assert_eq!(t.feed(Input::Cancelled(Op::Wait)), vec![Action::SubmitWait]);
}

#[test]
fn notifies_driver_that_cannot_watch_answers_occupied() {
    // A cgroup driver that cannot open `cgroup.events` ends the watch with "occupied": the
    // drain, grace and kill wait bound the task without any more tree notification.
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert!(t.feed(Input::TreeOccupied).is_empty());
    let (r, _) = t.try_feed(Input::TreeEmpty);
    assert_eq!(r, Err(Rejected::NotInFlight(Op::TreeWatch)));
    assert_eq!(t.tick(1.0), vec![Action::SignalTree(SIGTERM)]);
    assert_eq!(t.tick(6.0), vec![Action::SignalTree(SIGKILL)]);
    let a = t.tick(11.0);
    assert_eq!(T::outcome(&a).reason, Reason::DrainExpired);
    assert_eq!(a.last(), Some(&Action::Release));
    t.c.finish().unwrap();
}

#[test]
fn a_terminated_tasks_last_output_is_awaited_once_its_tree_is_empty() {
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    t.at(1.0);
    assert_eq!(t.feed(Input::Terminate), vec![Action::SignalTree(SIGTERM)]);
    let a = t.feed(Input::ProcessExited(ExitStatus::Signal(SIGTERM)));
    assert_eq!(a, vec![Action::WatchTree]);
    // The tree is empty: the pipes have no writer, their bytes are still read to EOF.
    assert!(t.feed(Input::TreeEmpty).is_empty());
    t.feed(Input::Data {
        stream: S0,
        len: 100,
        more: true,
    });
    t.feed(Input::Eof(S0));
    let a = t.feed(Input::Eof(S1));
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::Terminated);
    assert_eq!(o.stream_bytes[0], (S0, 100));
    t.c.finish().unwrap();
}

// ----- flow control -----

#[test]
fn pause_stops_every_read_and_resume_submits_them_again() {
    let (mut t, _) = T::new(basic());
    assert_eq!(
        t.feed(Input::Pause),
        vec![Action::StopRead(S0), Action::StopRead(S1)]
    );
    assert!(t.m().is_paused());
    // A pause while paused changes nothing.
    assert!(t.feed(Input::Pause).is_empty());
    // Data still in flight is accounted; the stopped read ends without a resubmit.
    assert!(t.feed(data(S0, 7, true)).is_empty());
    assert!(t.feed(Input::Cancelled(Op::Read(S0))).is_empty());
    assert!(t.feed(data(S1, 3, false)).is_empty());
    let (r, _) = t.try_feed(Input::Eof(S0));
    assert_eq!(r, Err(Rejected::NotInFlight(Op::Read(S0))));
    assert_eq!(
        t.feed(Input::Resume),
        vec![Action::SubmitRead(S0), Action::SubmitRead(S1)]
    );
    assert!(t.feed(Input::Resume).is_empty());
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    let a = t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert_eq!(T::outcome(&a).stream_bytes, vec![(S0, 7), (S1, 3)]);
    t.c.finish().unwrap();
}

#[test]
fn a_resume_while_a_read_is_stopping_resubmits_it_when_it_ends() {
    let (mut t, _) = T::new(basic());
    t.feed(Input::Pause);
    assert!(t.feed(Input::Resume).is_empty());
    assert_eq!(
        t.feed(Input::Cancelled(Op::Read(S0))),
        vec![Action::SubmitRead(S0)]
    );
    assert_eq!(t.feed(Input::ReadStopped(S1)), vec![Action::SubmitRead(S1)]);
}

#[test]
fn a_stalled_consumer_does_not_make_the_drain_expire() {
    // The main process exits while the application holds the task's budget: the drain
    // (1 s) counts only unpaused time, so a 30 s stall does not end the task.
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    t.feed(Input::Eof(S1));
    t.feed(Input::Pause);
    t.feed(Input::Cancelled(Op::Read(S0)));
    t.at(0.5);
    assert_eq!(
        t.feed(Input::ProcessExited(ExitStatus::Code(0))),
        vec![Action::WatchTree]
    );
    assert_eq!(t.m().poll_timeout(), None);
    assert!(t.tick(30.0).is_empty());
    // Resumed at 30 s: 1 s of drain left.
    t.at(30.0);
    assert_eq!(t.feed(Input::Resume), vec![Action::SubmitRead(S0)]);
    assert_eq!(t.m().poll_timeout(), Some(t.t0 + Duration::from_secs(31)));
    // Paused again at 30.4 s for 10 s: 0.6 s left from the resume at 40.4 s.
    t.at(30.4);
    assert_eq!(t.feed(Input::Pause), vec![Action::StopRead(S0)]);
    t.feed(Input::Cancelled(Op::Read(S0)));
    t.at(40.4);
    t.feed(Input::Resume);
    assert_eq!(
        t.m().poll_timeout(),
        Some(t.t0 + Duration::from_secs_f64(41.0))
    );
    // The descendant really holds the pipe: the drain expires, the tree is terminated.
    assert_eq!(t.tick(41.0), vec![Action::SignalTree(SIGTERM)]);
    t.feed(Input::TreeEmpty);
    let a = t.feed(Input::Eof(S0));
    assert_eq!(T::outcome(&a).reason, Reason::DrainExpired);
    t.c.finish().unwrap();
}

#[test]
fn a_paused_task_that_ends_keeps_its_output_until_resumed() {
    // Terminated while paused, tree empty: the pipes' last bytes wait for the application
    // (no drain runs while paused), then are read to EOF.
    let (mut t, _) = T::new(config(TreeWatch::Notifies, AfterExit::KillTree));
    t.feed(Input::Pause);
    t.feed(Input::Cancelled(Op::Read(S0)));
    t.feed(Input::Cancelled(Op::Read(S1)));
    t.at(1.0);
    t.feed(Input::Terminate);
    t.feed(Input::ProcessExited(ExitStatus::Signal(SIGTERM)));
    assert!(t.feed(Input::TreeEmpty).is_empty());
    assert!(t.tick(100.0).is_empty());
    t.at(100.0);
    assert_eq!(
        t.feed(Input::Resume),
        vec![Action::SubmitRead(S0), Action::SubmitRead(S1)]
    );
    t.feed(data(S0, 5, true));
    t.feed(Input::Eof(S0));
    let a = t.feed(Input::Eof(S1));
    let o = T::outcome(&a);
    assert_eq!(o.reason, Reason::Terminated);
    assert_eq!(o.stream_bytes[0], (S0, 5));
    t.c.finish().unwrap();
}

#[test]
fn a_killed_tree_not_seen_empty_gives_up_paused_reads() {
    let (mut t, _) = T::new(config(TreeWatch::ProbeOnce, AfterExit::KillTree));
    t.feed(Input::Pause);
    t.feed(Input::Cancelled(Op::Read(S0)));
    t.feed(Input::Cancelled(Op::Read(S1)));
    t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    t.feed(Input::TreeOccupied);
    // SIGKILL to a tree nothing will report empty: the paused reads end without an op.
    let a = t.feed(Input::Kill);
    assert_eq!(
        a[..3],
        [
            Action::SignalTree(SIGKILL),
            Action::Close(S0),
            Action::Close(S1)
        ]
    );
    assert_eq!(a.last(), Some(&Action::Release));
    t.c.finish().unwrap();
}

// ----- stdin and channels -----

const IN: StreamId = StreamId::STDIN;
const CH: StreamId = StreamId(2);

fn with_stdin_and_channel() -> TaskConfig {
    let mut cfg = basic();
    cfg.streams.push(CH);
    cfg.writable = vec![IN, CH];
    cfg
}

#[test]
fn writes_are_queued_partial_writes_continue_and_close_waits_for_the_queue() {
    let (mut t, a) = T::new(with_stdin_and_channel());
    assert!(!a.contains(&Action::SubmitRead(IN)));
    assert_eq!(
        t.feed(Input::Write {
            stream: IN,
            len: 10
        }),
        vec![Action::SubmitWrite(IN)]
    );
    // Queued behind the write in flight.
    assert!(t.feed(Input::Write { stream: IN, len: 5 }).is_empty());
    assert!(t.feed(Input::CloseStdin).is_empty());
    let (r, _) = t.try_feed(Input::Write { stream: IN, len: 1 });
    assert_eq!(r, Err(Rejected::WriteClosed(IN)));
    assert_eq!(
        t.feed(Input::Written { stream: IN, len: 4 }),
        vec![Action::SubmitWrite(IN)]
    );
    assert_eq!(
        t.feed(Input::Written {
            stream: IN,
            len: 11
        }),
        vec![Action::Close(IN)]
    );
    let (r, _) = t.try_feed(Input::Written { stream: IN, len: 1 });
    assert_eq!(r, Err(Rejected::NotInFlight(Op::Write(IN))));
    let (r, _) = t.try_feed(Input::Write { stream: S0, len: 1 });
    assert_eq!(r, Err(Rejected::NotWritable(S0)));
}

#[test]
fn a_broken_pipe_closes_stdin_and_the_task_goes_on() {
    let (mut t, _) = T::new(with_stdin_and_channel());
    t.feed(Input::Write {
        stream: IN,
        len: 10,
    });
    t.feed(Input::Write {
        stream: IN,
        len: 10,
    });
    assert_eq!(t.feed(Input::WriteFailed(IN, 32)), vec![Action::Close(IN)]);
    let (r, _) = t.try_feed(Input::Write { stream: IN, len: 1 });
    assert_eq!(r, Err(Rejected::WriteClosed(IN)));
    // Closing a closed stdin is a no-op.
    assert!(t.feed(Input::CloseStdin).is_empty());
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    t.feed(Input::Eof(CH));
    let a = t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert_eq!(T::outcome(&a).reason, Reason::Exited(0));
}

#[test]
fn stdin_still_being_written_when_the_task_ends_is_cancelled_then_released() {
    let (mut t, _) = T::new(with_stdin_and_channel());
    t.feed(Input::Write {
        stream: IN,
        len: 1 << 20,
    });
    t.feed(Input::Eof(S0));
    t.feed(Input::Eof(S1));
    t.feed(Input::Eof(CH));
    // A descendant outside the tree holds stdin and never reads it: the write would wait
    // forever. Once the process is reaped and the tree empty, it is cancelled.
    let a = t.feed(Input::ProcessExited(ExitStatus::Code(0)));
    assert_eq!(a, vec![Action::Cancel(Op::Write(IN)), exited(0)]);
    let a = t.feed(Input::Cancelled(Op::Write(IN)));
    assert_eq!(a[0], Action::Close(IN));
    assert_eq!(a.last(), Some(&Action::Release));
    t.c.finish().unwrap();
}

#[test]
fn a_channel_closed_by_the_child_stops_its_writes_and_an_aborted_one_is_cancelled() {
    let (mut t, _) = T::new(with_stdin_and_channel());
    assert_eq!(
        t.feed(Input::Write { stream: CH, len: 8 }),
        vec![Action::SubmitWrite(CH)]
    );
    // The child closed its end: the reply in flight is cancelled, then the channel closes.
    assert_eq!(t.feed(Input::Eof(CH)), vec![Action::Cancel(Op::Write(CH))]);
    let (r, _) = t.try_feed(Input::Write { stream: CH, len: 1 });
    assert_eq!(r, Err(Rejected::WriteClosed(CH)));
    assert_eq!(
        t.feed(Input::Written { stream: CH, len: 8 }),
        vec![Action::Close(CH)]
    );

    let (mut t, _) = T::new(with_stdin_and_channel());
    // A frame over the maximum: the channel is aborted, the task goes on.
    assert_eq!(t.feed(Input::Abort(CH)), vec![Action::Cancel(Op::Read(CH))]);
    t.feed(data(CH, 100, true));
    assert_eq!(
        t.feed(Input::Cancelled(Op::Read(CH))),
        vec![Action::Close(CH)]
    );
    assert!(t.feed(Input::Abort(CH)).is_empty());
    let (r, _) = t.try_feed(Input::Abort(IN));
    assert_eq!(r, Err(Rejected::NotInFlight(Op::Read(IN))));
}
