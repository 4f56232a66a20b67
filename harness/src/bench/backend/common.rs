//! What the tokio, threads and limit backends share: the messages their per-child code
//! sends to the measuring thread, and the outcome checks per scenario.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::Measured;
use crate::bench::stats::LineClock;

/// How one child ended, as its supervising code saw it.
pub struct TaskEnd {
    pub status: Result<ExitStatus, String>,
    pub stdout: LineClock,
    /// `reqrep`: the requests answered and the round trips they reported (ns).
    pub requests: RoundTrips,
}

/// What a `reqrep` supervisor saw of one child: requests answered, the round trips the
/// child reported in them (ns), and the first protocol error.
#[derive(Default, Debug)]
pub struct RoundTrips {
    pub requests: u64,
    pub rtts_ns: Vec<u64>,
    pub error: Option<String>,
}

impl RoundTrips {
    /// Checks request `frame` (`seq`, previous round trip, filler; see `pidring helper
    /// reqrep`) and records its round trip.
    pub fn request(&mut self, frame: &[u8], size: usize) {
        let field = |i: usize| {
            frame
                .get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        match (field(0), field(8)) {
            (Some(seq), Some(rtt)) if frame.len() == size && seq == self.requests => {
                if seq > 0 {
                    self.rtts_ns.push(rtt);
                }
            }
            _ => {
                if self.error.is_none() {
                    self.error = Some(format!(
                        "request {}: {} bytes, not the expected sequence and size {size}",
                        self.requests,
                        frame.len()
                    ));
                }
            }
        }
        self.requests += 1;
    }
}

pub enum Msg {
    /// The child is running (its pid, for a kill from outside).
    Started { idx: usize, pid: i32 },
    /// The child could not be started.
    SpawnFailed { idx: usize, error: String },
    /// The supervising code saw the child's end at `done_ns` (CLOCK_MONOTONIC).
    Done {
        idx: usize,
        start_ns: u64,
        done_ns: u64,
        end: TaskEnd,
    },
}

/// What a scenario expects of a child's end.
#[derive(Clone, Copy)]
pub enum Expect {
    Success,
    Killed,
}

impl Expect {
    pub fn check(self, m: &mut Measured, idx: usize, end: &TaskEnd) {
        match (&end.status, self) {
            (Err(e), _) => m.error(format!("task {idx}: wait failed: {e}")),
            (Ok(s), Expect::Success) if !s.success() => m.error(format!("task {idx}: {s}")),
            (Ok(s), Expect::Killed) if s.signal().is_none() => {
                m.error(format!("task {idx}: not killed: {s}"))
            }
            _ => {}
        }
    }
}

/// Records one child's round trips, and an error unless it made exactly `rounds` plus its
/// last request with correct frames.
pub fn record_round_trips(m: &mut Measured, idx: usize, trips: &RoundTrips, rounds: u64) {
    for &ns in &trips.rtts_ns {
        m.latency.record_ns(ns);
    }
    if let Some(e) = &trips.error {
        m.error(format!("task {idx}: {e}"));
    } else if trips.requests != rounds + 1 {
        m.error(format!(
            "task {idx}: {} requests, expected {}",
            trips.requests,
            rounds + 1
        ));
    }
}

/// Waits for `n` `Started` (or `SpawnFailed`) messages; returns the pids by index (0 where
/// the spawn failed). `Done` messages that arrive meanwhile are kept in `early`.
pub fn await_started(
    rx: &Receiver<Msg>,
    n: usize,
    m: &mut Measured,
    bar: &indicatif::ProgressBar,
    early: &mut Vec<Msg>,
) -> Vec<i32> {
    let mut pids = vec![0; n];
    let mut seen = 0;
    while seen < n {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Msg::Started { idx, pid }) => {
                pids[idx] = pid;
                seen += 1;
                bar.inc(1);
            }
            Ok(Msg::SpawnFailed { idx, error }) => {
                m.error(format!("spawn {idx}: {error}"));
                seen += 1;
                bar.inc(1);
            }
            Ok(done @ Msg::Done { .. }) => early.push(done),
            Err(_) => {
                m.error(format!("only {seen} of {n} tasks started within 60 s"));
                break;
            }
        }
    }
    pids
}

