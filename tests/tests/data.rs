//! The data path end to end, on both drivers: stdin written through the driver, framed
//! request channels (round trips, large frames, frames over the maximum, channels that end
//! early), and per-task flow control (a stalled consumer bounds the supervisor's memory,
//! even for tasks whose main process exited, and every byte arrives afterwards).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pidring::{
    ChannelEnd, Chunk, Event, ExitStatus, Pool, Reason, Stdio, StreamId, TaskId, TaskSpec,
    WriteError, DEFAULT_TASK_BUDGET,
};
use pidring_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

fn pool(workers: usize) -> Pool {
    builder().workers(workers).build().expect("build pool")
}

/// Bytes `from..from + n` of the helper's pattern.
fn pattern_at(from: usize, n: usize) -> Vec<u8> {
    (from..from + n).map(|i| b'a' + (i % 26) as u8).collect()
}

// ---- stdin ------------------------------------------------------------------------------

fn stdin_round_trip_through_cat_in_order_with_partial_writes() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(2);
        let task = pool
            .spawn(TaskSpec::new("cat").stdin(Stdio::Capture))
            .unwrap();
        // Sizes that straddle the pipe buffer (64 KiB) and the driver's coalescing.
        let mut sent = Vec::new();
        for (i, size) in [1, 10, 100, 70_000, 3, 1 << 20, 5, 200_000, 17]
            .into_iter()
            .enumerate()
        {
            let piece: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            sent.extend_from_slice(&piece);
            task.write(piece).unwrap();
        }
        task.close_stdin().unwrap();
        task.close_stdin().unwrap();
        assert_eq!(task.write(b"late".to_vec()), Err(WriteError::Closed));
        let records = collect(&pool, &[task.id()], LIMIT);
        let record = &records[&task.id()];
        assert!(record.stdout() == sent.as_slice(), "cat echoed other bytes");
        assert_eq!(record.stdin_closed, Some((None, 0)));
        assert_eq!(record.outcome().reason, Reason::Exited(0));
        // A task without captured stdin refuses writes at once.
        let plain = pool.spawn(TaskSpec::new("true")).unwrap();
        assert_eq!(plain.write(b"x".to_vec()), Err(WriteError::NotCaptured));
        assert_eq!(plain.close_stdin(), Err(WriteError::NotCaptured));
        collect(&pool, &[plain.id()], LIMIT);
        pool.shutdown();
    }
    assert_clean(fds);
}

/// Restores the process's SIGPIPE disposition on drop.
struct SigpipeDefault(libc::sighandler_t);

impl SigpipeDefault {
    /// SIGPIPE's default action (terminate) for this process, as a C host would have it:
    /// if the pool let a broken pipe raise it, this test process would die.
    fn set() -> SigpipeDefault {
        // SAFETY: signal(2) with a valid signal number and SIG_DFL.
        SigpipeDefault(unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) })
    }
}

impl Drop for SigpipeDefault {
    fn drop(&mut self) {
        // SAFETY: restores the disposition `set` replaced.
        unsafe { libc::signal(libc::SIGPIPE, self.0) };
    }
}

fn a_child_that_closes_stdin_early_gives_a_broken_pipe_event_never_a_signal() {
    let _serial = serial();
    let fds = fd_count();
    {
        let _sigpipe = SigpipeDefault::set();
        let pool = pool(1);
        // `head` reads 5 bytes and prints them; the shell then closes its stdin too and lives
        // on: nobody reads it any more while the task runs, the rest can never be written.
        let task = pool
            .spawn(
                TaskSpec::new("sh")
                    .args(["-c", "head -c 5; exec 0<&-; sleep 1"])
                    .stdin(Stdio::Capture),
            )
            .unwrap();
        task.write(b"hello".to_vec()).unwrap();
        task.write(vec![b'x'; 4 << 20]).unwrap();
        let records = collect(&pool, &[task.id()], LIMIT);
        let record = &records[&task.id()];
        assert_eq!(record.stdout(), b"hello");
        let (error, unwritten) = record.stdin_closed.expect("StdinClosed");
        assert_eq!(error, Some(WriteError::BrokenPipe));
        assert!(
            unwritten > 0 && unwritten <= 4 << 20,
            "unwritten {unwritten}"
        );
        assert_eq!(task.write(b"more".to_vec()), Err(WriteError::BrokenPipe));
        assert_eq!(record.outcome().reason, Reason::Exited(0));

        // A channel the child closed, then written by the supervisor: no signal either.
        let task = pool
            .spawn(helper(&["close-chan=0", "sleep=300", "exit=0"]).channels(1))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let _ = task.send(0, b"after the close");
        let records = collect(&pool, &[task.id()], LIMIT);
        assert_eq!(records[&task.id()].outcome().reason, Reason::Exited(0));
        pool.shutdown();
    }
    assert_clean(fds);
}

