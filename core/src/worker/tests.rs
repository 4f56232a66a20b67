//! The worker loop's rare paths as ordinary tests: the real loop, real processes, and a
//! driver that fails on demand (`driver::faulty`). Each runs on both drivers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::driver::faulty::Faults;
use crate::{Backend, Containment, Event, ExitStatus, Pool, Reason, SpawnError, TaskId, TaskSpec};

const LIMIT: Duration = Duration::from_secs(60);

/// Tests that start processes share the process's children and fd table: one at a time,
/// with every other such test of the crate.
use crate::sys::spawn::test_util::serial;

fn pool(backend: Backend, containment: Containment, faults: &Arc<Faults>) -> Option<Pool> {
    match Pool::builder()
        .workers(1)
        .backend(backend)
        .containment(containment)
        .faults(Arc::clone(faults))
        .build()
    {
        Ok(pool) => Some(pool),
        Err(crate::BuildError::Containment(e)) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIP: {e}");
            None
        }
        Err(e) => panic!("pool: {e}"),
    }
}

/// Every event until each of `ids` is `Done`; panics on a second `Done` or a timeout.
fn collect(pool: &Pool, ids: &[TaskId]) -> HashMap<TaskId, Vec<Event>> {
    let mut events: HashMap<TaskId, Vec<Event>> = HashMap::new();
    let mut done = 0;
    let deadline = Instant::now() + LIMIT;
    while done < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = pool
            .events()
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {done} of {} tasks done", ids.len()));
        let task = event.task();
        let list = events.entry(task).or_default();
        assert!(
            !list.iter().any(|e| matches!(e, Event::Done { .. })),
            "{task}: an event after Done: {event:?}"
        );
        if matches!(event, Event::Done { .. }) {
            done += 1;
        }
        list.push(event);
    }
    events
}

fn outcome(events: &[Event]) -> &crate::Outcome {
    match events.last() {
        Some(Event::Done { outcome, .. }) => outcome,
        other => panic!("last event is not Done: {other:?}"),
    }
}

fn stdout(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Output { bytes, .. } => Some(bytes.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Zombie children of this process (a task that was never reaped).
fn zombies() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
            let mut it = rest.split(' ');
            it.next() == Some("Z") && it.next() == Some(me.as_str())
        })
        .count()
}

fn both(test: impl Fn(Backend)) {
    let _serial = serial();
    for backend in [Backend::Uring, Backend::Epoll] {
        test(backend);
    }
}

#[test]
fn lends_that_fail_are_retried_until_every_task_is_reaped_and_killed() {
    both(|backend| {
        let faults = Arc::new(Faults::default());
        faults.failing_lends.store(40, Ordering::Relaxed);
        let Some(pool) = pool(backend, Containment::ProcessGroup, &faults) else {
            return;
        };
        let mut ids = Vec::new();
        for i in 0..8 {
            let spec = TaskSpec::new("sh").args(["-c", &format!("echo {i}; exit {i}")]);
            ids.push(pool.spawn(spec).unwrap().id());
        }
        let sleepers: Vec<_> = (0..8)
            .map(|_| pool.spawn(TaskSpec::new("sleep").arg("600")).unwrap())
            .collect();
        for s in &sleepers {
            s.kill().unwrap();
        }
        ids.extend(sleepers.iter().map(|s| s.id()));
        let events = collect(&pool, &ids);
        for (i, id) in ids.iter().take(8).enumerate() {
            assert_eq!(stdout(&events[id]), format!("{i}\n").as_bytes());
            assert_eq!(outcome(&events[id]).status, ExitStatus::Code(i as i32));
        }
        for s in &sleepers {
            assert_eq!(outcome(&events[&s.id()]).status, ExitStatus::Signal(9));
        }
        assert!(faults.lends_failed.load(Ordering::Relaxed) > 0);
        assert!(pool.stats().driver_retries > 0, "{:?}", pool.stats());
        pool.shutdown();
        assert_eq!(zombies(), 0, "{backend:?}: a task was never reaped");
    });
}

#[test]
fn a_tree_watch_cancel_that_loses_its_race_still_ends_the_task() {
    both(|backend| {
        let faults = Arc::new(Faults::default());
        faults.cancels_lose_race.store(true, Ordering::Relaxed);
        faults.swallow_notifications.store(true, Ordering::Relaxed);
        let Some(pool) = pool(backend, Containment::Cgroup, &faults) else {
            return;
        };
        // The runner exits and leaves a child behind (ignoring SIGTERM), which is killed after
        // the drain and grace. The watch's notification is lost, so the wait for the tree's
        // emptiness runs out and the watch is cancelled; that cancellation loses its race
        // with the watch's own end.
        let task = pool
            .spawn(
                TaskSpec::new("sh")
                    .args(["-c", "trap '' TERM; sleep 600 >/dev/null 2>&1 & exit 0"])
                    .drain(Duration::from_millis(50))
                    .grace(Duration::from_millis(50)),
            )
            .unwrap();
        let events = collect(&pool, &[task.id()]);
        let outcome = outcome(&events[&task.id()]);
        assert_eq!(outcome.reason, Reason::DrainExpired);
        assert!(outcome.tree_signalled);
        assert!(faults.races_lost.load(Ordering::Relaxed) > 0, "{backend:?}");
        pool.shutdown();
        assert_eq!(zombies(), 0);
    });
}