/// Collects `Done` messages until `n` tasks ended (failed spawns count as ended) or the
/// deadline passes; calls `on_done` for each. Returns how many ended.
pub fn collect_done(
    rx: &Receiver<Msg>,
    n: usize,
    deadline: Instant,
    early: Vec<Msg>,
    m: &mut Measured,
    bar: &indicatif::ProgressBar,
    mut on_done: impl FnMut(&mut Measured, usize, u64, u64, TaskEnd),
) -> usize {
    let mut ended = 0;
    let mut handle = |msg: Msg, m: &mut Measured, ended: &mut usize| match msg {
        Msg::Started { .. } => {}
        Msg::SpawnFailed { idx, error } => {
            m.error(format!("spawn {idx}: {error}"));
            *ended += 1;
        }
        Msg::Done {
            idx,
            start_ns,
            done_ns,
            end,
        } => {
            on_done(m, idx, start_ns, done_ns, end);
            *ended += 1;
            bar.inc(1);
        }
    };
    for msg in early {
        handle(msg, m, &mut ended);
    }
    while ended < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(msg) => handle(msg, m, &mut ended),
            Err(_) => break,
        }
    }
    ended
}

use crossbeam_channel::Sender;

use super::{Ctx, NotRun};
use crate::bench::resources::{cpu_self, kernel_kib, mono_ns, rss};
use crate::bench::scenario::{Child, Params, Programs};

/// A backend that supervises each child with its own code (a tokio task, a thread): the
/// scenarios are the same for all of them, only starting and killing differ.
pub trait Launch {
    /// Starts supervising child `idx` of `group` (its tasks are numbered from 0). It sends
    /// `Started` (or `SpawnFailed`) then `Done` on `tx`. Blocks while `group` is at its limit.
    fn launch(&mut self, group: usize, idx: usize, child: &Child, tx: &Sender<Msg>);
    /// At most `n` tasks of `group` at once (unlimited unless set).
    fn limit(&mut self, group: usize, n: usize);
    /// Kills every task of `group` the backend's idiomatic way (`pids` from `Started`).
    fn kill_group(&mut self, group: usize, pids: &[i32]);
    /// fds in this process's table per live task.
    fn fds_per_task(&self) -> u64;
    /// pids (processes + threads) per live task besides the child itself.
    fn extra_pids_per_task(&self) -> u64;
}

const FLEET: usize = 1;
const MAIN: usize = 0;

fn started_count(pids: &[i32]) -> usize {
    pids.iter().filter(|&&p| p != 0).count()
}

/// Spawns `n` idle children as group FLEET and waits until they run. Returns their pids.
fn start_fleet<L: Launch>(
    l: &mut L,
    ctx: &Ctx,
    m: &mut Measured,
    n: usize,
    tx: &Sender<Msg>,
    rx: &Receiver<Msg>,
) -> Vec<i32> {
    let child = ctx.programs.idle();
    ctx.stage("fleet: spawning", n as u64);
    for idx in 0..n {
        l.launch(FLEET, idx, &child, tx);
    }
    let mut early = Vec::new();
    let pids = await_started(rx, n, m, &ctx.bar, &mut early);
    for msg in early {
        if let Msg::Done { idx, end, .. } = msg {
            m.error(format!("fleet task {idx} ended early: {:?}", end.status));
        }
    }
    pids
}

