//! Feeds arbitrary scenarios (a task setup, then (time advance, input) steps: duplicated,
//! stale, out of order, impossible, user requests at random times) to the task state
//! machine under the invariant checker, then finishes each like a real driver would, and
//! fails on any contract violation or a missing `Release`.
//! The driver is `pidring::task::sim`, shared with the stable replay test
//! (`core/tests/task_fuzz_replay.rs`), which replays `fuzz/corpus/task_machine/`.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use pidring::task::sim::{self, Scenario};

static BASE: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|scenario: Scenario| {
    let base = *BASE.get_or_init(Instant::now);
    if let Err(failure) = sim::run(&scenario, base) {
        panic!("{failure}\n{scenario:#?}");
    }
});
