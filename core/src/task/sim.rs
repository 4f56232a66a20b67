//! Test support, not API: the scenario driver shared by the fuzz target (`fuzz/`), the
//! corpus replay and the random walk (`core/tests/task_fuzz_replay.rs`).
//!
//! A [`Scenario`] is a task setup, a sequence of (time advance, [`Input`]) steps fed as they
//! come (duplicated, stale, out of order, impossible, user requests at random times), then a
//! finishing phase that behaves like a real driver: it reaps the process, completes every
//! op in flight (EOF or the cancellation the machine asked for, the tree watch answer) and
//! runs the clock to each deadline, until `Release`. Everything runs under the
//! [`Checker`](super::invariants::Checker); a violation, or no `Release`, is a [`Failure`].

use std::fmt;
use std::time::{Duration, Instant};

use super::invariants::{Checked, Violation};
use super::{AfterExit, ExitStatus, Input, Op, StreamId, TaskConfig, TreeWatch, SIGKILL};

/// How the task is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Setup {
    /// `streams % 5` read streams, ids `0..n`; inputs name stream ids modulo `n + 2` (id `n`
    /// is an unknown stream, id `n + 1` stands for stdin).
    pub streams: u8,
    /// The last `duplex % (n + 1)` read streams are written too (framed channels).
    pub duplex: u8,
    /// Stdin is captured: a write-only stream.
    pub stdin: bool,
    /// [`TaskConfig::timeout`] in milliseconds (`None`: no timeout).
    pub timeout_ms: Option<u16>,
    /// [`TaskConfig::grace`] in milliseconds.
    pub grace_ms: u16,
    /// [`TaskConfig::drain`] in milliseconds.
    pub drain_ms: u16,
    /// [`TaskConfig::tree`].
    pub tree: TreeWatch,
    /// [`TaskConfig::after_exit`].
    pub after_exit: AfterExit,
    /// `Some(errno)`: the machine is `TaskMachine::spawn_failed`.
    pub spawn_failed: Option<i32>,
}

/// One step: advance the clock by `advance_ms`, then feed `input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Step {
    /// Milliseconds the clock moves before the input (0: the same instant).
    pub advance_ms: u16,
    /// The input, its stream ids mapped into the setup's (see [`Setup::streams`]).
    pub input: Input,
}

/// How the finishing driver behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Finish {
    /// The main process exits only once SIGKILL reached the tree (or no deadline is left).
    pub process_stubborn: bool,
    /// A descendant holds the pipes and lives on: reads end only by cancellation, the tree
    /// does not empty. With `AfterExit::KillTree` or a timeout, forever (the machine must end
    /// it); otherwise until no deadline is left.
    pub pipes_stubborn: bool,
    /// A process-group probe finds the tree occupied.
    pub probe_occupied: bool,
    /// Reads end with an I/O error instead of EOF.
    pub io_error: bool,
    /// Writes fail (`EPIPE`) instead of completing.
    pub write_fails: bool,
    /// Writes complete half of what is queued at a time.
    pub partial_writes: bool,
    /// The status of an exit not caused by SIGKILL.
    pub status: ExitStatus,
}

/// A whole fuzz case.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Scenario {
    /// The task's configuration.
    pub setup: Setup,
    /// How the finishing driver completes what is left.
    pub finish: Finish,
    /// The inputs fed before the finishing phase, in order, whatever the machine's state.
    pub steps: Vec<Step>,
}

/// A contract violation with the inputs that led to it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The broken rule.
    pub violation: Violation,
    /// The inputs fed, one a line with the time since the machine's creation.
    pub history: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task machine contract violated: {}\n  inputs (time since creation, input):\n{}",
            self.violation, self.history
        )
    }
}

impl std::error::Error for Failure {}

/// At most this many finishing inputs; every finishing input makes progress, so a machine
/// that needs more is stuck.
const FINISH_LIMIT: usize = 256;

impl Setup {
    fn stream_count(&self) -> u8 {
        self.streams % 5
    }

    /// The machine's [`TaskConfig`]: read streams `0..n`, the duplex ones and stdin
    /// writable, the durations in milliseconds.
    pub fn config(&self) -> TaskConfig {
        let n = self.stream_count();
        let duplex = self.duplex % (n + 1);
        let mut writable: Vec<StreamId> = (n - duplex..n).map(StreamId).collect();
        if self.stdin {
            writable.push(StreamId::STDIN);
        }
        TaskConfig {
            streams: (0..n).map(StreamId).collect(),
            writable,
            timeout: self.timeout_ms.map(|ms| Duration::from_millis(ms.into())),
            grace: Duration::from_millis(self.grace_ms.into()),
            drain: Duration::from_millis(self.drain_ms.into()),
            tree: self.tree,
            after_exit: self.after_exit,
        }
    }

