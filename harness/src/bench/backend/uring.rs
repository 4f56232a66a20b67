//! `uring` (and `epoll`): pidring's own Pool. One pool per scenario, one worker per core,
//! containment from `--containment` (default `auto`: a cgroup per task where cgroup v2 is
//! writable). Tasks are spawned from one submitter thread per worker (so spawns run in
//! parallel, as tokio's do on its two workers). Events are consumed from `pool.events()` by
//! the measuring thread, except in `chatty` and `reqrep`, where the data is consumed where it
//! is read, as tokio's per-child task does (an `on_event` callback: `inline.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use pidring::{
    BuildError, ContainmentKind, Event, Outcome, Pool, Reason, Stdio, StreamId, TaskHandle, TaskId,
    TaskSpec,
};

use super::common::{record_round_trips, RoundTrips};
use super::inline::{self, Inline, TaskStats};
use super::{Ctx, Measured, NotRun};
use crate::bench::resources::{cpu_self, kernel_kib, mono_ns, open_fds, rss, FdPeak};
use crate::bench::scenario::{Child, Params, Programs};
use crate::bench::stats::LineClock;

const MAIN: usize = 0;
const FLEET: usize = 1;

/// What a submitter thread reports.
enum Sub {
    Spawned {
        group: usize,
        idx: usize,
        start_ns: u64,
        handle: TaskHandle,
    },
    Failed {
        group: usize,
        idx: usize,
        error: String,
    },
}

struct Tracked {
    group: usize,
    idx: usize,
    start_ns: u64,
    handle: TaskHandle,
    clock: LineClock,
}

/// A task that ended: what the scenario looks at.
struct Ended {
    group: usize,
    idx: usize,
    start_ns: u64,
    done_ns: u64,
    outcome: Outcome,
    clock: LineClock,
    trips: RoundTrips,
}

/// The measuring thread's view of the pool: tasks by id, and events that came before the
/// submitter said which task an id is.
struct Book {
    live: HashMap<TaskId, Tracked>,
    early: HashMap<TaskId, Vec<(u64, Event)>>,
    ended: Vec<Ended>,
    spawned: [usize; 2],
    failed: [usize; 2],
    /// Every spawn attempt of a group reported (spawned or failed).
    reported: [usize; 2],
    /// `Output` events received, and the most waiting in the channel at once.
    outputs: u64,
    max_queued: usize,
    /// With an inline consumer: each task's figures, sent before its `Done`.
    inline_stats: Option<Receiver<(TaskId, TaskStats)>>,
    stats: HashMap<TaskId, TaskStats>,
}

impl Book {
    fn new() -> Book {
        Book {
            live: HashMap::new(),
            early: HashMap::new(),
            ended: Vec::new(),
            spawned: [0; 2],
            failed: [0; 2],
            reported: [0; 2],
            outputs: 0,
            max_queued: 0,
            inline_stats: None,
            stats: HashMap::new(),
        }
    }

    fn handles(&self, group: usize) -> Vec<TaskHandle> {
        self.live
            .values()
            .filter(|t| t.group == group)
            .map(|t| t.handle.clone())
            .collect()
    }

    /// Handles one message (an event or a submitter report), waiting at most `wait`.
    /// Returns false when nothing came.
    fn pump(
        &mut self,
        events: &Receiver<Event>,
        subs: &Receiver<Sub>,
        m: &mut Measured,
        wait: Duration,
    ) -> bool {
        crossbeam_channel::select! {
            recv(events) -> ev => match ev {
                Ok(ev) => {
                    self.max_queued = self.max_queued.max(events.len());
                    self.event(mono_ns(), ev);
                    true
                }
                Err(_) => { std::thread::sleep(wait.min(Duration::from_millis(10))); false }
            },
            recv(subs) -> sub => match sub {
                Ok(Sub::Spawned { group, idx, start_ns, handle }) => {
                    let id = handle.id();
                    self.live.insert(id, Tracked { group, idx, start_ns, handle, clock: LineClock::default() });
                    self.spawned[group] += 1;
                    self.reported[group] += 1;
                    for (at, ev) in self.early.remove(&id).unwrap_or_default() {
                        self.event(at, ev);
                    }
                    true
                }
                Ok(Sub::Failed { group, idx, error }) => {
                    m.error(format!("spawn {idx}: {error}"));
                    self.failed[group] += 1;
                    self.reported[group] += 1;
                    true
                }
                // All submitters are gone: only events can come.
                Err(_) => match events.recv_timeout(wait) {
                    Ok(ev) => { self.event(mono_ns(), ev); true }
                    Err(_) => false,
                },
            },
            default(wait) => false,
        }
    }

