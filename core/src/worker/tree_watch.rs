//! The worker's side of a task's tree watch (`Action::WatchTree`): how it learns that the
//! task's process tree is empty, as one enum with pure transitions, so that its rare paths
//! (a cancellation racing a notification, a probe that cannot get a pidfd) are ordinary
//! test and fuzz cases.
//!
//! Two modes:
//! - [`WatchMode::Notify`] (cgroup): check `populated` (after opening `cgroup.events`, so
//!   that no change can fall between the check and the watch), then arm a `POLLPRI` watch;
//!   each notification checks again.
//! - [`WatchMode::Probe`] (process group, which the kernel never reports empty): probe with
//!   signal 0 through a lent pidfd, then sleep and probe again with a backoff.
//!
//! Every [`TreeWatch::start`] ends in exactly one [`Step::Report`] (empty, occupied or
//! cancelled), after which the watch is idle again; a cancellation is never lost, whatever
//! it races with. The loop carries out each [`Step`] and feeds the result back.

/// How the worker can learn that a tree emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum WatchMode {
    /// cgroup mode: `populated` in `cgroup.events`, then a `POLLPRI` watch on it.
    Notify,
    /// Process-group mode: signal 0 to the group through a lent pidfd, again after a backoff.
    Probe,
}

/// Where a watch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TreeWatch {
    #[default]
    Idle,
    /// A check is pending: the loop is about to check (`Notify`) or a pidfd to probe with is
    /// being lent (`Probe`).
    Checking { cancel: bool },
    /// `Notify`: a `POLLPRI` watch is armed (and, with `cancel`, its cancellation sent).
    Polling { cancel: bool },
    /// `Probe`: waiting for the next probe.
    Sleeping,
}

/// How a watch ended, for the task's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// `handle_tree_empty`.
    Empty,
    /// `handle_tree_occupied`: the watch cannot go on, the tree was not seen empty.
    Occupied,
    /// `handle_cancelled(Op::TreeWatch)`.
    Cancelled,
}

/// What the loop must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Step {
    Nothing,
    /// `Notify`: check `populated` now and call [`TreeWatch::checked`].
    CheckNow,
    /// `Probe`: lend a pidfd, probe with it and call [`TreeWatch::checked`].
    LendProbe,
    /// `Notify`: arm the `POLLPRI` watch; its end goes to [`TreeWatch::poll_ended`].
    ArmPoll,
    /// `Notify`: cancel the armed watch.
    CancelPoll,
    /// `Probe`: call [`TreeWatch::sleep_over`] after the backoff.
    Sleep,
    /// The watch is over.
    Report(Report),
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Checked {
    /// The tree is empty (`populated 0`, or no process left in the group).
    Empty,
    /// Some process of the tree lives.
    Populated,
    /// The check could not be made (no pidfd could be lent, `cgroup.events` unreadable).
    Failed,
}

impl TreeWatch {
    pub(crate) fn is_idle(self) -> bool {
        self == TreeWatch::Idle
    }

    fn set(&mut self, new: TreeWatch) {
        tracing::trace!(old = ?*self, new = ?new, "tree watch: state");
        *self = new;
    }

    /// The machine asked for a watch. A watch already running is left as it is.
    pub(crate) fn start(&mut self, mode: WatchMode) -> Step {
        if !self.is_idle() {
            return Step::Nothing;
        }
        self.set(TreeWatch::Checking { cancel: false });
        match mode {
            WatchMode::Notify => Step::CheckNow,
            WatchMode::Probe => Step::LendProbe,
        }
    }

    /// The machine asked for the watch to be cancelled.
    pub(crate) fn cancel(&mut self) -> Step {
        match *self {
            TreeWatch::Idle => Step::Nothing,
            TreeWatch::Checking { .. } => {
                self.set(TreeWatch::Checking { cancel: true });
                Step::Nothing
            }
            TreeWatch::Polling { cancel: false } => {
                self.set(TreeWatch::Polling { cancel: true });
                Step::CancelPoll
            }
            TreeWatch::Polling { cancel: true } => Step::Nothing,
            TreeWatch::Sleeping => {
                self.set(TreeWatch::Idle);
                Step::Report(Report::Cancelled)
            }
        }
    }

