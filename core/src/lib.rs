//! pidring: supervise thousands of child processes on Linux, and never lose one.
//!
//! A [`Pool`] runs one io_uring ring per worker thread. Each ring multiplexes the pipes and
//! pidfds of its tasks; a per-task state machine ([`task::TaskMachine`]) decides what
//! happens, and releases a task's resources only in its terminal state. Every signal goes
//! through a pidfd, and a kill reaches the whole tree (a cgroup v2 per task, or the task's
//! own process group).
//!
//! ```no_run
//! use pidring::{Event, Pool, TaskSpec};
//!
//! let pool = Pool::builder().build()?;
//! let task = pool.spawn(TaskSpec::new("echo").arg("hello"))?;
//! for event in pool.events() {
//!     match event {
//!         Event::Output { bytes, .. } => print!("{}", String::from_utf8_lossy(&bytes)),
//!         Event::Done { task: id, outcome } if id == task.id() => {
//!             println!("{id} ended: {:?}", outcome.reason);
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Cargo features
//!
//! Both are off by default, and neither is needed to supervise processes.
//! - `arbitrary`: derives [`arbitrary::Arbitrary`](https://docs.rs/arbitrary) for the state
//!   machine's inputs ([`task::Input`], [`task::TaskConfig`], [`StreamId`], ...), so a fuzzer
//!   can generate them.
//! - `test-support` (implies `arbitrary`): test support, **not a stable API**. It adds
//!   `task::sim` (the scenario driver shared by the `task_machine` fuzz target and
//!   `core/tests/task_fuzz_replay.rs`), `task::invariants` (the checker of the task
//!   machine's contract) and the hidden `pidring::__private` (worker internals for the
//!   criterion benches and the `tree_watch` fuzz target), and
//!   `PoolBuilder::simulate_uring_probe` with its `UringProbe` (a pool told what the io_uring
//!   probe found: a refused ring, a missing opcode). The fuzz crate, the benches and the
//!   integration tests enable it; this crate's own tests get it through a dev-dependency on itself, so plain
//!   `cargo test --workspace` runs everything while release builds leave it off.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod child;
pub mod containment;
mod error;
mod event;
mod pool;
mod spec;
mod sys;
pub mod task;
mod worker;

/// The README's examples, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Worker internals for the criterion benches (`benches/`) and the `tree_watch` fuzz target;
/// not a stable API. Only with the `test-support` feature.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod __private {
    pub use crate::worker::user_data;
    /// The worker's tree-watch state machine, for the fuzz target.
    pub mod tree_watch {
        pub use crate::worker::tree_watch::{check_sequence, Checked, WatchInput, WatchMode};
    }
}

pub use containment::{Containment, ContainmentError, ContainmentKind};
pub use error::{BuildError, ControlError, SpawnError, WriteError};
pub use event::{ChannelEnd, Chunk, Event, TaskId};
pub use pool::{
    Backend, BackendKind, Pool, PoolBuilder, PoolStats, TaskHandle, DEFAULT_TASK_BUDGET,
};
pub use spec::{AfterExit, Limits, Session, Stdio, TaskSpec, DEFAULT_MAX_FRAME};
pub use sys::spawn::{spawn_method, SpawnMethod, SPAWN_METHOD_VAR};
pub use task::{ExitStatus, Outcome, Reason, StreamId};
#[cfg(feature = "test-support")]
pub use worker::driver::select::UringProbe;