    fn event(&mut self, at: u64, ev: Event) {
        let id = ev.task();
        let Some(t) = self.live.get_mut(&id) else {
            self.early.entry(id).or_default().push((at, ev));
            return;
        };
        match ev {
            Event::Output { stream, bytes, .. } => {
                self.outputs += 1;
                if stream == StreamId::STDOUT {
                    t.clock.feed(&bytes, at);
                }
            }
            Event::Done { outcome, .. } => {
                let t = self.live.remove(&id).expect("tracked");
                if let Some(rx) = &self.inline_stats {
                    self.stats.extend(rx.try_iter());
                }
                let (clock, trips) = match self.stats.remove(&id) {
                    Some(stats) => (stats.clock, stats.trips),
                    None => (t.clock, RoundTrips::default()),
                };
                self.ended.push(Ended {
                    group: t.group,
                    idx: t.idx,
                    start_ns: t.start_ns,
                    done_ns: at,
                    outcome,
                    clock,
                    trips,
                });
            }
            _ => {}
        }
    }
}

/// Starts `threads` submitter threads spawning tasks `0..n` of `group`; with `tokens`, each
/// spawn first takes a token (the measuring thread gives one back per ended task).
#[allow(clippy::too_many_arguments)]
fn submit<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    pool: &'s Pool,
    group: usize,
    n: usize,
    threads: usize,
    tokens: Option<Receiver<()>>,
    spec: impl Fn(usize) -> TaskSpec + Sync + Send + 's,
    tx: &Sender<Sub>,
) {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let spec = std::sync::Arc::new(spec);
    for _ in 0..threads.max(1) {
        let (next, spec, tx, tokens) = (next.clone(), spec.clone(), tx.clone(), tokens.clone());
        s.spawn(move || loop {
            if let Some(t) = &tokens {
                if t.recv().is_err() {
                    return;
                }
            }
            let idx = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if idx >= n {
                return;
            }
            let start_ns = mono_ns();
            let msg = match pool.spawn(spec(idx)) {
                Ok(handle) => Sub::Spawned {
                    group,
                    idx,
                    start_ns,
                    handle,
                },
                Err(e) => Sub::Failed {
                    group,
                    idx,
                    error: e.to_string(),
                },
            };
            if tx.send(msg).is_err() {
                return;
            }
        });
    }
}

fn spec_of(child: &Child, ctx: &Ctx) -> TaskSpec {
    let (k, v) = ctx.env();
    TaskSpec::new(&child.program)
        .args(&child.args)
        .env(k, v)
        .stdout(Stdio::Capture)
        .stderr(Stdio::Capture)
}

fn expect_reason(m: &mut Measured, e: &Ended, ok: impl Fn(&Reason) -> bool) {
    if !ok(&e.outcome.reason) {
        m.error(format!("task {}: {:?}", e.idx, e.outcome.reason));
    }
}

