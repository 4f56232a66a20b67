//! Spawner threads and the worker around them, on real processes, with the test-only stall
//! point (a child waiting just before `execve`, as one on a hung mount would).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::containment::{Containment, PoolContainment};
use crate::event::Event;
use crate::pool::Pool;
use crate::spec::{Stdio, TaskSpec};
use crate::sys::spawn::test_util::{alive, eventually, release_stall, serial, zombie_children};
use crate::sys::spawn::{prepare, TEST_STALL};
use crate::task::Reason;

const T: Duration = Duration::from_secs(20);

fn stall_on() {
    TEST_STALL.store(1, Ordering::Release);
}

fn stalled_spec() -> TaskSpec {
    TaskSpec::new("/bin/echo")
        .arg("released")
        .env("PIDRING_TEST_STALL", "1")
}

fn request(id: u64, spec: &TaskSpec) -> SpawnRequest {
    SpawnRequest {
        id: TaskId(id),
        prepared: Box::new(prepare(spec).unwrap()),
        limits: spec.limits,
    }
}

/// A spawner of its own, process-group containment; `wakes` counts its wake calls.
fn spawner(orphans: Option<Arc<OrphanSweep>>) -> (Spawner<u64>, SpawnQueue<u64>, Arc<AtomicUsize>) {
    let containment = Arc::new(PoolContainment::new(Containment::ProcessGroup).unwrap());
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&wakes);
    let null = Arc::new(crate::sys::spawn::open_dev_null().unwrap());
    let (spawner, queue) = Spawner::start(0, containment, null, orphans, move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    (spawner, queue, wakes)
}

/// The pid of the child a spawner thread is cloning, once there is one.
fn in_flight_pid(spawner: &Spawner<u64>) -> Option<i32> {
    spawner.shared.in_flight.iter().find_map(|r| r.pid())
}

fn finished(spawner: &Spawner<u64>) -> Option<SpawnDone<u64>> {
    let mut out = None;
    eventually(T, || {
        out = spawner.try_finished();
        out.is_some()
    });
    out
}

fn kill_and_reap(started: Started) {
    let _ = crate::sys::pidfd::send_signal(
        std::os::fd::AsFd::as_fd(&started.pidfd),
        libc::SIGKILL,
        false,
    );
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(&started.pidfd)),
        rustix::process::WaitIdOptions::EXITED,
    );
}

#[test]
fn a_stuck_spawn_does_not_hold_up_the_next() {
    let _g = serial();
    stall_on();
    let (spawner, queue, wakes) = spawner(None);
    queue.submit(request(1, &stalled_spec()), 1);
    assert!(eventually(T, || in_flight_pid(&spawner).is_some()));
    let stuck = in_flight_pid(&spawner).unwrap();
    // The other spawner thread takes the next spawn while the first child is stuck.
    queue.submit(request(2, &TaskSpec::new("/bin/true")), 2);
    let done = finished(&spawner).expect("the second spawn finishes");
    assert_eq!((done.id, done.carry), (TaskId(2), 2));
    kill_and_reap(done.result.unwrap());
    assert!(alive(stuck), "the first is still stuck");
    assert_eq!(spawner.pending(), 1);
    release_stall();
    let done = finished(&spawner).expect("the released spawn finishes");
    assert_eq!(done.id, TaskId(1));
    let started = done.result.unwrap();
    assert_eq!(started.pid, stuck);
    kill_and_reap(started);
    assert_eq!(spawner.pending(), 0);
    assert_eq!(
        wakes.load(Ordering::SeqCst),
        2,
        "one wake per finished spawn"
    );
    drop(spawner);
    assert!(zombie_children().is_empty());
}

#[test]
fn closing_or_dropping_the_spawner_kills_a_stuck_child() {
    let _g = serial();
    for drop_it in [false, true] {
        stall_on();
        let (spawner, queue, _) = spawner(None);
        queue.submit(request(1, &stalled_spec()), 1);
        assert!(eventually(T, || in_flight_pid(&spawner).is_some()));
        let stuck = in_flight_pid(&spawner).unwrap();
        if drop_it {
            // Must not hang: the stuck child is killed, the threads end.
            drop(spawner);
            // Submitting afterwards fails like any spawn, without a thread to take it.
            queue.submit(request(2, &TaskSpec::new("/bin/true")), 2);
        } else {
            spawner.close();
            let done = finished(&spawner).unwrap();
            assert!(
                matches!(
                    done.result,
                    Err(SpawnError::Setup {
                        step: "starting",
                        ..
                    })
                ),
                "{:?}",
                done.result.err()
            );
            // Closed: a new spawn fails at once, and no child is made.
            queue.submit(request(3, &TaskSpec::new("/bin/true")), 3);
            let done = finished(&spawner).unwrap();
            assert!(matches!(done.result, Err(SpawnError::PoolClosed)));
        }
        assert!(eventually(T, || !alive(stuck)));
        release_stall();
    }
    assert!(zombie_children().is_empty());
}