// ---- framed channels --------------------------------------------------------------------

/// Checks a `reqrep` request (`seq`, previous round trip, pattern from `seq % 26`).
fn check_request(frame: &[u8], expected_seq: u64, size: usize) {
    assert_eq!(frame.len(), size, "request {expected_seq}: length");
    let seq = u64::from_be_bytes(frame[..8].try_into().unwrap());
    assert_eq!(seq, expected_seq, "requests out of order");
    assert!(
        frame[16..] == pattern_at((seq % 26) as usize, size - 16)[..],
        "request {seq}: payload bytes differ"
    );
}

/// Runs `tasks` tasks of `rounds` round trips of `size` bytes, answering every request
/// with itself from one consumer thread per worker (`per_worker_events`), and checks every
/// byte both ways (the child checks the replies, exit 4 otherwise).
fn round_trips(tasks: usize, rounds: u64, size: usize) {
    let pool = builder()
        .workers(2)
        .per_worker_events(true)
        .build()
        .unwrap();
    let done_total = std::sync::atomic::AtomicUsize::new(0);
    let finished = std::thread::scope(|s| {
        let consumers: Vec<_> = pool
            .worker_events()
            .iter()
            .map(|events| {
                let done_total = &done_total;
                s.spawn(move || {
                    let mut seqs: HashMap<TaskId, u64> = HashMap::new();
                    let mut done = Vec::new();
                    let deadline = Instant::now() + LIMIT * 4;
                    // Each consumer sees its worker's tasks; all stop once every task is done.
                    while done_total.load(std::sync::atomic::Ordering::Relaxed) < tasks {
                        assert!(Instant::now() < deadline, "only {} tasks done", done.len());
                        let Ok(event) = events.recv_timeout(Duration::from_millis(50)) else {
                            continue;
                        };
                        match event {
                            Event::Message {
                                task,
                                channel,
                                frame,
                            } => {
                                assert_eq!(channel, 0);
                                let seq = seqs.entry(task).or_insert(0);
                                check_request(&frame, *seq, size);
                                *seq += 1;
                                // The frame knows its task (even before its spawn returned).
                                let handle = frame.task().expect("a delivered frame has a task");
                                assert_eq!(handle.id(), task);
                                handle.send(channel, &frame).unwrap();
                            }
                            Event::ChannelClosed {
                                task, end, unsent, ..
                            } => {
                                assert_eq!((end, unsent), (ChannelEnd::Closed, 0), "{task}");
                            }
                            Event::Done { task, outcome } => {
                                done.push((task, outcome, seqs.remove(&task).unwrap_or(0)));
                                done_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Event::Output { bytes, .. } => {
                                panic!("unexpected output: {:?}", String::from_utf8_lossy(&bytes))
                            }
                            _ => {}
                        }
                    }
                    done
                })
            })
            .collect();
        for _ in 0..tasks {
            let spec = helper(&[&format!("reqrep=0:{rounds}:{size}")]).channels(1);
            pool.spawn(spec).unwrap();
        }
        consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(finished.len(), tasks);
    for (task, outcome, requests) in finished {
        assert_eq!(outcome.reason, Reason::Exited(0), "{task}: {outcome:?}");
        assert_eq!(requests, rounds + 1, "{task}: requests");
    }
    pool.shutdown();
}

fn a_thousand_tasks_each_make_a_thousand_exact_round_trips() {
    let _serial = serial();
    let fds = fd_count();
    round_trips(1000, 1000, 48);
    assert_clean(fds);
}

fn frames_larger_than_the_socket_buffer_go_both_ways() {
    let _serial = serial();
    let fds = fd_count();
    round_trips(2, 3, 3 << 20);
    assert_clean(fds);
}

fn a_frame_over_the_maximum_closes_the_channel_and_the_task_goes_on() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        let task = pool
            .spawn(
                helper(&["frame=0:10", "frame=0:2000", "sleep=200", "out=5", "exit=0"])
                    .channels(1)
                    .max_frame(1000),
            )
            .unwrap();
        assert_eq!(
            task.send(0, &[0; 1001]),
            Err(WriteError::FrameTooLarge {
                len: 1001,
                max: 1000
            })
        );
        assert_eq!(task.send(1, b"x"), Err(WriteError::NoSuchChannel(1)));
        let records = collect(&pool, &[task.id()], LIMIT);
        let record = &records[&task.id()];
        assert_eq!(record.messages[&0], vec![pattern_at(0, 10)]);
        assert_eq!(
            record.channel_closed[&0],
            (
                ChannelEnd::FrameTooLarge {
                    len: 2000,
                    max: 1000
                },
                0
            )
        );
        assert_eq!(record.stdout(), b"abcde");
        assert_eq!(record.outcome().reason, Reason::Exited(0));
        assert_eq!(task.send(0, b"x"), Err(WriteError::Closed));
        pool.shutdown();
    }
    assert_clean(fds);
}

fn a_channel_closed_early_or_cut_mid_frame_ends_cleanly() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = pool(1);
        let closes = pool
            .spawn(
                helper(&["frame=0:10", "close-chan=0", "sleep=100", "out=3", "exit=0"]).channels(2),
            )
            .unwrap();
        let dies = pool
            .spawn(helper(&["partial-frame=1:100:30", "raise=KILL"]).channels(2))
            .unwrap();
        // Raw and framed channels together: the framed ones take the fds the raw ones leave.
        let mixed = pool
            .spawn(
                helper(&["chan=3:7", "frame=0:5", "exit=0"])
                    .channel(3)
                    .channels(1),
            )
            .unwrap();
        let records = collect(&pool, &[closes.id(), dies.id(), mixed.id()], LIMIT);
        let r = &records[&closes.id()];
        assert_eq!(r.messages[&0], vec![pattern_at(0, 10)]);
        assert_eq!(r.channel_closed[&0], (ChannelEnd::Closed, 0));
        // Channel 1 stayed open until the child exited.
        assert_eq!(r.channel_closed[&1], (ChannelEnd::Closed, 0));
        assert_eq!(r.stdout(), b"abc");
        assert_eq!(r.outcome().reason, Reason::Exited(0));
        let r = &records[&dies.id()];
        assert_eq!(
            r.channel_closed[&1],
            (ChannelEnd::Truncated { partial: 34 }, 0)
        );
        assert_eq!(r.outcome().reason, Reason::Signaled(libc::SIGKILL));
        assert_eq!(r.exited, Some(ExitStatus::Signal(libc::SIGKILL)));
        let r = &records[&mixed.id()];
        assert_eq!(r.output[&StreamId::channel(0)], pattern(7));
        assert_eq!(r.messages[&0], vec![pattern_at(0, 5)]);
        pool.shutdown();
    }
    assert_clean(fds);
}

