//! Soaks: many spawn → output → exit cycles through one pool, and as many tasks killed in the
//! middle of their output. The process fd count and RSS must stay flat, no zombie or cgroup
//! may be left, and every task must get exactly one `Done`.
//!
//! `PIDRING_SOAK_CYCLES` sets the number of spawn → output → exit cycles (default 2,000,
//! what CI runs; the full figure is 100,000: `PIDRING_SOAK_CYCLES=100000 cargo test
//! --release -p pidring-tests --test soak -- --nocapture`); the killed soak runs a quarter as
//! many tasks (each writes as fast as it can until it is killed).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pidring::{Event, ExitStatus, Pool, Reason, TaskId};
use pidring_tests::*;

/// Tasks in flight at once.
const IN_FLIGHT: usize = 64;
/// Bytes each task of the first soak writes.
const OUTPUT: usize = 300;

fn cycles() -> usize {
    std::env::var("PIDRING_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Cgroups this process's pools made, anywhere in the cgroup mounts.
fn our_cgroups() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, prefix: &str, found: &mut Vec<std::path::PathBuf>, depth: u32) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || depth > 6 {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(path);
            } else {
                walk(&path, prefix, found, depth + 1);
            }
        }
    }
    let prefix = format!("pidring-{}-", std::process::id());
    let mut found = Vec::new();
    walk(
        std::path::Path::new("/sys/fs/cgroup"),
        &prefix,
        &mut found,
        0,
    );
    found
}

/// One sample of the supervisor's resources, printed as the soak goes.
struct Sample {
    done: usize,
    fds: usize,
    rss_kib: u64,
}

/// Runs `total` tasks, `IN_FLIGHT` at a time; `on_event` sees every event and may act on
/// the task (kill it). Returns the samples taken every tenth of the run.
fn soak(
    pool: &Pool,
    total: usize,
    spec: impl Fn() -> pidring::TaskSpec,
    mut check_done: impl FnMut(TaskId, usize, &pidring::Outcome),
    mut on_output: impl FnMut(&pidring::TaskHandle),
) -> Vec<Sample> {
    let mut handles: HashMap<TaskId, pidring::TaskHandle> = HashMap::new();
    // Bytes seen per task, each checked against the helper's pattern as it arrives (the
    // soak keeps no output: the RSS it samples is the supervisor's).
    let mut output: HashMap<TaskId, usize> = HashMap::new();
    let mut done_ids: HashSet<TaskId> = HashSet::new();
    let mut spawned = 0;
    let mut samples = Vec::new();
    let every = (total / 10).max(1);
    let deadline = Instant::now() + Duration::from_secs(600);
    while done_ids.len() < total {
        while spawned < total && handles.len() < IN_FLIGHT {
            let handle = pool.spawn(spec()).expect("spawn");
            handles.insert(handle.id(), handle);
            spawned += 1;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let event = pool
            .events()
            .recv_timeout(left)
            .expect("the soak stalled: no event");
        match event {
            Event::Output { task, bytes, .. } => {
                if let Some(handle) = handles.get(&task) {
                    on_output(handle);
                }
                let seen = output.entry(task).or_default();
                let at = *seen;
                assert!(
                    bytes
                        .iter()
                        .enumerate()
                        .all(|(i, &b)| b == b'a' + ((at + i) % 26) as u8),
                    "{task}: output differs from the pattern after byte {at}"
                );
                *seen += bytes.len();
            }
            Event::Exited { .. } => {}
            Event::Done { task, outcome } => {
                assert!(done_ids.insert(task), "{task}: a second Done");
                let bytes = output.remove(&task).unwrap_or_default();
                check_done(task, bytes, &outcome);
                handles
                    .remove(&task)
                    .expect("Done for a task never spawned");
                if done_ids.len().is_multiple_of(every) {
                    samples.push(Sample {
                        done: done_ids.len(),
                        fds: fd_count(),
                        rss_kib: rss_kib(),
                    });
                }
            }
            other => panic!("an event the soak never asked for: {other:?}"),
        }
    }
    samples
}

/// Prints the samples and checks that fds and RSS stayed flat after the warm-up (the
/// first tenth, while allocator pools and the slab reach their working size).
fn assert_flat(name: &str, samples: &[Sample]) {
    for s in samples {
        eprintln!(
            "{name}: {:>7} done, {:>4} fds, RSS {:>7} KiB",
            s.done, s.fds, s.rss_kib
        );
    }
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return;
    };
    assert!(
        last.fds <= first.fds + 4,
        "{name}: fd count grew from {} to {}",
        first.fds,
        last.fds
    );
    // Flat: growth bounded by a constant, not by the number of tasks.
    assert!(
        last.rss_kib <= first.rss_kib + 16 * 1024,
        "{name}: RSS grew from {} KiB to {} KiB",
        first.rss_kib,
        last.rss_kib
    );
}

fn spawn_output_exit_cycles() {
    let _serial = serial();
    let fds = fd_count();
    let total = cycles();
    let started = Instant::now();
    {
        let pool = builder().workers(2).build().expect("pool");
        let samples = soak(
            &pool,
            total,
            || helper(&[&format!("out={OUTPUT}"), "exit=3"]),
            |task, bytes, outcome| {
                assert_eq!(bytes, OUTPUT, "{task}: output length");
                assert_eq!(outcome.reason, Reason::Exited(3), "{task}");
            },
            |_| {},
        );
        eprintln!(
            "soak ({:?}, {:?}): {total} spawn → output → exit cycles in {:.1?}",
            pool.backend(),
            pool.containment(),
            started.elapsed()
        );
        assert_flat("cycles", &samples);
        pool.shutdown();
    }
    assert_clean_and_no_cgroup(fds);
}

fn tasks_killed_in_the_middle_of_their_output() {
    let _serial = serial();
    let fds = fd_count();
    let total = (cycles() / 4).max(1);
    let started = Instant::now();
    {
        let pool = builder().workers(2).build().expect("pool");
        let mut killed: HashSet<TaskId> = HashSet::new();
        let samples = soak(
            &pool,
            total,
            // Writes far more than a pipe holds: it is killed while it writes.
            || helper(&["out=1000000000"]),
            |task, bytes, outcome| {
                assert!(bytes > 0, "{task}: killed before any output");
                assert_eq!(outcome.status, ExitStatus::Signal(9), "{task}");
                assert_eq!(outcome.reason, Reason::Terminated, "{task}");
            },
            |handle| {
                if killed.insert(handle.id()) {
                    handle.kill().expect("kill");
                }
            },
        );
        eprintln!(
            "soak ({:?}, {:?}): {total} tasks killed mid-output in {:.1?}",
            pool.backend(),
            pool.containment(),
            started.elapsed()
        );
        assert_flat("killed", &samples);
        pool.shutdown();
    }
    assert_clean_and_no_cgroup(fds);
}

fn assert_clean_and_no_cgroup(fds_before: usize) {
    assert_clean(fds_before);
    assert_eq!(
        our_cgroups(),
        Vec::<std::path::PathBuf>::new(),
        "cgroups left"
    );
}

on_both_backends!(
    spawn_output_exit_cycles,
    tasks_killed_in_the_middle_of_their_output
);