    /// Maps the stream ids of `input` into `0..=n` and stdin.
    fn fix(&self, input: Input) -> Input {
        let n = self.stream_count();
        let fix = |s: StreamId| match s.0 % (n + 2) {
            k if k == n + 1 => StreamId::STDIN,
            k => StreamId(k),
        };
        match input {
            Input::Data { stream, len, more } => Input::Data {
                stream: fix(stream),
                len,
                more,
            },
            Input::Eof(s) => Input::Eof(fix(s)),
            Input::ReadStopped(s) => Input::ReadStopped(fix(s)),
            Input::IoError(s, e) => Input::IoError(fix(s), e),
            Input::Cancelled(Op::Read(s)) => Input::Cancelled(Op::Read(fix(s))),
            Input::Cancelled(Op::Write(s)) => Input::Cancelled(Op::Write(fix(s))),
            Input::Abort(s) => Input::Abort(fix(s)),
            Input::Write { stream, len } => Input::Write {
                stream: fix(stream),
                len,
            },
            Input::Written { stream, len } => Input::Written {
                stream: fix(stream),
                len,
            },
            Input::WriteFailed(s, e) => Input::WriteFailed(fix(s), e),
            other => other,
        }
    }
}

fn failure(c: &Checked, violation: Violation) -> Failure {
    Failure {
        violation,
        history: c.history_text(),
    }
}

/// Runs `scenario` from `base` (the creation time) under the checker, then finishes it like
/// a real driver. Ok when every invariant held and `Release` came exactly once.
pub fn run(scenario: &Scenario, base: Instant) -> Result<(), Failure> {
    let setup = &scenario.setup;
    let config = setup.config();
    let started = match setup.spawn_failed {
        Some(errno) => Checked::try_spawn_failed(config, errno, base),
        None => Checked::try_new(config, base),
    };
    let (mut c, _) = started.map_err(|violation| Failure {
        violation,
        history: String::new(),
    })?;
    let mut now = base;
    for step in &scenario.steps {
        now += Duration::from_millis(step.advance_ms.into());
        let input = setup.fix(step.input);
        if let Err(v) = c.try_feed(input, now) {
            return Err(failure(&c, v));
        }
    }
    for _ in 0..FINISH_LIMIT {
        if c.checker().released() {
            // After Release, everything is rejected and nothing comes out.
            for input in [
                Input::Kill,
                Input::Timeout,
                Input::ProcessExited(ExitStatus::Unknown),
            ] {
                if let Err(v) = c.try_feed(input, now) {
                    return Err(failure(&c, v));
                }
            }
            return c.finish().map_err(|v| failure(&c, v));
        }
        let Some(input) = next_finishing_input(&c, setup, &scenario.finish, &mut now) else {
            break;
        };
        if let Err(v) = c.try_feed(input, now) {
            return Err(failure(&c, v));
        }
    }
    Err(failure(&c, Violation::NotReleased))
}

/// What a real driver would feed next to bring the task to its end; `None` when nothing is
/// in flight and no deadline is armed (the machine is stuck).
fn next_finishing_input(
    c: &Checked,
    setup: &Setup,
    finish: &Finish,
    now: &mut Instant,
) -> Option<Input> {
    let k = c.checker();
    let deadline = c.machine().poll_timeout();
    let mut advance = |at: Instant| {
        *now = (*now).max(at);
        Some(Input::Timeout)
    };
    // The process exits (a stubborn one only when killed, or when nothing else will happen).
    if k.reaped().is_none()
        && k.wait_in_flight()
        && (!finish.process_stubborn || k.sigkill_sent() || deadline.is_none())
    {
        let status = if k.sigkill_sent() {
            ExitStatus::Signal(SIGKILL)
        } else {
            finish.status
        };
        return Some(Input::ProcessExited(status));
    }
    // The cancellations (and flow-control stops) the machine asked for complete.
    if let Some(s) = k.stream_ids().find(|&s| k.read_cancel_sent(s)) {
        return Some(Input::Cancelled(Op::Read(s)));
    }
    if let Some(s) = k.stream_ids().find(|&s| k.write_cancel_sent(s)) {
        return Some(Input::Cancelled(Op::Write(s)));
    }
    // The application catches up with its events.
    if k.paused() {
        return Some(Input::Resume);
    }
    // Writes in flight end.
    if let Some(s) = k.stream_ids().find(|&s| k.write_in_flight(s)) {
        if finish.write_fails {
            return Some(Input::WriteFailed(s, 32));
        }
        let queued = k.queued(s);
        let len = if finish.partial_writes && queued > 1 {
            queued / 2
        } else {
            queued
        };
        return Some(Input::Written {
            stream: s,
            len: len.min(u64::from(u32::MAX)) as u32,
        });
    }
    if k.watch_cancel_sent() {
        return Some(Input::Cancelled(Op::TreeWatch));
    }
    // A probe answers at once.
    if k.watch_in_flight() && k.tree_mode() == TreeWatch::ProbeOnce {
        let occupied = finish.probe_occupied || (finish.pipes_stubborn && !k.sigkill_sent());
        return Some(if occupied {
            Input::TreeOccupied
        } else {
            Input::TreeEmpty
        });
    }
    // Stubborn descendants or process: only time moves things while a deadline is armed.
    if let Some(at) = deadline {
        if finish.pipes_stubborn || (finish.process_stubborn && k.reaped().is_none()) {
            return advance(at);
        }
    }
    // With the drain policy `KillTree` or a task timeout, stubborn descendants are a bounded
    // case (contract item 5): they never let go on their own, the machine must end them.
    let bounded = setup.after_exit == AfterExit::KillTree || setup.timeout_ms.is_some();
    if finish.pipes_stubborn && bounded && k.reaped().is_some() {
        return deadline.and_then(advance);
    }
    if let Some(s) = k.stream_ids().find(|&s| k.read_in_flight(s)) {
        return Some(if finish.io_error {
            Input::IoError(s, 5)
        } else {
            Input::Eof(s)
        });
    }
    if k.watch_in_flight() {
        return Some(Input::TreeEmpty);
    }
    if k.reaped().is_none() && k.wait_in_flight() {
        return Some(Input::ProcessExited(finish.status));
    }
    deadline.and_then(advance)
}

