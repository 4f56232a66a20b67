//! The Pool end to end on real processes: exact output, exit statuses, termination,
//! fleets, and the absence of leaks (fds, zombies, survivors).

use std::time::{Duration, Instant};

use pidring::{BackendKind, Containment, ExitStatus, Pool, Reason, SpawnError, TaskSpec};
use pidring_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

fn pool(workers: usize) -> Pool {
    builder().workers(workers).build().expect("build pool")
}

fn output_is_delivered_byte_for_byte_including_10_mb_and_output_just_before_exit() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(2);
        let big = pool
            .spawn(helper(&["out=10485760", "err=3000000", "exit=0"]))
            .unwrap();
        let last_moment = pool
            .spawn(helper(&["sleep=50", "out=200000", "exit=5"]))
            .unwrap();
        let small = pool
            .spawn(TaskSpec::new("sh").args(["-c", "printf hello; printf oops >&2"]))
            .unwrap();
        let records = collect(&pool, &[big.id(), last_moment.id(), small.id()], LIMIT);

        let big = &records[&big.id()];
        assert_eq!(big.stdout().len(), 10_485_760);
        assert!(big.stdout() == pattern(10_485_760), "stdout bytes differ");
        assert!(big.stderr() == pattern(3_000_000), "stderr bytes differ");
        assert_eq!(big.outcome().reason, Reason::Exited(0));
        let bytes: Vec<u64> = big.outcome().stream_bytes.iter().map(|(_, n)| *n).collect();
        assert_eq!(bytes, vec![10_485_760, 3_000_000]);

        let last = &records[&last_moment.id()];
        assert!(last.stdout() == pattern(200_000));
        assert_eq!(last.exited, Some(ExitStatus::Code(5)));
        assert_eq!(last.outcome().reason, Reason::Exited(5));

        let small = &records[&small.id()];
        assert_eq!(small.stdout(), b"hello");
        assert_eq!(small.stderr(), b"oops");
        pool.shutdown();
    }
    assert_clean(fds);
}

fn exit_codes_and_deaths_by_signal_are_reported() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(2);
        let codes = [0, 1, 42, 255];
        let mut ids = Vec::new();
        for code in codes {
            ids.push(pool.spawn(helper(&[&format!("exit={code}")])).unwrap().id());
        }
        let killed = pool.spawn(helper(&["out=10", "raise=9"])).unwrap().id();
        let segv = pool.spawn(helper(&["raise=11"])).unwrap().id();
        let mut all = ids.clone();
        all.extend([killed, segv]);
        let records = collect(&pool, &all, LIMIT);
        for (id, code) in ids.iter().zip(codes) {
            assert_eq!(records[id].exited, Some(ExitStatus::Code(code)));
            assert_eq!(records[id].outcome().reason, Reason::Exited(code));
        }
        assert_eq!(records[&killed].stdout(), pattern(10).as_slice());
        assert_eq!(records[&killed].outcome().status, ExitStatus::Signal(9));
        assert_eq!(records[&killed].outcome().reason, Reason::Signaled(9));
        assert_eq!(records[&segv].outcome().reason, Reason::Signaled(11));
        pool.shutdown();
    }
    assert_clean(fds);
}

fn terminate_escalates_to_sigkill_after_grace_for_a_child_ignoring_sigterm() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        let stubborn = pool
            .spawn(
                helper(&["ignore-term", "out=5", "sleep=60000"]).grace(Duration::from_millis(300)),
            )
            .unwrap();
        let polite = pool
            .spawn(helper(&["sleep=60000"]).grace(Duration::from_secs(30)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        stubborn.terminate().unwrap();
        polite.terminate().unwrap();
        let records = collect(&pool, &[stubborn.id(), polite.id()], LIMIT);
        let stubborn_rec = &records[&stubborn.id()];
        assert_eq!(stubborn_rec.outcome().reason, Reason::Terminated);
        assert_eq!(
            stubborn_rec.outcome().status,
            ExitStatus::Signal(9),
            "needed SIGKILL"
        );
        assert!(stubborn_rec.outcome().tree_signalled);
        assert_eq!(stubborn_rec.stdout(), b"abcde");
        // SIGTERM sufficed for the polite one: it did not wait out its 30 s grace.
        assert_eq!(
            records[&polite.id()].outcome().status,
            ExitStatus::Signal(15)
        );
        assert!(started.elapsed() < Duration::from_secs(25));
        assert!(!alive(stubborn.pid() as i32));
        // Requests after the end are ignored, not errors.
        stubborn.kill().unwrap();
        stubborn.signal(1).unwrap();
        assert!(
            stubborn.signal(0).is_err(),
            "signal 0 is not a valid request"
        );
        pool.shutdown();
    }
    assert_clean(fds);
}