pub fn run(backend: pidring::Backend, params: &Params, ctx: &Ctx) -> Result<Measured, NotRun> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // A fleet held at once may need more fixed-file tables than one per core.
    let held = match *params {
        Params::Idle { tasks, .. } => tasks,
        Params::ExitLatency { fleet, .. } => fleet + 1,
        Params::Spawn { hold, .. } => hold + workers as u64,
        _ => 0,
    };
    let build = |subreaper: bool| -> Result<(Pool, Option<Inline>), NotRun> {
        let mut builder = Pool::builder()
            .workers(workers)
            .subreaper(subreaper)
            .containment(ctx.containment.to_pidring())
            .backend(backend);
        if held > 0 {
            builder = builder.max_tasks(usize::try_from(held).unwrap_or(usize::MAX));
        }
        let inline = match *params {
            Params::Chatty { .. } => Some(None),
            Params::Reqrep { size, .. } => Some(Some(size as usize)),
            _ => None,
        }
        .map(|reqrep_size| {
            let (callback, inline) = inline::consumer(reqrep_size);
            builder = std::mem::replace(&mut builder, Pool::builder()).on_event(callback);
            inline
        });
        let pool = builder.build().map_err(|e| match e {
            BuildError::BackendUnavailable(..) => NotRun::Unavailable(e.to_string()),
            other => NotRun::Failed(format!("Pool::build: {other}")),
        })?;
        Ok((pool, inline))
    };
    // Process-group mode (the only one in a default container) cannot reach a task's `setsid`
    // escapers: a careful user makes that pool a subreaper, which gets them back and kills
    // them. A cgroup pool needs none (and would pay for orphan sweeps after each exit).
    let (mut pool, mut inline) = build(false)?;
    if pool.containment() == ContainmentKind::ProcessGroup {
        pool.shutdown();
        (pool, inline) = build(true)?;
    }
    let mut m = Measured {
        base_rss_kib: Some(rss().rss_kib),
        ..Default::default()
    };
    m.notes.push(format!(
        "pool: {} driver, {} containment, {} workers{}",
        pool.backend().as_str(),
        pool.containment().as_str(),
        pool.workers(),
        if inline.is_some() {
            ", events consumed by an on_event callback"
        } else {
            ""
        }
    ));
    let result = scenario(&pool, workers, params, ctx, &mut m, inline.as_ref());
    let stats = pool.stats();
    m.extra
        .insert("stale_completions".into(), stats.stale_completions as f64);
    m.extra
        .insert("rejected_events".into(), stats.rejected_events as f64);
    pool.shutdown();
    result.map(|()| m)
}

/// Lets the held tasks finish starting up before the measured spawns (see `wait_quiet`).
fn settle(ctx: &Ctx, m: &mut Measured) {
    ctx.stage("waiting for the held tasks to settle", 0);
    let waited = crate::bench::resources::wait_quiet(4, Duration::from_secs(60));
    m.extra.insert("settle_s".into(), waited.as_secs_f64());
}

fn capacity_fit(pool: &Pool, ctx: &Ctx, m: &mut Measured, asked: u64, pids: u64) -> u64 {
    let mut n = ctx.fit(m, asked, 0, pids);
    let cap = pool.capacity() as u64;
    if cap < n {
        let why = format!("{n} lowered to {cap}: Pool::capacity()");
        ctx.note(&why);
        m.notes.push(why);
        n = cap;
    }
    n
}

