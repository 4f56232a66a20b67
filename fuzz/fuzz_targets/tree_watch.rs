//! Feeds arbitrary sequences of inputs (start, cancel, check results, the poll's ends, the
//! backoff's end) to the worker's tree-watch state machine, the way the worker loop can
//! deliver them, and fails on any broken rule: a report with no watch running, a cancelled
//! watch reported occupied, a poll or probe armed after a cancellation, a poll cancelled
//! twice, a state that disagrees with whether a watch runs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pidring::__private::tree_watch::{check_sequence, WatchInput, WatchMode};

fuzz_target!(|input: (WatchMode, Vec<WatchInput>)| {
    let (mode, inputs) = input;
    if let Err(broken) = check_sequence(mode, &inputs) {
        panic!("{mode:?} {inputs:?}: {broken}");
    }
});