fn kill_request_sigkills_at_once() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        let task = pool
            .spawn(helper(&["ignore-term", "sleep=60000"]).grace(Duration::from_secs(60)))
            .unwrap();
        task.kill().unwrap();
        let records = collect(&pool, &[task.id()], Duration::from_secs(20));
        assert_eq!(records[&task.id()].outcome().status, ExitStatus::Signal(9));
        assert_eq!(records[&task.id()].outcome().reason, Reason::Terminated);
        pool.shutdown();
    }
    assert_clean(fds);
}

fn timeout_terminates_the_task() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        let task = pool
            .spawn(
                helper(&["sleep=60000"])
                    .timeout(Duration::from_millis(200))
                    .grace(Duration::from_secs(5)),
            )
            .unwrap();
        let records = collect(&pool, &[task.id()], Duration::from_secs(30));
        assert_eq!(records[&task.id()].outcome().reason, Reason::TimedOut);
        assert_eq!(records[&task.id()].outcome().status, ExitStatus::Signal(15));
        pool.shutdown();
    }
    assert_clean(fds);
}

fn spawn_errors_are_typed_and_leave_nothing_behind() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        match pool.spawn(TaskSpec::new("/definitely/not/here")) {
            Err(SpawnError::NotFound(_)) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
        match pool.spawn(TaskSpec::new("no-such-program-pidring-test")) {
            Err(SpawnError::NotFound(_)) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
        let dir = TempDir::new("spawn-errors");
        let not_executable = dir.path("data.txt");
        std::fs::write(&not_executable, "just text\n").unwrap();
        set_mode(&not_executable, 0o644);
        match pool.spawn(TaskSpec::new(&not_executable)) {
            Err(SpawnError::PermissionDenied(_)) => {}
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
        let garbage = dir.path("garbage");
        std::fs::write(&garbage, [0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 3]).unwrap();
        set_mode(&garbage, 0o755);
        match pool.spawn(TaskSpec::new(&garbage)) {
            Err(SpawnError::NotExecutable(_)) => {}
            other => panic!("expected NotExecutable, got {other:?}"),
        }
        match pool.spawn(TaskSpec::new(helper_dir()).arg("x")) {
            Err(SpawnError::PermissionDenied(_)) => {}
            other => panic!("a directory is not executable: got {other:?}"),
        }
        match pool.spawn(TaskSpec::new("nul\0byte")) {
            Err(SpawnError::InvalidSpec(_)) => {}
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
        // The pool still works.
        let ok = pool.spawn(helper(&["exit=3"])).unwrap();
        let records = collect(&pool, &[ok.id()], LIMIT);
        assert_eq!(
            records[&ok.id()].outcome().reason,
            Reason::Exited(3),
            "{:?}",
            records[&ok.id()]
        );
        assert_eq!(pool.stats().live_tasks, 0);
        pool.shutdown();
    }
    assert_clean(fds);
}

fn a_foreign_reaper_does_not_hang_the_task_and_its_status_survives() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        // Like Celery's SIGCHLD handler: waitpid(-1) in the host process races our worker
        // for the child. Whoever wins, the task must reach Done with its real status; the
        // test repeats until the thief has won at least once.
        let mut steals = 0;
        for _attempt in 0..60 {
            let task = pool
                .spawn(helper(&["sleep=100", "out=3", "exit=7"]))
                .unwrap();
            let thief = std::thread::spawn(|| {
                let mut status = 0;
                // SAFETY: plain libc call with a valid out-pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
                (pid, status)
            });
            let (stolen_pid, raw) = thief.join().unwrap();
            if stolen_pid == task.pid() as i32 {
                steals += 1;
                assert_eq!(libc::WEXITSTATUS(raw), 7);
            }
            let records = collect(&pool, &[task.id()], LIMIT);
            let record = &records[&task.id()];
            assert_eq!(record.stdout(), b"abc");
            assert_eq!(
                record.outcome().status,
                ExitStatus::Code(7),
                "status lost to the thief"
            );
            assert_eq!(record.outcome().reason, Reason::Exited(7));
            if steals > 0 {
                break;
            }
        }
        assert!(
            steals > 0,
            "the foreign reaper never won the race: the case was not exercised"
        );
        pool.shutdown();
    }
    assert_clean(fds);
}

