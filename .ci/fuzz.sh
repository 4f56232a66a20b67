#!/usr/bin/env bash
# Fuzzes the task state machine (fuzz/fuzz_targets/task_machine.rs) for two thirds of $1
# seconds (default 60) and the worker's tree-watch machine (fuzz_targets/tree_watch.rs) for
# the rest, with the nightly toolchain; fails if the fuzzer finds a crash or a contract
# violation. Installs cargo-fuzz when it is missing.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The fuzzer needs nightly. A machine without it still checks every invariant through the
# stable replay and random walk (core/tests/task_fuzz_replay.rs), so say so and skip.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: SKIP: no nightly toolchain here (rustup toolchain install nightly); the stable replay test still ran" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
# Each target works on a scratch copy of its committed seed corpus so the run does not grow
# the repo. libFuzzer exits non-zero on a crash, a panic (contract violation) or a leak; the
# crashing input is saved under fuzz/artifacts/<target>/.
fuzz_one() {
    local target="$1" secs="$2" work
    work="$(mktemp -d)"
    cp -r "corpus/$target/." "$work/"
    cargo +nightly fuzz run "$target" "$work" -- \
        -max_total_time="$secs" -print_final_stats=1
    rm -rf "$work"
}
fuzz_one task_machine $(( seconds * 2 / 3 ))
fuzz_one tree_watch $(( seconds - seconds * 2 / 3 ))