fn scenario(
    pool: &Pool,
    workers: usize,
    params: &Params,
    ctx: &Ctx,
    m: &mut Measured,
    inline: Option<&Inline>,
) -> Result<(), NotRun> {
    let events = match inline {
        Some(inline) => inline.events.clone(),
        None => pool.events().clone(),
    };
    let (sub_tx, sub_rx) = crossbeam_channel::unbounded::<Sub>();
    let tick = Duration::from_millis(50);
    std::thread::scope(|s| {
        let mut book = Book::new();
        book.inline_stats = inline.map(|i| i.stats.clone());
        match *params {
            Params::Spawn {
                tasks,
                concurrency,
                hold,
                ..
            } => {
                // Idle tasks held while spawning (their fds sit in the rings' tables).
                let held = if hold > 0 {
                    let h = capacity_fit(pool, ctx, m, hold, 1) as usize;
                    let idle = ctx.programs.idle();
                    ctx.stage("holding idle tasks", h as u64);
                    submit(
                        s,
                        pool,
                        FLEET,
                        h,
                        workers,
                        None,
                        move |_| spec_of(&idle, ctx),
                        &sub_tx,
                    );
                    while book.reported[FLEET] < h {
                        if book.pump(&events, &sub_rx, m, tick) {
                            ctx.bar.set_position(book.reported[FLEET] as u64);
                        }
                    }
                    settle(ctx, m);
                    h
                } else {
                    0
                };
                let n = tasks as usize;
                let one_caller = params.one_caller();
                // From one caller nothing limits the tasks in flight: the loop is the rate.
                let (give, take) = crossbeam_channel::unbounded();
                if !one_caller {
                    for _ in 0..concurrency {
                        let _ = give.send(());
                    }
                }
                let child = ctx.programs.spawned(params);
                ctx.stage("spawn + reap", tasks);
                let threads0 = crate::bench::resources::cpu_by_thread_kind();
                let cpu0 = cpu_self();
                let t0 = Instant::now();
                submit(
                    s,
                    pool,
                    MAIN,
                    n,
                    params.submitters(),
                    (!one_caller).then_some(take),
                    move |_| spec_of(&child, ctx),
                    &sub_tx,
                );
                drop(sub_tx);
                let deadline = t0 + Duration::from_secs(180);
                let mut ended = 0;
                let mut spawn_loop = None;
                while ended + book.failed[MAIN] < n && Instant::now() < deadline {
                    let before = book.failed[MAIN];
                    book.pump(&events, &sub_rx, m, tick);
                    if spawn_loop.is_none() && book.reported[MAIN] == n {
                        spawn_loop = Some(t0.elapsed());
                    }
                    for _ in before..book.failed[MAIN] {
                        let _ = give.send(());
                    }
                    for e in book.ended.drain(..) {
                        if e.group != MAIN {
                            m.error(format!("held task {} ended: {:?}", e.idx, e.outcome.reason));
                            continue;
                        }
                        m.latency.record_ns(e.done_ns.saturating_sub(e.start_ns));
                        expect_reason(m, &e, |r| *r == Reason::Exited(0));
                        ended += 1;
                        ctx.bar.inc(1);
                        let _ = give.send(());
                    }
                }
                drop(give);
                let all_done = t0.elapsed();
                m.extra
                    .insert("phase_cpu_s".into(), (cpu_self() - cpu0).as_secs_f64());
                // Where the supervisor's CPU went, per thread kind (submitter threads end
                // with the phase, so they show as what is missing from the total).
                for (kind, t) in crate::bench::resources::cpu_by_thread_kind() {
                    let before = threads0.get(&kind).copied().unwrap_or_default();
                    let spent = t.saturating_sub(before).as_secs_f64();
                    m.extra.insert(format!("cpu_{kind}_s"), spent);
                }
                m.extra.insert("all_done_s".into(), all_done.as_secs_f64());
                if let Some(l) = spawn_loop {
                    m.extra.insert("spawn_loop_s".into(), l.as_secs_f64());
                }
                m.extra.insert("held".into(), held as f64);
                m.work_wall = match (one_caller, spawn_loop) {
                    (true, Some(l)) => l,
                    _ => all_done,
                };
                m.work = ended as f64;
                m.tasks = tasks;
                m.peak_tasks = if one_caller {
                    tasks
                } else {
                    concurrency.min(tasks)
                } + held as u64;
                m.hung = (book.spawned[MAIN] - ended) as u64;
                if held > 0 {
                    let (killed, _) = kill_all(&mut book, FLEET, ctx, m, &events, &sub_rx, false);
                    m.hung += (held - killed) as u64;
                }
                m.survivors = ctx.survivors();
            }
            Params::Idle { tasks, idle_secs } => {
                let n = capacity_fit(pool, ctx, m, tasks, 1) as usize;
                let child = ctx.programs.idle();
                ctx.stage("fleet: spawning", n as u64);
                let k0 = kernel_kib();
                let cpu_spawn = cpu_self();
                let t0 = Instant::now();
                submit(
                    s,
                    pool,
                    FLEET,
                    n,
                    workers,
                    None,
                    move |_| spec_of(&child, ctx),
                    &sub_tx,
                );
                drop(sub_tx);
                while book.reported[FLEET] < n {
                    if book.pump(&events, &sub_rx, m, tick) {
                        ctx.bar.set_position(book.reported[FLEET] as u64);
                    }
                }
                m.extra.insert("spawn_s".into(), t0.elapsed().as_secs_f64());
                let spawn_cpu = (cpu_self() - cpu_spawn).as_secs_f64();
                m.extra.insert("spawn_cpu_s".into(), spawn_cpu);
                let per_task = kernel_kib().saturating_sub(k0) as f64 / n.max(1) as f64;
                m.extra.insert("kernel_kib_per_task".into(), per_task);
                for e in book.ended.drain(..) {
                    m.error(format!(
                        "fleet task {} ended early: {:?}",
                        e.idx, e.outcome.reason
                    ));
                }
                m.fleet_rss_kib = Some(rss().rss_kib);
                let c0 = cpu_self();
                let idle_until = Instant::now() + Duration::from_secs_f64(idle_secs);
                ctx.stage("idle (ms)", (idle_secs * 1000.0) as u64);
                while let Some(left) = idle_until.checked_duration_since(Instant::now()) {
                    book.pump(&events, &sub_rx, m, left.min(Duration::from_millis(100)));
                    ctx.bar
                        .set_position(((idle_secs - left.as_secs_f64()) * 1000.0) as u64);
                }
                m.extra
                    .insert("idle_cpu_s".into(), (cpu_self() - c0).as_secs_f64());
                let fds_fleet = open_fds();
                let fd_peak = FdPeak::start();
                let cpu_kill = cpu_self();
                let (ended, killall_s) = kill_all(&mut book, FLEET, ctx, m, &events, &sub_rx, true);
                let kill_cpu = (cpu_self() - cpu_kill).as_secs_f64();
                let peak = fd_peak.peak();
                m.extra.insert("killall_cpu_s".into(), kill_cpu);
                m.extra.insert("killall_s".into(), killall_s);
                m.extra.insert("fds_fleet".into(), fds_fleet as f64);
                m.extra.insert("fds_peak_killall".into(), peak as f64);
                let line = format!(
                    "{n} tasks: process fds {fds_fleet} with the fleet up, peak {peak} during \
                     kill-all (pidfds lent at most {} at once); kill-all CPU {kill_cpu:.2} s",
                    pool.stats().lent_pidfds_peak
                );
                ctx.note(&line);
                m.notes.push(line);
                m.tasks = n as u64;
                m.peak_tasks = n as u64;
                m.work = ended as f64;
                m.work_wall = Duration::from_secs_f64(killall_s.max(1e-9));
                m.survivors = ctx.survivors();
            }
            Params::ExitLatency {
                fleet,
                tasks,
                concurrency,
            } => {
                let f = capacity_fit(pool, ctx, m, fleet + concurrency, 1)
                    .saturating_sub(concurrency) as usize;
                let idle = ctx.programs.idle();
                ctx.stage("fleet: spawning", f as u64);
                submit(
                    s,
                    pool,
                    FLEET,
                    f,
                    workers,
                    None,
                    move |_| spec_of(&idle, ctx),
                    &sub_tx,
                );
                while book.reported[FLEET] < f {
                    if book.pump(&events, &sub_rx, m, tick) {
                        ctx.bar.set_position(book.reported[FLEET] as u64);
                    }
                }
                let stamp = ctx.programs.stamp();
                let n = tasks as usize;
                let (give, take) = crossbeam_channel::unbounded();
                for _ in 0..concurrency {
                    let _ = give.send(());
                }
                ctx.stage("exit latency", tasks);
                let t0 = Instant::now();
                submit(
                    s,
                    pool,
                    MAIN,
                    n,
                    1,
                    Some(take),
                    move |_| spec_of(&stamp, ctx),
                    &sub_tx,
                );
                drop(sub_tx);
                let deadline = t0 + Duration::from_secs(180);
                let mut ended = 0;
                while ended + book.failed[MAIN] < n && Instant::now() < deadline {
                    let before = book.failed[MAIN];
                    book.pump(&events, &sub_rx, m, tick);
                    for _ in before..book.failed[MAIN] {
                        let _ = give.send(());
                    }
                    let done: Vec<Ended> = book.ended.drain(..).collect();
                    for e in done {
                        if e.group == FLEET {
                            m.error(format!(
                                "fleet task {} ended early: {:?}",
                                e.idx, e.outcome.reason
                            ));
                            continue;
                        }
                        match e.clock.last_stamp {
                            Some(ts) => m.latency.record_ns(e.done_ns.saturating_sub(ts)),
                            None => m.error(format!("task {}: no timestamp on stdout", e.idx)),
                        }
                        expect_reason(m, &e, |r| *r == Reason::Exited(0));
                        ended += 1;
                        ctx.bar.inc(1);
                        let _ = give.send(());
                    }
                }
                drop(give);
                m.work_wall = t0.elapsed();
                m.work = ended as f64;
                m.hung = (book.spawned[MAIN] - ended) as u64;
                m.fleet_rss_kib = Some(rss().rss_kib);
                kill_all(&mut book, FLEET, ctx, m, &events, &sub_rx, false);
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
                let n = capacity_fit(pool, ctx, m, tasks, 1) as usize;
                let child = ctx.programs.chatty(rounds, lines);
                ctx.stage("chatty", n as u64);
                let t0 = Instant::now();
                submit(
                    s,
                    pool,
                    MAIN,
                    n,
                    workers,
                    None,
                    move |_| spec_of(&child, ctx),
                    &sub_tx,
                );
                drop(sub_tx);
                let deadline = t0 + Duration::from_secs(180);
                let (mut ended, mut bytes, mut nlines) = (0, 0u64, 0u64);
                while ended + book.failed[MAIN] < n && Instant::now() < deadline {
                    book.pump(&events, &sub_rx, m, tick);
                    for e in book.ended.drain(..) {
                        e.clock.record_into(&mut m.latency);
                        bytes += e.clock.bytes;
                        nlines += e.clock.lines;
                        if e.clock.samples.len() as u64 != rounds {
                            m.error(format!(
                                "task {}: {} of {rounds} timestamp lines",
                                e.idx,
                                e.clock.samples.len()
                            ));
                        }
                        expect_reason(m, &e, |r| *r == Reason::Exited(0));
                        ended += 1;
                        ctx.bar.inc(1);
                    }
                }
                m.work_wall = t0.elapsed();
                m.work = bytes as f64 / 1e6;
                m.tasks = n as u64;
                m.peak_tasks = n as u64;
                m.hung = (book.spawned[MAIN] - ended) as u64;
                m.extra.insert("bytes".into(), bytes as f64);
                m.extra.insert("lines".into(), nlines as f64);
                m.survivors = ctx.survivors();
            }
            Params::Killtree {
                trees,
                width,
                depth,
                ignore_term_every,
                grace_ms,
                deadline_ms,
            } => {
                let size = Programs::tree_size(width, depth);
                let n = capacity_fit(pool, ctx, m, trees, size) as usize;
                ctx.stage("trees: spawning", n as u64);
                let grace = Duration::from_millis(grace_ms);
                submit(
                    s,
                    pool,
                    MAIN,
                    n,
                    workers,
                    None,
                    move |idx| {
                        let ignore =
                            ignore_term_every > 0 && (idx as u64).is_multiple_of(ignore_term_every);
                        spec_of(&ctx.programs.tree(width, depth, ignore), ctx).grace(grace)
                    },
                    &sub_tx,
                );
                drop(sub_tx);
                while book.reported[MAIN] < n {
                    if book.pump(&events, &sub_rx, m, tick) {
                        ctx.bar.set_position(book.reported[MAIN] as u64);
                    }
                }
                let expected = n as u64 * size;
                let seen = ctx.wait_population(expected, Duration::from_secs(20));
                if seen < expected {
                    m.notes
                        .push(format!("only {seen} of {expected} tree processes came up"));
                }
                m.extra.insert("processes".into(), seen as f64);
                for e in book.ended.drain(..) {
                    m.error(format!(
                        "tree {} ended before the kill: {:?}",
                        e.idx, e.outcome.reason
                    ));
                }
                ctx.stage("terminate trees", book.spawned[MAIN] as u64);
                let k0 = mono_ns();
                let t0 = Instant::now();
                let live = book.live.len();
                for h in book.handles(MAIN) {
                    if let Err(e) = h.terminate() {
                        m.error(format!("terminate: {e}"));
                    }
                }
                let deadline = t0 + grace + Duration::from_millis(deadline_ms);
                let (mut ended, mut last) = (0, 0u64);
                while ended < live && Instant::now() < deadline {
                    book.pump(&events, &sub_rx, m, tick);
                    for e in book.ended.drain(..) {
                        m.latency.record_ns(e.done_ns.saturating_sub(k0));
                        last = last.max(e.done_ns);
                        expect_reason(m, &e, |r| *r == Reason::Terminated);
                        ended += 1;
                        ctx.bar.inc(1);
                    }
                }
                m.hung = (live - ended) as u64;
                m.survivors = ctx.survivors();
                if m.survivors > 0 && pool.containment() == ContainmentKind::ProcessGroup {
                    // Descendants that left their group (`setsid`) outlive the group kill;
                    // they come back to this subreaper pool, whose orphan sweep kills them
                    // once the tasks they may belong to have ended: give it a moment.
                    let at_done = m.survivors;
                    let swept = Instant::now();
                    while m.survivors > 0 && swept.elapsed() < Duration::from_secs(2) {
                        std::thread::sleep(Duration::from_millis(10));
                        m.survivors = ctx.survivors();
                    }
                    m.notes.push(format!(
                        "process-group mode: {at_done} escaped descendants alive at the last Done, {} after the orphan sweep ({} ms)",
                        m.survivors,
                        swept.elapsed().as_millis()
                    ));
                    m.extra.insert("escaped_at_done".into(), at_done as f64);
                }
                m.work = ended as f64;
                m.work_wall = if m.hung > 0 {
                    t0.elapsed()
                } else {
                    Duration::from_nanos(last.saturating_sub(k0).max(1))
                };
                m.tasks = n as u64;
                m.peak_tasks = n as u64;
            }
            Params::Reqrep {
                tasks,
                rounds,
                size,
            } => {
                let n = capacity_fit(pool, ctx, m, tasks, 1) as usize;
                let child = ctx.programs.reqrep(rounds, size);
                ctx.stage("reqrep", n as u64);
                let t0 = Instant::now();
                submit(
                    s,
                    pool,
                    MAIN,
                    n,
                    workers,
                    None,
                    move |_| spec_of(&child, ctx).channels(1),
                    &sub_tx,
                );
                drop(sub_tx);
                let deadline = t0 + Duration::from_secs(300);
                let (mut ended, mut trips) = (0, 0u64);
                while ended + book.failed[MAIN] < n && Instant::now() < deadline {
                    book.pump(&events, &sub_rx, m, tick);
                    for e in book.ended.drain(..) {
                        record_round_trips(m, e.idx, &e.trips, rounds);
                        trips += e.trips.rtts_ns.len() as u64;
                        expect_reason(m, &e, |r| *r == Reason::Exited(0));
                        ended += 1;
                        ctx.bar.inc(1);
                    }
                }
                m.work_wall = t0.elapsed();
                m.work = trips as f64;
                m.tasks = n as u64;
                m.peak_tasks = n as u64;
                m.hung = (book.spawned[MAIN] - ended) as u64;
                m.extra.insert("round_trips".into(), trips as f64);
                m.survivors = ctx.survivors();
            }
        }
        if book.outputs > 0 {
            m.extra.insert("output_events".into(), book.outputs as f64);
        }
        m.extra
            .insert("max_events_queued".into(), book.max_queued as f64);
        // Whatever is still live (after errors): kill it and wait for its Done.
        if !book.live.is_empty() {
            for h in book.live.values() {
                let _ = h.handle.kill();
            }
            let until = Instant::now() + Duration::from_secs(5);
            while !book.live.is_empty() && Instant::now() < until {
                book.pump(&events, &sub_rx, &mut Measured::default(), tick);
            }
        }
    });
    Ok(())
}

/// Kills every live task of `group` and waits for their `Done`. Returns (ended, seconds
/// from the first kill to the last Done).
fn kill_all(
    book: &mut Book,
    group: usize,
    ctx: &Ctx,
    m: &mut Measured,
    events: &Receiver<Event>,
    subs: &Receiver<Sub>,
    record: bool,
) -> (usize, f64) {
    let handles = book.handles(group);
    ctx.stage("kill-all", handles.len() as u64);
    let k0 = mono_ns();
    for h in &handles {
        if let Err(e) = h.kill() {
            m.error(format!("kill: {e}"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ended, mut last) = (0, k0);
    while ended < handles.len() && Instant::now() < deadline {
        book.pump(events, subs, m, Duration::from_millis(50));
        let done: Vec<Ended> = book.ended.drain(..).collect();
        for e in done {
            if e.group != group {
                continue;
            }
            if record {
                m.latency.record_ns(e.done_ns.saturating_sub(k0));
            }
            last = last.max(e.done_ns);
            expect_reason(m, &e, |r| *r == Reason::Terminated);
            ended += 1;
            ctx.bar.inc(1);
        }
    }
    m.hung += (handles.len() - ended) as u64;
    (ended, last.saturating_sub(k0) as f64 / 1e9)
}