fn two_thousand_concurrent_tasks_over_two_workers_all_reach_done() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(2);
        let mut ids = Vec::new();
        for i in 0..2000 {
            let spec =
                TaskSpec::new("sh").args(["-c", &format!("sleep 0.5; echo {i}; exit {}", i % 7)]);
            ids.push(pool.spawn(spec).unwrap().id());
        }
        // epoll keeps each task's pidfd and pipes (and cgroup.events while its tree is
        // watched) in the process fd table; io_uring keeps none there.
        let per_task = match pool.backend() {
            BackendKind::Uring => 0,
            BackendKind::Epoll => 4,
        };
        assert!(
            fd_count() <= fds + 8 + per_task * ids.len(),
            "per-task fds leaked into the process table"
        );
        let records = collect(&pool, &ids, Duration::from_secs(120));
        for (i, id) in ids.iter().enumerate() {
            let record = &records[id];
            assert_eq!(
                record.stdout(),
                format!("{i}\n").as_bytes(),
                "task {i}: {record:?}"
            );
            assert_eq!(record.outcome().reason, Reason::Exited((i % 7) as i32));
        }
        let stats = pool.stats();
        assert_eq!(stats.spawned, 2000);
        assert_eq!(stats.live_tasks, 0);
        pool.shutdown();
    }
    assert_clean(fds);
}

/// Issue 3's density check: 10,000 idle tasks under the 20,000-fd limit, with a flat
/// process fd table. Prints what the note reports (RSS and slab per task, kill-all time).
fn ten_thousand_idle_tasks_keep_the_fd_table_flat() {
    let _serial = serial();
    let fds = fd_count();
    const N: usize = 10_000;
    {
        let pool = builder().max_tasks(N).build().expect("pool");
        // io_uring keeps per-task fds out of the process fd table; epoll cannot, so it
        // holds as many tasks as the table allows (3 fds each).
        let uring = pool.backend() == BackendKind::Uring;
        let n = if uring { N } else { N.min(pool.capacity()) };
        assert!(pool.capacity() >= n, "capacity {} < {n}", pool.capacity());
        let rss_before = rss_kib();
        let slab_before = slab_kib();
        let started = Instant::now();
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            handles.push(
                pool.spawn(TaskSpec::new("sleep").arg("600"))
                    .expect("spawn"),
            );
        }
        let spawn_time = started.elapsed();
        let fds_during = fd_count();
        let fleet_fds = if uring { 0 } else { 3 * n };
        assert!(
            fds_during <= fds + 2 * pool.workers() + 4 + fleet_fds,
            "fd table grew with the fleet: {fds} before, {fds_during} with {n} tasks"
        );
        std::thread::sleep(Duration::from_millis(500));
        let rss_per_task = (rss_kib().saturating_sub(rss_before)) * 1024 / n as u64;
        let slab_per_task = (slab_kib().saturating_sub(slab_before)) * 1024 / n as u64;
        // The fd table during kill-all: lent pidfds are bounded, whatever the fleet.
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let sampling = std::sync::Arc::clone(&sampling);
            std::thread::spawn(move || {
                let mut peak = 0;
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(fd_count());
                    std::thread::sleep(Duration::from_micros(200));
                }
                peak
            })
        };
        let killed = Instant::now();
        for handle in &handles {
            handle.kill().unwrap();
        }
        let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
        let records = collect(&pool, &ids, Duration::from_secs(120));
        let kill_all = killed.elapsed();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().unwrap();
        assert!(records
            .values()
            .all(|r| r.outcome().status == ExitStatus::Signal(9)));
        let lent_bound = 2 * 64 * pool.workers();
        assert!(
            peak <= fds_during + lent_bound + 8,
            "fd table during kill-all peaked at {peak} ({fds_during} before it)"
        );
        eprintln!(
            "idle fleet ({:?}): {n} tasks on {} workers, spawned in {:.2?} ({:.0}/s); supervisor \
             RSS {rss_per_task} B/task; kernel slab {slab_per_task} B/task; kill-all to last \
             Done {kill_all:.2?}; fds {fds} -> {fds_during}, peak {peak} during kill-all \
             (lent pidfds at most {} at once)",
            pool.backend(),
            pool.workers(),
            spawn_time,
            n as f64 / spawn_time.as_secs_f64(),
            pool.stats().lent_pidfds_peak,
        );
        pool.shutdown();
    }
    assert_clean(fds);
}