/// A subreaper's orphan sweep must tell runners from orphans at every moment: a runner is
/// known while it is being cloned (its pid published by the kernel), and after.
#[test]
fn runners_are_known_from_the_clone_on() {
    let _g = serial();
    stall_on();
    let containment = PoolContainment::new(Containment::ProcessGroup).unwrap();
    let runners = Arc::new(OrphanSweep::new(&containment).unwrap());
    let (spawner, queue, _) = spawner(Some(Arc::clone(&runners)));
    queue.submit(request(1, &stalled_spec()), 1);
    assert!(eventually(T, || in_flight_pid(&spawner).is_some()));
    let pid = in_flight_pid(&spawner).unwrap();
    assert!(runners.is_runner(pid), "while cloning");
    assert!(!runners.is_runner(1));
    release_stall();
    let started = finished(&spawner).unwrap().result.unwrap();
    assert_eq!(in_flight_pid(&spawner), None, "settled");
    assert!(runners.is_runner(pid), "registered");
    kill_and_reap(started);
    runners.runner_reaped(pid);
    assert!(!runners.is_runner(pid));
    // The sweep made this process a subreaper: later tests must not inherit orphans.
    crate::containment::stop_being_subreaper().unwrap();
}

/// While one spawn is stuck before exec, the worker's other tasks time out, are killed and
/// deliver their output, and new spawns start: everything below happens before the stuck
/// spawn is released (each wait would otherwise run into the stall and fail).
#[test]
fn a_stuck_spawn_never_stops_the_worker() {
    let _g = serial();
    stall_on();
    let pool = Pool::builder().workers(1).build().unwrap();
    let events = pool.events().clone();
    let timed = pool
        .spawn(
            TaskSpec::new("/bin/sh")
                .arg("-c")
                .arg("echo before; sleep 0.3; echo after; exec sleep 60")
                .timeout(Duration::from_millis(800))
                .grace(Duration::from_millis(100)),
        )
        .unwrap();
    let killed = pool
        .spawn(TaskSpec::new("sleep").arg("60").stdout(Stdio::Null))
        .unwrap();
    std::thread::scope(|s| {
        let stuck = s.spawn(|| pool.spawn(stalled_spec()));
        let stuck_pid = {
            let mut pid = None;
            assert!(eventually(T, || {
                pid = stuck_child();
                pid.is_some()
            }));
            pid.unwrap()
        };
        killed.kill().unwrap();
        // A new spawn goes through the other spawner thread meanwhile.
        let fresh = pool
            .spawn(TaskSpec::new("/bin/sh").arg("-c").arg("echo fresh"))
            .unwrap();
        let mut output: HashMap<crate::event::TaskId, Vec<u8>> = HashMap::new();
        let mut done = HashMap::new();
        let until = Instant::now() + T;
        while done.len() < 3 && Instant::now() < until {
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Output { task, bytes, .. }) => {
                    output.entry(task).or_default().extend_from_slice(&bytes)
                }
                Ok(Event::Done { task, outcome }) => {
                    done.insert(task, outcome.reason);
                }
                _ => {}
            }
        }
        assert!(alive(stuck_pid), "the stuck spawn is still stuck");
        assert!(!stuck.is_finished());
        assert_eq!(done.get(&timed.id()), Some(&Reason::TimedOut));
        assert_eq!(
            output.get(&timed.id()).map(Vec::as_slice),
            Some(&b"before\nafter\n"[..])
        );
        assert_eq!(done.get(&killed.id()), Some(&Reason::Terminated));
        assert_eq!(done.get(&fresh.id()), Some(&Reason::Exited(0)));
        assert_eq!(
            output.get(&fresh.id()).map(Vec::as_slice),
            Some(&b"fresh\n"[..])
        );
        release_stall();
        let released = stuck.join().unwrap().expect("the released spawn runs");
        assert_eq!(released.pid() as i32, stuck_pid);
        let mut out = Vec::new();
        let until = Instant::now() + T;
        loop {
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Output { task, bytes, .. }) if task == released.id() => {
                    out.extend_from_slice(&bytes)
                }
                Ok(Event::Done { task, outcome }) if task == released.id() => {
                    assert_eq!(outcome.reason, Reason::Exited(0));
                    break;
                }
                _ => assert!(Instant::now() < until, "the released task never ended"),
            }
        }
        assert_eq!(out, b"released\n");
    });
    pool.shutdown();
}

/// A child of ours stuck at the stall point: still named after its spawner thread (it has
/// not exec'd), and not a zombie.
fn stuck_child() -> Option<i32> {
    let me = std::process::id() as i32;
    crate::sys::spawn::test_util::pids_with(|_, state, ppid| ppid == me && state != 'Z')
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("pidring-spawn"))
        })
}

/// CPU on this thread, from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        text.split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    )
}

/// What a task's cgroup costs the spawner (mkdir, open for `CLONE_INTO_CGROUP`) and the
/// release (rmdir), apart from any spawn.
/// `cargo test --release -p pidring --lib -- --ignored cgroup_cost --nocapture`
#[test]
#[ignore]
fn cgroup_cost() {
    let pool = match PoolContainment::new(Containment::Cgroup) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIP cgroup_cost: {e}");
            return;
        }
    };
    let n = 2000u64;
    let (mut make, mut remove) = (Duration::ZERO, Duration::ZERO);
    let (mut make_cpu, mut remove_cpu) = (Duration::ZERO, Duration::ZERO);
    for i in 0..n {
        let (t, c) = (Instant::now(), thread_cpu());
        let tree = pool.prepare(i, &crate::spec::Limits::default()).unwrap();
        drop(tree.placement().unwrap());
        make += t.elapsed();
        make_cpu += thread_cpu() - c;
        let (t, c) = (Instant::now(), thread_cpu());
        tree.remove().unwrap();
        remove += t.elapsed();
        remove_cpu += thread_cpu() - c;
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "cgroup per task: make + open {:.0} us wall ({:.0} us CPU), remove {:.0} us wall ({:.0} us CPU)",
        us(make),
        us(make_cpu),
        us(remove),
        us(remove_cpu)
    );
}