    /// The result of a check (`CheckNow` or `LendProbe`).
    pub(crate) fn checked(&mut self, mode: WatchMode, found: Checked) -> Step {
        let TreeWatch::Checking { cancel } = *self else {
            return Step::Nothing;
        };
        let (next, step) = match (found, cancel, mode) {
            // Empty wins over a cancellation: it is the better news for the machine.
            (Checked::Empty, _, _) => (TreeWatch::Idle, Step::Report(Report::Empty)),
            (_, true, _) => (TreeWatch::Idle, Step::Report(Report::Cancelled)),
            (Checked::Populated, false, WatchMode::Notify) => {
                (TreeWatch::Polling { cancel: false }, Step::ArmPoll)
            }
            // A probe that failed (no pidfd for now) is retried after the backoff.
            (Checked::Populated | Checked::Failed, false, WatchMode::Probe) => {
                (TreeWatch::Sleeping, Step::Sleep)
            }
            (Checked::Failed, false, WatchMode::Notify) => {
                (TreeWatch::Idle, Step::Report(Report::Occupied))
            }
        };
        self.set(next);
        step
    }

    /// The armed `POLLPRI` watch ended: it fired (`Ok`), was cancelled, or failed.
    pub(crate) fn poll_ended(&mut self, result: Result<(), i32>) -> Step {
        let TreeWatch::Polling { cancel } = *self else {
            return Step::Nothing;
        };
        match result {
            // Fired, even if a cancellation raced it: look once more, since the change may
            // be the tree emptying; `checked` then honours the cancellation.
            Ok(()) => {
                self.set(TreeWatch::Checking { cancel });
                Step::CheckNow
            }
            Err(_) if cancel => {
                self.set(TreeWatch::Idle);
                Step::Report(Report::Cancelled)
            }
            // Ended without our asking (an error, a cancellation by the kernel): nothing
            // will say when the tree empties.
            Err(_) => {
                self.set(TreeWatch::Idle);
                Step::Report(Report::Occupied)
            }
        }
    }

    /// The backoff after a populated probe is over.
    pub(crate) fn sleep_over(&mut self) -> Step {
        if *self != TreeWatch::Sleeping {
            return Step::Nothing;
        }
        self.set(TreeWatch::Checking { cancel: false });
        Step::LendProbe
    }
}

/// An input to a watch, for the fuzz target and the tests.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum WatchInput {
    /// The machine asks for a watch (`TreeWatch::start`).
    Start,
    /// The machine cancels the watch (`TreeWatch::cancel`).
    Cancel,
    /// A check or probe ended with this finding (`TreeWatch::checked`).
    Checked(Checked),
    /// The `POLLPRI` watch fired (`TreeWatch::poll_ended(Ok)`).
    PollFired,
    /// The `POLLPRI` watch ended cancelled (`ECANCELED`; only once its cancellation was
    /// sent, as the kernel does).
    PollCancelled,
    /// The `POLLPRI` watch ended with another error, or a cancellation nobody asked for.
    PollFailed,
    /// The backoff between two probes is over (`TreeWatch::sleep_over`).
    SleepOver,
}