fn process_group_containment_runs_tasks_too() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = builder()
            .workers(1)
            .containment(Containment::ProcessGroup)
            .build()
            .unwrap();
        let task = pool.spawn(helper(&["out=7", "exit=9"])).unwrap();
        let records = collect(&pool, &[task.id()], LIMIT);
        assert_eq!(records[&task.id()].stdout(), b"abcdefg");
        assert_eq!(records[&task.id()].outcome().reason, Reason::Exited(9));
        pool.shutdown();
    }
    assert_clean(fds);
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn helper_dir() -> &'static std::path::Path {
    pidring_bin().parent().unwrap()
}

fn rss_kib() -> u64 {
    status_field("/proc/self/status", "VmRSS:")
}

fn slab_kib() -> u64 {
    status_field("/proc/meminfo", "Slab:")
}

fn status_field(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn a_tiny_submission_queue_loses_no_action() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = builder().workers(1).submission_queue(2).build().unwrap();
        let ids: Vec<_> = (0..300)
            .map(|i| {
                pool.spawn(helper(&[&format!("out={i}"), "exit=1"]))
                    .unwrap()
                    .id()
            })
            .collect();
        let records = collect(&pool, &ids, LIMIT);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(records[id].stdout(), pattern(i).as_slice());
            assert_eq!(records[id].outcome().reason, Reason::Exited(1));
        }
        assert!(builder().submission_queue(0).build().is_err());
        assert!(builder().workers(0).build().is_err());
        assert!(matches!(
            builder().max_tasks(0).build(),
            Err(pidring::BuildError::InvalidOption(_))
        ));
        pool.shutdown();
    }
    assert_clean(fds);
}

fn extra_channels_are_captured_as_their_own_streams() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        // Airflow gives its runner four socketpairs: stdout, stderr, requests, logs.
        let task = pool
            .spawn(
                helper(&["chan=3:70000", "chan=4:11", "out=2", "err=1", "exit=0"])
                    .channel(3)
                    .channel(4),
            )
            .unwrap();
        let records = collect(&pool, &[task.id()], LIMIT);
        let record = &records[&task.id()];
        assert!(record.output[&pidring::StreamId::channel(0)] == pattern(70_000));
        assert_eq!(record.output[&pidring::StreamId::channel(1)], pattern(11));
        assert_eq!(record.stdout(), b"ab");
        assert_eq!(record.stderr(), b"a");
        let bytes = &record.outcome().stream_bytes;
        assert_eq!(bytes.len(), 4);
        match pool.spawn(helper(&["exit=0"]).channel(1)) {
            Err(SpawnError::InvalidSpec(_)) => {}
            other => panic!("channel on fd 1 must be refused: {other:?}"),
        }
        pool.shutdown();
    }
    assert_clean(fds);
}