// ---- flow control -----------------------------------------------------------------------

/// 100 tasks write 10 MB each while nobody consumes for 5 s: the supervisor's RSS grows by
/// at most the budgets plus a constant, and every byte arrives afterwards, checked.
fn stall_then_drain(exited_main: bool) {
    const TASKS: usize = 100;
    const BYTES: usize = 10_000_000;
    const STALL: Duration = Duration::from_secs(5);
    // Both workers' read buffers (2 × 4 MiB), what one turn of each worker's loop reads past
    // a budget (2 × 4 MiB), and the allocator's and threads' slack.
    const CONSTANT_KIB: u64 = 24 * 1024;
    let pool = pool(2);
    let base = rss_kib();
    let ids: Vec<TaskId> = (0..TASKS)
        .map(|_| {
            let spec = if exited_main {
                // The main process exits at once; a descendant writes, holding stdout. Its
                // reads are paused like any other task's (they once bypassed back-pressure).
                // The drain covers the 100 writers' own time on a shared 2-core machine after
                // the stall (the stall itself does not count: see the next test).
                helper(&[&format!("spawn=out={BYTES}"), "exit=0"]).drain(Duration::from_secs(60))
            } else {
                helper(&[&format!("out={BYTES}"), "exit=0"])
            };
            pool.spawn(spec).unwrap().id()
        })
        .collect();
    let mut peak = 0;
    let until = Instant::now() + STALL;
    while Instant::now() < until {
        peak = peak.max(rss_kib().saturating_sub(base));
        std::thread::sleep(Duration::from_millis(50));
    }
    let bound = (TASKS * DEFAULT_TASK_BUDGET / 1024) as u64 + CONSTANT_KIB;
    eprintln!(
        "stall ({}): RSS grew by at most {peak} KiB (bound {bound} KiB = {TASKS} × {} KiB + {CONSTANT_KIB} KiB)",
        if exited_main { "main exited" } else { "main running" },
        DEFAULT_TASK_BUDGET / 1024
    );
    assert!(peak < bound, "RSS grew by {peak} KiB, over {bound} KiB");
    // Consume everything, checking each task's bytes as they come (against one long copy of
    // the pattern: the consumer must stay fast, the drain counts while it catches up).
    let long = pattern(1 << 20);
    let mut seen: HashMap<TaskId, usize> = HashMap::new();
    let mut done = 0;
    let deadline = Instant::now() + LIMIT;
    while done < TASKS {
        let left = deadline.saturating_duration_since(Instant::now());
        match pool.events().recv_timeout(left).expect("events") {
            Event::Output { task, bytes, .. } => {
                let at = seen.entry(task).or_insert(0);
                let from = *at % 26;
                assert!(
                    bytes.len() <= long.len() - 26 && bytes[..] == long[from..from + bytes.len()],
                    "{task}: bytes differ at {at}"
                );
                *at += bytes.len();
            }
            Event::Done { task, outcome } => {
                assert_eq!(
                    seen.get(&task).copied().unwrap_or(0),
                    BYTES,
                    "{task}: {outcome:?}"
                );
                assert_eq!(outcome.reason, Reason::Exited(0), "{task}");
                done += 1;
            }
            _ => {}
        }
    }
    assert_eq!(seen.len(), ids.len());
    pool.shutdown();
}