/// Kills the FLEET and waits for its tasks' ends. Returns (ended, seconds to the last end).
fn kill_fleet<L: Launch>(
    l: &mut L,
    ctx: &Ctx,
    m: &mut Measured,
    pids: &[i32],
    rx: &Receiver<Msg>,
    record: bool,
) -> (usize, f64) {
    ctx.stage("kill-all", started_count(pids) as u64);
    let k0 = mono_ns();
    let t0 = Instant::now();
    l.kill_group(FLEET, pids);
    let mut last = 0u64;
    let ended = collect_done(
        rx,
        started_count(pids),
        t0 + Duration::from_secs(60),
        Vec::new(),
        m,
        &ctx.bar,
        |m, idx, _s, d, end| {
            if record {
                m.latency.record_ns(d.saturating_sub(k0));
            }
            last = last.max(d);
            Expect::Killed.check(m, idx, &end);
        },
    );
    (ended, last.saturating_sub(k0) as f64 / 1e9)
}

pub fn run_with<L: Launch>(l: &mut L, params: &Params, ctx: &Ctx) -> Result<Measured, NotRun> {
    let mut m = Measured::default();
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let (ftx, frx) = crossbeam_channel::unbounded::<Msg>();
    let fds = l.fds_per_task();
    let pids_per = 1 + l.extra_pids_per_task();
    match *params {
        Params::Spawn {
            tasks,
            concurrency,
            hold,
            ..
        } => {
            // Idle tasks held meanwhile, with their fds in this process's table.
            let held = if hold > 0 {
                let h = ctx.fit(&mut m, hold, fds, pids_per) as usize;
                let pids = start_fleet(l, ctx, &mut m, h, &ftx, &frx);
                // Let the held tasks finish starting up before the measured spawns.
                ctx.stage("waiting for the held tasks to settle", 0);
                let waited = crate::bench::resources::wait_quiet(4, Duration::from_secs(60));
                m.extra.insert("settle_s".into(), waited.as_secs_f64());
                pids
            } else {
                Vec::new()
            };
            let n = tasks as usize;
            l.limit(MAIN, concurrency as usize);
            let child = ctx.programs.spawned(params);
            ctx.stage("spawn + reap", tasks);
            let cpu0 = cpu_self();
            let t0 = Instant::now();
            let mut early = Vec::new();
            for idx in 0..n {
                l.launch(MAIN, idx, &child, &tx);
                // Keep the channel short and the bar moving while launching.
                while let Ok(msg) = rx.try_recv() {
                    early.push(msg);
                }
            }
            let ended = collect_done(
                &rx,
                n,
                t0 + Duration::from_secs(180),
                early,
                &mut m,
                &ctx.bar,
                |m, idx, s, d, end| {
                    m.latency.record_ns(d.saturating_sub(s));
                    Expect::Success.check(m, idx, &end);
                },
            );
            m.work_wall = t0.elapsed();
            m.extra
                .insert("phase_cpu_s".into(), (cpu_self() - cpu0).as_secs_f64());
            m.work = ended as f64;
            m.tasks = tasks;
            m.peak_tasks = concurrency.min(tasks) + started_count(&held) as u64;
            m.hung = (n - ended) as u64;
            if !held.is_empty() {
                m.extra.insert("held".into(), started_count(&held) as f64);
                let (killed, _) = kill_fleet(l, ctx, &mut m, &held, &frx, false);
                m.hung += (started_count(&held) - killed) as u64;
            }
            m.survivors = ctx.survivors();
        }
        Params::Idle { tasks, idle_secs } => {
            let n = ctx.fit(&mut m, tasks, fds, pids_per) as usize;
            let k0 = kernel_kib();
            let cpu_spawn = cpu_self();
            let t0 = Instant::now();
            let pids = start_fleet(l, ctx, &mut m, n, &ftx, &frx);
            m.extra.insert("spawn_s".into(), t0.elapsed().as_secs_f64());
            let spawn_cpu = (cpu_self() - cpu_spawn).as_secs_f64();
            m.extra.insert("spawn_cpu_s".into(), spawn_cpu);
            let per_task = kernel_kib().saturating_sub(k0) as f64 / n.max(1) as f64;
            m.extra.insert("kernel_kib_per_task".into(), per_task);
            m.fleet_rss_kib = Some(rss().rss_kib);
            let c0 = cpu_self();
            let idle_until = Instant::now() + Duration::from_secs_f64(idle_secs);
            ctx.stage("idle (ms)", (idle_secs * 1000.0) as u64);
            while let Some(left) = idle_until.checked_duration_since(Instant::now()) {
                std::thread::sleep(left.min(Duration::from_millis(100)));
                ctx.bar
                    .set_position(((idle_secs - left.as_secs_f64()) * 1000.0) as u64);
            }
            m.extra
                .insert("idle_cpu_s".into(), (cpu_self() - c0).as_secs_f64());
            let cpu_kill = cpu_self();
            let (ended, killall_s) = kill_fleet(l, ctx, &mut m, &pids, &frx, true);
            let kill_cpu = (cpu_self() - cpu_kill).as_secs_f64();
            m.extra.insert("killall_cpu_s".into(), kill_cpu);
            m.extra.insert("killall_s".into(), killall_s);
            m.tasks = n as u64;
            m.peak_tasks = n as u64;
            m.work = ended as f64;
            m.work_wall = Duration::from_secs_f64(killall_s.max(1e-9));
            m.hung = (started_count(&pids) - ended) as u64;
            m.survivors = ctx.survivors();
        }
        Params::ExitLatency {
            fleet,
            tasks,
            concurrency,
        } => {
            let f = ctx
                .fit(&mut m, fleet + concurrency, fds, pids_per)
                .saturating_sub(concurrency) as usize;
            let fleet_pids = start_fleet(l, ctx, &mut m, f, &ftx, &frx);
            l.limit(MAIN, concurrency as usize);
            let child = ctx.programs.stamp();
            ctx.stage("exit latency", tasks);
            let t0 = Instant::now();
            let mut early = Vec::new();
            for idx in 0..tasks as usize {
                l.launch(MAIN, idx, &child, &tx);
                while let Ok(msg) = rx.try_recv() {
                    early.push(msg);
                }
            }
            let ended = collect_done(
                &rx,
                tasks as usize,
                t0 + Duration::from_secs(180),
                early,
                &mut m,
                &ctx.bar,
                |m, idx, _s, d, end| {
                    match end.stdout.last_stamp {
                        Some(ts) => m.latency.record_ns(d.saturating_sub(ts)),
                        None => m.error(format!("task {idx}: no timestamp on stdout")),
                    }
                    Expect::Success.check(m, idx, &end);
                },
            );
            m.work_wall = t0.elapsed();
            m.work = ended as f64;
            m.hung = tasks - ended as u64;
            m.fleet_rss_kib = Some(rss().rss_kib);
            let (fended, _) = kill_fleet(l, ctx, &mut m, &fleet_pids, &frx, false);
            m.hung += (started_count(&fleet_pids) - fended) as u64;
            m.tasks = tasks;
            m.peak_tasks = f as u64 + concurrency;
            m.extra.insert("fleet".into(), f as f64);
            m.survivors = ctx.survivors();
        }
        Params::Chatty {
            tasks,
            rounds,
            lines,
        } => {
            let n = ctx.fit(&mut m, tasks, fds, pids_per) as usize;
            let child = ctx.programs.chatty(rounds, lines);
            ctx.stage("chatty", n as u64);
            let t0 = Instant::now();
            for idx in 0..n {
                l.launch(MAIN, idx, &child, &tx);
            }
            let mut bytes = 0u64;
            let mut nlines = 0u64;
            let ended = collect_done(
                &rx,
                n,
                t0 + Duration::from_secs(180),
                Vec::new(),
                &mut m,
                &ctx.bar,
                |m, idx, _s, _d, end| {
                    end.stdout.record_into(&mut m.latency);
                    bytes += end.stdout.bytes;
                    nlines += end.stdout.lines;
                    if end.stdout.samples.len() as u64 != rounds {
                        m.error(format!(
                            "task {idx}: {} of {rounds} timestamp lines",
                            end.stdout.samples.len()
                        ));
                    }
                    Expect::Success.check(m, idx, &end);
                },
            );
            m.work_wall = t0.elapsed();
            m.work = bytes as f64 / 1e6;
            m.tasks = n as u64;
            m.peak_tasks = n as u64;
            m.hung = (n - ended) as u64;
            m.extra.insert("bytes".into(), bytes as f64);
            m.extra.insert("lines".into(), nlines as f64);
            m.survivors = ctx.survivors();
        }
        Params::Killtree {
            trees,
            width,
            depth,
            ignore_term_every,
            deadline_ms,
            ..
        } => {
            let size = Programs::tree_size(width, depth);
            let n = ctx.fit(&mut m, trees, fds, size + l.extra_pids_per_task()) as usize;
            ctx.stage("trees: spawning", n as u64);
            for idx in 0..n {
                let ignore =
                    ignore_term_every > 0 && (idx as u64).is_multiple_of(ignore_term_every);
                l.launch(MAIN, idx, &ctx.programs.tree(width, depth, ignore), &tx);
            }
            let mut early = Vec::new();
            let pids = await_started(&rx, n, &mut m, &ctx.bar, &mut early);
            let expected = n as u64 * size;
            let seen = ctx.wait_population(expected, Duration::from_secs(20));
            if seen < expected {
                m.notes
                    .push(format!("only {seen} of {expected} tree processes came up"));
            }
            m.extra.insert("processes".into(), seen as f64);
            ctx.stage("kill trees", started_count(&pids) as u64);
            let k0 = mono_ns();
            let t0 = Instant::now();
            l.kill_group(MAIN, &pids);
            let deadline = t0 + Duration::from_millis(deadline_ms);
            let mut last = 0u64;
            let ended = collect_done(
                &rx,
                started_count(&pids),
                deadline,
                early,
                &mut m,
                &ctx.bar,
                |m, idx, _s, d, end| {
                    m.latency.record_ns(d.saturating_sub(k0));
                    last = last.max(d);
                    Expect::Killed.check(m, idx, &end);
                },
            );
            m.hung = (started_count(&pids) - ended) as u64;
            m.survivors = ctx.survivors();
            m.work = ended as f64;
            m.work_wall = if m.hung > 0 {
                t0.elapsed()
            } else {
                Duration::from_nanos(last.saturating_sub(k0).max(1))
            };
            m.tasks = n as u64;
            m.peak_tasks = n as u64;
            if m.hung > 0 {
                m.notes.push(format!(
                    "{} of {} tasks never ended within {deadline_ms} ms: their killed main process left descendants holding the pipes",
                    m.hung,
                    started_count(&pids)
                ));
            }
        }
        Params::Reqrep {
            tasks,
            rounds,
            size,
        } => {
            let n = ctx.fit(&mut m, tasks, fds + 1, pids_per) as usize;
            let child = ctx.programs.reqrep(rounds, size);
            ctx.stage("reqrep", n as u64);
            let t0 = Instant::now();
            for idx in 0..n {
                l.launch(MAIN, idx, &child, &tx);
            }
            let mut trips = 0u64;
            let ended = collect_done(
                &rx,
                n,
                t0 + Duration::from_secs(300),
                Vec::new(),
                &mut m,
                &ctx.bar,
                |m, idx, _s, _d, end| {
                    record_round_trips(m, idx, &end.requests, rounds);
                    trips += end.requests.rtts_ns.len() as u64;
                    Expect::Success.check(m, idx, &end);
                },
            );
            m.work_wall = t0.elapsed();
            m.work = trips as f64;
            m.tasks = n as u64;
            m.peak_tasks = n as u64;
            m.hung = (n - ended) as u64;
            m.extra.insert("round_trips".into(), trips as f64);
            m.survivors = ctx.survivors();
        }
    }
    // Tear down what is left (hung tasks' trees), so their supervising code can finish.
    if m.hung > 0 {
        crate::bench::census::kill_tagged(&ctx.tag);
        let (mut scratch, left) = (Measured::default(), m.hung as usize);
        collect_done(
            &rx,
            left,
            Instant::now() + Duration::from_secs(2),
            Vec::new(),
            &mut scratch,
            &ctx.bar,
            |_, _, _, _, _| {},
        );
    }
    Ok(m)
}