fn callback_sink_env_cwd_and_signals_reach_the_program() {
    let _serial = serial();
    let fds = fd_count();
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let pool = builder()
            .workers(1)
            .on_event(move |event| {
                let _ = tx.lock().unwrap().send(event);
            })
            .build()
            .unwrap();
        let dir = TempDir::new("env-cwd");
        let script = "trap 'echo got-usr1; exit 0' USR1; echo \"$GREETING $(pwd)\"; while :; do sleep 0.01; done";
        let task = pool
            .spawn(
                TaskSpec::new("sh")
                    .args(["-c", script])
                    .env("GREETING", "hello")
                    .cwd(dir.dir()),
            )
            .unwrap();
        let mut stdout = Vec::new();
        let mut signalled = false;
        let outcome = loop {
            match rx.recv_timeout(LIMIT).expect("events from the callback") {
                pidring::Event::Output { bytes, .. } => {
                    stdout.extend_from_slice(&bytes);
                    if !signalled && stdout.ends_with(b"\n") {
                        task.signal(libc::SIGUSR1).unwrap();
                        signalled = true;
                    }
                }
                pidring::Event::Done { outcome, .. } => break outcome,
                _ => {}
            }
        };
        let expected = format!("hello {}\ngot-usr1\n", dir.dir().display());
        assert_eq!(String::from_utf8_lossy(&stdout), expected);
        assert_eq!(outcome.reason, Reason::Exited(0));
        assert!(
            pool.events().is_empty(),
            "a callback pool sends nothing to the channel"
        );
        pool.shutdown();
    }
    assert_clean(fds);
}

/// A consumer slower than its children: the pool stops reading (the child blocks on its
/// full pipe) instead of queueing without bound, and no byte is lost once reading resumes.
fn a_slow_consumer_bounds_memory_and_loses_nothing() {
    let _serial = serial();
    let fds = fd_count();
    {
        const TOTAL: usize = 300_000_000;
        let pool = pool(1);
        let rss_before = status_kib("/proc/self/status", "VmRSS:");
        let task = pool
            .spawn(helper(&[&format!("out={TOTAL}"), "exit=0"]))
            .unwrap();
        // Nobody reads for a while: the child writes as fast as the pool lets it.
        std::thread::sleep(Duration::from_secs(2));
        let grown_kib = status_kib("/proc/self/status", "VmRSS:").saturating_sub(rss_before);
        assert!(
            grown_kib < 100 * 1024,
            "RSS grew by {grown_kib} KiB while nobody read"
        );
        let mut seen = 0usize;
        let outcome = loop {
            match pool.events().recv_timeout(LIMIT).expect("events") {
                pidring::Event::Output { bytes, .. } => {
                    for (i, b) in bytes.iter().enumerate() {
                        assert_eq!(
                            *b,
                            b'a' + ((seen + i) % 26) as u8,
                            "byte {} differs",
                            seen + i
                        );
                    }
                    seen += bytes.len();
                }
                pidring::Event::Done { task: id, outcome } => {
                    assert_eq!(id, task.id());
                    break outcome;
                }
                _ => {}
            }
        };
        assert_eq!(seen, TOTAL);
        assert_eq!(outcome.reason, Reason::Exited(0));
        pool.shutdown();
    }
    assert_clean(fds);
}

/// Dropping a pool whose events nobody reads must not hang on back-pressure.
fn dropping_a_pool_nobody_reads_from_does_not_hang() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        for _ in 0..4 {
            pool.spawn(helper(&["out=100000000", "sleep=60000"]))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
        drop(pool);
    }
    assert_clean(fds);
}

fn status_kib(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Back-pressure must never cost output: tasks that exit while reading is paused still
/// deliver every byte, even with a drain period much shorter than the pause.
fn tasks_exiting_during_a_pause_lose_no_output() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(2);
        let writer = pool
            .spawn(helper(&["out=3000000", "sleep=300", "out=1000", "exit=0"]))
            .unwrap();
        let mut ids = vec![writer.id()];
        for i in 0..1300 {
            let spec = helper(&[&format!("out={}", i % 50 + 1), "exit=0"])
                .drain(Duration::from_millis(50));
            ids.push(pool.spawn(spec).unwrap().id());
        }
        // Nobody reads: the queue passes the pause mark while tasks keep exiting.
        std::thread::sleep(Duration::from_millis(1500));
        let records = collect(&pool, &ids, LIMIT);
        assert!(records[&writer.id()].stdout() == pattern_concat(&[3_000_000, 1000]));
        for (i, id) in ids[1..].iter().enumerate() {
            let record = &records[id];
            assert_eq!(
                record.stdout(),
                pattern(i % 50 + 1).as_slice(),
                "task {i}: {:?}",
                record.outcome()
            );
            assert_eq!(record.outcome().reason, Reason::Exited(0));
        }
        pool.shutdown();
    }
    assert_clean(fds);
}

fn pattern_concat(parts: &[usize]) -> Vec<u8> {
    parts.iter().flat_map(|n| pattern(*n)).collect()
}