fn a_stalled_consumer_bounds_memory_and_every_byte_arrives() {
    let _serial = serial();
    let fds = fd_count();
    stall_then_drain(false);
    assert_clean(fds);
}

fn a_stalled_consumer_bounds_memory_after_the_main_process_exited() {
    let _serial = serial();
    let fds = fd_count();
    stall_then_drain(true);
    assert_clean(fds);
}

/// The drain period (1.5 s) is shorter than the stall (4 s): it counts only while the
/// task's reads are not paused, so the descendant that holds the pipe is not taken for a
/// pipe holder, and every byte arrives.
fn a_stall_longer_than_the_drain_does_not_expire_it() {
    let _serial = serial();
    let fds = fd_count();
    {
        const BYTES: usize = 4_000_000;
        let pool = builder().workers(1).task_budget(64 * 1024).build().unwrap();
        let task = pool
            .spawn(
                helper(&[&format!("spawn=out={BYTES}"), "exit=0"])
                    .drain(Duration::from_millis(1500)),
            )
            .unwrap();
        std::thread::sleep(Duration::from_secs(4));
        let records = collect(&pool, &[task.id()], LIMIT);
        let record = &records[&task.id()];
        assert_eq!(record.outcome().reason, Reason::Exited(0));
        assert!(record.stdout() == pattern(BYTES), "bytes differ");
        pool.shutdown();
    }
    assert_clean(fds);
}

/// A callback that keeps the chunks it is given holds the task's budget: the task pauses
/// until another thread drops them, and no byte is lost.
fn a_callback_that_keeps_chunks_pauses_its_task_until_they_are_dropped() {
    let _serial = serial();
    let fds = fd_count();
    {
        const BYTES: usize = 20_000_000;
        let kept: Arc<Mutex<Vec<Chunk>>> = Arc::default();
        let ended: Arc<Mutex<Option<pidring::Outcome>>> = Arc::default();
        let (kept2, ended2) = (Arc::clone(&kept), Arc::clone(&ended));
        let pool = builder()
            .workers(1)
            .task_budget(100_000)
            .on_event(move |event| match event {
                Event::Output { bytes, .. } => kept2.lock().unwrap().push(bytes),
                Event::Done { outcome, .. } => *ended2.lock().unwrap() = Some(outcome),
                _ => {}
            })
            .build()
            .unwrap();
        pool.spawn(helper(&[&format!("out={BYTES}"), "exit=0"]))
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let held: usize = kept.lock().unwrap().iter().map(|c| c.len()).sum();
        // The budget, and what one turn of the loop read past it.
        assert!(
            held <= 100_000 + (4 << 20),
            "the callback holds {held} bytes"
        );
        assert!(
            ended.lock().unwrap().is_none(),
            "the task ran past its budget"
        );
        let mut got = Vec::with_capacity(BYTES);
        let deadline = Instant::now() + LIMIT;
        while ended.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the task never resumed");
            let chunks = std::mem::take(&mut *kept.lock().unwrap());
            for chunk in chunks {
                got.extend_from_slice(&chunk);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for chunk in std::mem::take(&mut *kept.lock().unwrap()) {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got.len(), BYTES);
        assert!(got == pattern(BYTES), "bytes differ");
        assert_eq!(
            ended.lock().unwrap().take().unwrap().reason,
            Reason::Exited(0)
        );
        pool.shutdown();
    }
    assert_clean(fds);
}

on_both_backends!(
    stdin_round_trip_through_cat_in_order_with_partial_writes,
    a_child_that_closes_stdin_early_gives_a_broken_pipe_event_never_a_signal,
    a_thousand_tasks_each_make_a_thousand_exact_round_trips,
    frames_larger_than_the_socket_buffer_go_both_ways,
    a_frame_over_the_maximum_closes_the_channel_and_the_task_goes_on,
    a_channel_closed_early_or_cut_mid_frame_ends_cleanly,
    a_stalled_consumer_bounds_memory_and_every_byte_arrives,
    a_stalled_consumer_bounds_memory_after_the_main_process_exited,
    a_stall_longer_than_the_drain_does_not_expire_it,
    a_callback_that_keeps_chunks_pauses_its_task_until_they_are_dropped,
);