#[test]
fn duplicated_and_stale_completions_are_ignored() {
    both(|backend| {
        let faults = Arc::new(Faults::default());
        faults.replay.store(true, Ordering::Relaxed);
        let Some(pool) = pool(backend, Containment::ProcessGroup, &faults) else {
            return;
        };
        let mut ids = Vec::new();
        for round in 0..10 {
            let mut batch = Vec::new();
            for i in 0..20 {
                let n = round * 20 + i;
                let spec = TaskSpec::new("sh").args(["-c", &format!("echo {n}")]);
                batch.push(pool.spawn(spec).unwrap().id());
            }
            let events = collect(&pool, &batch);
            for (i, id) in batch.iter().enumerate() {
                let n = round * 20 + i;
                assert_eq!(stdout(&events[id]), format!("{n}\n").as_bytes());
                assert_eq!(outcome(&events[id]).reason, Reason::Exited(0));
            }
            ids.extend(batch);
        }
        // Replays of released tasks arrive later: give them time, then look again.
        std::thread::sleep(Duration::from_millis(200));
        let stats = pool.stats();
        assert!(faults.replayed.load(Ordering::Relaxed) > 0);
        assert!(
            stats.stale_completions > 0 && stats.rejected_events > 0,
            "{backend:?}: {stats:?}"
        );
        assert!(pool.events().try_recv().is_err(), "an event after Done");
        pool.shutdown();
        assert_eq!(zombies(), 0);
    });
}

#[test]
fn a_panicking_callback_does_not_stop_the_pool_and_spawn_from_it_is_refused() {
    both(|backend| {
        let done = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicBool::new(false));
        // The callback reaches the pool through a weak reference: no cycle keeps it alive.
        let cell: Arc<OnceLock<std::sync::Weak<Pool>>> = Arc::new(OnceLock::new());
        let pool = {
            let (done, refused, cell) = (done.clone(), refused.clone(), cell.clone());
            Pool::builder()
                .workers(1)
                .backend(backend)
                .on_event(move |event| match event {
                    Event::Exited { .. } => panic!("a callback that panics"),
                    Event::Done { .. } => {
                        if let Some(pool) = cell.get().and_then(|w| w.upgrade()) {
                            let r = pool.spawn(TaskSpec::new("true"));
                            if matches!(r, Err(SpawnError::FromCallback)) {
                                refused.store(true, Ordering::Relaxed);
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                })
                .build()
                .unwrap()
        };
        let pool = Arc::new(pool);
        let _ = cell.set(Arc::downgrade(&pool));
        for _ in 0..5 {
            pool.spawn(TaskSpec::new("true")).unwrap();
        }
        let deadline = Instant::now() + LIMIT;
        while done.load(Ordering::Relaxed) < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(Ordering::Relaxed), 5);
        assert!(refused.load(Ordering::Relaxed));
        assert_eq!(pool.stats().callback_panics, 5);
        drop(pool);
        assert_eq!(zombies(), 0);
    });
}

#[test]
fn a_stale_handle_never_reaches_the_task_that_reuses_its_slot() {
    both(|backend| {
        let faults = Arc::new(Faults::default());
        let Some(pool) = pool(backend, Containment::ProcessGroup, &faults) else {
            return;
        };
        let first = pool.spawn(TaskSpec::new("true")).unwrap();
        let _ = collect(&pool, &[first.id()]);
        let second = pool.spawn(TaskSpec::new("sleep").arg("600")).unwrap();
        let (a, b) = (first.shared(), second.shared());
        assert_eq!(b.slot, a.slot, "the slab reuses the freed slot");
        // A handle of the first task that names the second's slot, as one would after its
        // 16-bit slot generation wrapped: only the full id tells them apart.
        let stale =
            crate::TaskHandle::from_shared(Arc::new(crate::worker::shared::TaskShared::new(
                first.id(),
                b.slot,
                Arc::clone(&b.worker),
                crate::worker::shared::SharedSetup {
                    pid: first.pid(),
                    budget: 1 << 20,
                    stdin: false,
                    channels: 0,
                    first_channel: 2,
                    max_frame: 1 << 20,
                    pool: Arc::clone(&b.pool),
                },
            )));
        stale.kill().unwrap();
        stale.terminate().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            pool.events().try_recv().is_err(),
            "{backend:?}: the stale handle reached the second task"
        );
        second.kill().unwrap();
        let events = collect(&pool, &[second.id()]);
        assert_eq!(outcome(&events[&second.id()]).status, ExitStatus::Signal(9));
        pool.shutdown();
    });
}