fn pool_and_handles_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Pool>();
    assert_send_sync::<pidring::TaskHandle>();
    assert_send_sync::<pidring::Event>();
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = std::sync::Arc::new(pool(2));
        let spawners: Vec<_> = (0..4)
            .map(|t| {
                let pool = std::sync::Arc::clone(&pool);
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| {
                            pool.spawn(helper(&[&format!("exit={}", (t * 25 + i) % 256)]))
                                .unwrap()
                                .id()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ids: Vec<_> = spawners
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect();
        let records = collect(&pool, &ids, LIMIT);
        assert_eq!(records.len(), 100);
        assert!(records
            .values()
            .all(|r| matches!(r.outcome().reason, Reason::Exited(_))));
        std::sync::Arc::try_unwrap(pool)
            .ok()
            .expect("sole owner")
            .shutdown();
    }
    assert_clean(fds);
}

on_both_backends!(
    output_is_delivered_byte_for_byte_including_10_mb_and_output_just_before_exit,
    exit_codes_and_deaths_by_signal_are_reported,
    terminate_escalates_to_sigkill_after_grace_for_a_child_ignoring_sigterm,
    kill_request_sigkills_at_once,
    timeout_terminates_the_task,
    spawn_errors_are_typed_and_leave_nothing_behind,
    a_foreign_reaper_does_not_hang_the_task_and_its_status_survives,
    two_thousand_concurrent_tasks_over_two_workers_all_reach_done,
    ten_thousand_idle_tasks_keep_the_fd_table_flat,
    process_group_containment_runs_tasks_too,
    a_tiny_submission_queue_loses_no_action,
    extra_channels_are_captured_as_their_own_streams,
    callback_sink_env_cwd_and_signals_reach_the_program,
    a_slow_consumer_bounds_memory_and_loses_nothing,
    dropping_a_pool_nobody_reads_from_does_not_hang,
    tasks_exiting_during_a_pause_lose_no_output,
    pool_and_handles_can_be_shared_across_threads,
);

#[test]
fn auto_falls_back_to_epoll_where_io_uring_is_refused_or_lacks_an_opcode() {
    use pidring::UringProbe;
    let _serial = serial();
    let fds = fd_count();
    for (probe, says) in [
        (
            UringProbe::Missing(vec!["FIXED_FD_INSTALL"]),
            "FIXED_FD_INSTALL",
        ),
        (UringProbe::SetupFails(libc::EPERM), "seccomp"),
        (UringProbe::SetupFails(libc::ENOSYS), "Podman"),
        (UringProbe::SetupFails(libc::EINVAL), "io_uring_setup"),
    ] {
        let pool = Pool::builder()
            .workers(1)
            .simulate_uring_probe(probe.clone())
            .build()
            .unwrap_or_else(|e| panic!("{probe:?}: {e}"));
        assert_eq!(pool.backend(), BackendKind::Epoll, "{probe:?}");
        assert!(
            pool.backend_reason().contains(says),
            "{probe:?}: {}",
            pool.backend_reason()
        );
        let task = pool
            .spawn(TaskSpec::new("sh").args(["-c", "echo hi"]))
            .unwrap();
        let records = collect(&pool, &[task.id()], LIMIT);
        assert_eq!(records[&task.id()].stdout(), b"hi\n");
        pool.shutdown();
    }
    // Insisting on io_uring where it is refused is an error that names the cause and the fix.
    let err = Pool::builder()
        .backend(pidring::Backend::Uring)
        .simulate_uring_probe(UringProbe::SetupFails(libc::EPERM))
        .build()
        .err()
        .expect("a refused io_uring cannot be forced");
    let text = err.to_string();
    assert!(
        matches!(err, pidring::BuildError::BackendUnavailable("uring", _))
            && text.contains("seccomp")
            && text.contains("io_uring_disabled"),
        "{text}"
    );
    // Failures that are not refusals stay fatal under Auto.
    let err = Pool::builder()
        .simulate_uring_probe(UringProbe::SetupFails(libc::ENOMEM))
        .build()
        .err()
        .expect("ENOMEM is not a reason to fall back");
    assert!(
        matches!(err, pidring::BuildError::Driver("io_uring", _)),
        "{err}"
    );
    assert_clean(fds);
}