/// Drives one watch through `inputs` the way the loop does (an input only arrives when the
/// watch's state allows it, as in the loop) and checks the contract; returns the number of
/// reports, or the first broken rule.
#[cfg(any(test, feature = "test-support"))]
pub fn check_sequence(mode: WatchMode, inputs: &[WatchInput]) -> Result<usize, String> {
    let mut watch = TreeWatch::Idle;
    let mut running = false;
    let mut cancel_asked = false;
    let mut poll_cancel_sent = false;
    let mut reports = 0;
    for (i, &input) in inputs.iter().enumerate() {
        let before = watch;
        let step = match input {
            WatchInput::Start => watch.start(mode),
            WatchInput::Cancel => watch.cancel(),
            WatchInput::Checked(found) => match watch {
                TreeWatch::Checking { .. } => watch.checked(mode, found),
                _ => continue,
            },
            WatchInput::PollFired | WatchInput::PollCancelled | WatchInput::PollFailed => {
                match watch {
                    TreeWatch::Polling { .. } => {}
                    _ => continue,
                }
                // The kernel reports ECANCELED only if a cancellation was sent.
                let result = match input {
                    WatchInput::PollFired => Ok(()),
                    WatchInput::PollCancelled if poll_cancel_sent => Err(libc::ECANCELED),
                    WatchInput::PollCancelled => continue,
                    _ => Err(libc::EIO),
                };
                poll_cancel_sent = false;
                watch.poll_ended(result)
            }
            WatchInput::SleepOver => watch.sleep_over(),
        };
        if input == WatchInput::Start && before.is_idle() {
            running = true;
            cancel_asked = false;
        }
        if input == WatchInput::Cancel && running {
            cancel_asked = true;
        }
        match step {
            Step::Report(report) => {
                if !running {
                    return Err(format!("input {i}: a report with no watch running"));
                }
                if cancel_asked && report == Report::Occupied {
                    return Err(format!("input {i}: cancelled watch reported occupied"));
                }
                running = false;
                reports += 1;
            }
            Step::ArmPoll | Step::LendProbe | Step::Sleep if cancel_asked => {
                return Err(format!("input {i}: {step:?} after a cancellation"));
            }
            Step::CancelPoll => {
                if poll_cancel_sent {
                    return Err(format!("input {i}: the poll cancelled twice"));
                }
                poll_cancel_sent = true;
            }
            Step::ArmPoll if mode != WatchMode::Notify => {
                return Err(format!("input {i}: a poll in probe mode"));
            }
            Step::LendProbe | Step::Sleep if mode != WatchMode::Probe => {
                return Err(format!("input {i}: a probe in notify mode"));
            }
            _ => {}
        }
        if running == watch.is_idle() {
            return Err(format!(
                "input {i}: state {watch:?} but a watch is {}running",
                if running { "" } else { "not " }
            ));
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbitrary::{Arbitrary, Unstructured};

    #[test]
    fn a_cancel_that_races_a_notification_is_not_lost() {
        let mut w = TreeWatch::Idle;
        assert_eq!(w.start(WatchMode::Notify), Step::CheckNow);
        assert_eq!(
            w.checked(WatchMode::Notify, Checked::Populated),
            Step::ArmPoll
        );
        assert_eq!(w.cancel(), Step::CancelPoll);
        // The poll fired before the cancellation reached it.
        assert_eq!(w.poll_ended(Ok(())), Step::CheckNow);
        assert_eq!(
            w.checked(WatchMode::Notify, Checked::Populated),
            Step::Report(Report::Cancelled)
        );
        assert!(w.is_idle());
    }

    #[test]
    fn empty_wins_over_a_cancellation() {
        let mut w = TreeWatch::Idle;
        assert_eq!(w.start(WatchMode::Probe), Step::LendProbe);
        assert_eq!(w.cancel(), Step::Nothing);
        assert_eq!(
            w.checked(WatchMode::Probe, Checked::Empty),
            Step::Report(Report::Empty)
        );
    }

    #[test]
    fn a_sleeping_probe_reports_a_cancellation_at_once() {
        let mut w = TreeWatch::Idle;
        let _ = w.start(WatchMode::Probe);
        assert_eq!(w.checked(WatchMode::Probe, Checked::Populated), Step::Sleep);
        assert_eq!(w.cancel(), Step::Report(Report::Cancelled));
        assert_eq!(
            w.sleep_over(),
            Step::Nothing,
            "a stale wake-up does nothing"
        );
    }

    #[test]
    fn a_failed_probe_is_retried_and_a_failed_check_ends_occupied() {
        let mut w = TreeWatch::Idle;
        let _ = w.start(WatchMode::Probe);
        assert_eq!(w.checked(WatchMode::Probe, Checked::Failed), Step::Sleep);
        assert_eq!(w.sleep_over(), Step::LendProbe);
        let mut w = TreeWatch::Idle;
        let _ = w.start(WatchMode::Notify);
        assert_eq!(
            w.checked(WatchMode::Notify, Checked::Failed),
            Step::Report(Report::Occupied)
        );
    }

    #[test]
    fn random_sequences_keep_the_contract() {
        // A deterministic generator: the same sequences on every run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut bytes = vec![0u8; 256];
        for _ in 0..20_000 {
            for b in bytes.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let mut u = Unstructured::new(&bytes);
            let mode = WatchMode::arbitrary(&mut u).unwrap_or(WatchMode::Notify);
            let inputs: Vec<WatchInput> = Vec::arbitrary(&mut u).unwrap_or_default();
            if let Err(broken) = check_sequence(mode, &inputs) {
                panic!("{mode:?} {inputs:?}: {broken}");
            }
        }
    }
}