/// A tiny deterministic PRNG (splitmix64) for the random walk.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with a probability of about `percent` in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_status(r: &mut SplitMix64) -> ExitStatus {
    match r.below(4) {
        0 => ExitStatus::Code(0),
        1 => ExitStatus::Code(r.below(256) as i32),
        2 => ExitStatus::Signal(1 + r.below(31) as i32),
        _ => ExitStatus::Unknown,
    }
}

/// The scenario of random-walk number `seed`: a random setup and 0–47 random steps, biased
/// toward the events a real driver produces.
pub fn random_scenario(seed: u64) -> Scenario {
    let mut r = SplitMix64(seed);
    let n = [0u8, 1, 2, 2, 3, 4][r.below(6) as usize];
    let setup = Setup {
        streams: n,
        duplex: r.below(3) as u8,
        stdin: r.chance(40),
        timeout_ms: r.chance(40).then(|| r.below(20_000) as u16),
        grace_ms: if r.chance(10) {
            0
        } else {
            r.below(6_000) as u16
        },
        drain_ms: if r.chance(10) {
            0
        } else {
            r.below(3_000) as u16
        },
        tree: [TreeWatch::None, TreeWatch::ProbeOnce, TreeWatch::Notifies][r.below(3) as usize],
        after_exit: if r.chance(50) {
            AfterExit::KillTree
        } else {
            AfterExit::DrainUntilEof
        },
        spawn_failed: r.chance(2).then_some(2),
    };
    let finish = Finish {
        process_stubborn: r.chance(25),
        pipes_stubborn: r.chance(30),
        probe_occupied: r.chance(30),
        io_error: r.chance(10),
        write_fails: r.chance(15),
        partial_writes: r.chance(30),
        status: random_status(&mut r),
    };
    let len = r.below(48) as usize;
    let mut steps = Vec::with_capacity(len);
    for _ in 0..len {
        let advance_ms = match r.below(10) {
            0..=6 => r.below(50),
            7 | 8 => r.below(2_000),
            _ => r.below(20_000),
        } as u16;
        let stream = StreamId(r.below(u64::from(n) + 2) as u8);
        let input = match r.below(130) {
            0..=24 => Input::Data {
                stream,
                len: r.below(65_536) as u32,
                more: r.chance(70),
            },
            25..=34 => Input::Eof(stream),
            35..=38 => Input::ReadStopped(stream),
            39..=41 => Input::IoError(stream, 5),
            42..=46 => Input::Cancelled(match r.below(5) {
                0 => Op::Wait,
                1 => Op::TreeWatch,
                2 => Op::Write(stream),
                _ => Op::Read(stream),
            }),
            47..=55 => Input::ProcessExited(random_status(&mut r)),
            56..=60 => Input::TreeEmpty,
            61..=64 => Input::TreeOccupied,
            65..=82 => Input::Timeout,
            83..=86 => Input::Signal(r.below(32) as i32),
            87..=93 => Input::Terminate,
            94..=99 => Input::Kill,
            100..=106 => Input::Pause,
            107..=112 => Input::Resume,
            113 => Input::Abort(stream),
            114..=119 => Input::Write {
                stream,
                len: r.below(100_000) as u32,
            },
            120..=121 => Input::CloseStdin,
            122..=127 => Input::Written {
                stream,
                len: r.below(100_000) as u32,
            },
            _ => Input::WriteFailed(stream, 32),
        };
        steps.push(Step { advance_ms, input });
    }
    Scenario {
        setup,
        finish,
        steps,
    }
}

/// Decodes fuzz bytes the way `libfuzzer_sys::fuzz_target!(|s: Scenario| ..)` does.
#[cfg(feature = "arbitrary")]
pub fn decode(bytes: &[u8]) -> Option<Scenario> {
    use arbitrary::{Arbitrary, Unstructured};
    if bytes.len() < Scenario::size_hint(0).0 {
        return None;
    }
    Scenario::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}
