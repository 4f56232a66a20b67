//! `limit`: the floor, where one exists. `spawn`: bare `posix_spawn` + `waitpid` loops, one
//! per core, no pipes. `chatty`: one thread, one `poll` over every stdout pipe and plain
//! `read`s into one buffer. No other scenario has a meaningful floor.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::{Ctx, Measured, NotRun};
use crate::bench::resources::mono_ns;
use crate::bench::scenario::Params;
use crate::bench::stats::{Latency, LineClock};

pub fn run(params: &Params, ctx: &Ctx) -> Result<Measured, NotRun> {
    match *params {
        Params::Spawn {
            tasks,
            concurrency,
            hold,
            ..
        } => Ok(spawn(tasks, concurrency, hold, ctx)),
        Params::Chatty {
            tasks,
            rounds,
            lines,
        } => chatty(tasks, rounds, lines, ctx),
        _ => Err(NotRun::Unavailable("no floor for this scenario".into())),
    }
}

fn cstr(s: impl AsRef<[u8]>) -> CString {
    CString::new(s.as_ref().to_vec()).expect("no NUL")
}

/// `prog` with `args` and this process's environment (the scenario's tag in place of ours).
fn spec_of(
    prog: &std::path::Path,
    args: &[std::ffi::OsString],
    ctx: &Ctx,
) -> crate::sys::SpawnSpec {
    let prog = cstr(prog.as_os_str().as_bytes());
    let mut argv_c = vec![prog.clone()];
    argv_c.extend(args.iter().map(|a| cstr(a.as_bytes())));
    let mut env_c: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != crate::bench::census::TAG_VAR)
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(kv)
        })
        .collect();
    env_c.push(cstr(format!(
        "{}={}",
        crate::bench::census::TAG_VAR,
        ctx.tag
    )));
    crate::sys::SpawnSpec::new(prog, argv_c, env_c)
}

fn spawn(tasks: u64, concurrency: u64, hold: u64, ctx: &Ctx) -> Measured {
    // Idle children held meanwhile (no fd per child here).
    let mut m = Measured::default();
    let hold = ctx.fit(&mut m, hold, 0, 1);
    let idle = ctx.programs.idle();
    let idle_spec = spec_of(&idle.program, &idle.args, ctx);
    let held: Vec<i32> = {
        let spawner = idle_spec.spawner();
        ctx.stage("holding idle tasks", hold);
        (0..hold).filter_map(|_| spawner.spawn().ok()).collect()
    };
    if !held.is_empty() {
        // Let the held tasks finish starting up before the measured spawns.
        ctx.stage("waiting for the held tasks to settle", 0);
        let waited = crate::bench::resources::wait_quiet(4, Duration::from_secs(60));
        m.extra.insert("settle_s".into(), waited.as_secs_f64());
    }
    let mut m = spawn_phase(tasks, concurrency, ctx, m);
    m.extra.insert("held".into(), held.len() as f64);
    m.peak_tasks += held.len() as u64;
    for &pid in &held {
        crate::sys::kill_via_pidfd(pid);
    }
    for &pid in &held {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
    }
    m.survivors = ctx.survivors();
    m
}

fn spawn_phase(tasks: u64, concurrency: u64, ctx: &Ctx, mut m: Measured) -> Measured {
    let child = ctx.programs.short();
    let spec = spec_of(&child.program, &child.args, ctx);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(tasks.max(1) as usize) as u64;
    ctx.stage("spawn + waitpid", tasks);
    let cpu0 = crate::bench::resources::cpu_self();
    let t0 = Instant::now();
    let results: Vec<(Latency, u64, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let my_n = tasks / threads + u64::from(t < tasks % threads);
                let my_c = (concurrency / threads).max(1);
                let (spec, bar) = (&spec, &ctx.bar);
                s.spawn(move || {
                    let spawner = spec.spawner();
                    let mut lat = Latency::default();
                    let mut errors = 0;
                    let mut samples = Vec::new();
                    let mut inflight: HashMap<i32, u64> = HashMap::new();
                    let mut started = 0;
                    loop {
                        while started < my_n && (inflight.len() as u64) < my_c {
                            started += 1;
                            let s0 = mono_ns();
                            match spawner.spawn() {
                                Ok(pid) => {
                                    inflight.insert(pid, s0);
                                }
                                Err(rc) => {
                                    errors += 1;
                                    if samples.len() < 3 {
                                        samples.push(format!(
                                            "posix_spawn: {}",
                                            std::io::Error::from_raw_os_error(rc)
                                        ));
                                    }
                                }
                            }
                        }
                        if inflight.is_empty() {
                            break;
                        }
                        let (pid, exited_zero) = match crate::sys::wait_thread_child() {
                            Ok(ended) => ended,
                            Err(e) => {
                                errors += 1;
                                samples.push(format!("waitpid: {e}"));
                                break;
                            }
                        };
                        if let Some(s0) = inflight.remove(&pid) {
                            lat.record_ns(mono_ns().saturating_sub(s0));
                            bar.inc(1);
                            if !exited_zero {
                                errors += 1;
                            }
                        }
                    }
                    (lat, errors, samples)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("spawn thread"))
            .collect()
    });
    m.work_wall = t0.elapsed();
    m.tasks = tasks;
    m.peak_tasks = concurrency.min(tasks);
    m.extra.insert(
        "phase_cpu_s".into(),
        (crate::bench::resources::cpu_self() - cpu0).as_secs_f64(),
    );
    for (lat, errors, samples) in results {
        m.latency.merge(&lat);
        m.errors += errors;
        m.error_samples.extend(samples);
    }
    m.work = m.latency.len() as f64;
    m.survivors = ctx.survivors();
    m
}

/// The chatty floor's poll timeout, as the original 1000 ms.
const POLL_TIMEOUT: Timespec = Timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

fn chatty(tasks: u64, rounds: u64, lines: u64, ctx: &Ctx) -> Result<Measured, NotRun> {
    let mut m = Measured::default();
    let n = ctx.fit(&mut m, tasks, 1, 1) as usize;
    let child = ctx.programs.chatty(rounds, lines);
    ctx.stage("chatty (poll + read)", n as u64);
    let t0 = Instant::now();
    let mut children = Vec::with_capacity(n);
    for idx in 0..n {
        let spawned = Command::new(&child.program)
            .args(&child.args)
            .env(crate::bench::census::TAG_VAR, &ctx.tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut c) => {
                let out = c.stdout.take().expect("piped");
                children.push((c, Some(out), LineClock::default()));
            }
            Err(e) => m.error(format!("spawn {idx}: {e}")),
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = children.len();
    let deadline = t0 + Duration::from_secs(180);
    while open > 0 && Instant::now() < deadline {
        // Which children are readable (or hung up), found by one poll over every open pipe.
        let mut ready: Vec<(usize, PollFlags)> = Vec::new();
        {
            let mut pfds: Vec<PollFd<'_>> = Vec::with_capacity(open);
            let mut which = Vec::with_capacity(open);
            for (i, c) in children.iter().enumerate() {
                if let Some(out) = &c.1 {
                    pfds.push(PollFd::new(out, PollFlags::IN));
                    which.push(i);
                }
            }
            if poll(&mut pfds, Some(&POLL_TIMEOUT)).is_err() {
                continue;
            }
            for (p, &i) in pfds.iter().zip(&which) {
                if !p.revents().is_empty() {
                    ready.push((i, p.revents()));
                }
            }
        }
        for (i, revents) in ready {
            let c = &mut children[i];
            let Some(out) = &c.1 else { continue };
            let got = rustix::io::read(out, &mut buf[..]);
            if let Ok(got @ 1..) = got {
                c.2.feed(&buf[..got], mono_ns());
            } else if got == Ok(0)
                || revents.intersects(PollFlags::HUP | PollFlags::ERR) && got.is_err()
            {
                c.1 = None;
                open -= 1;
                match c.0.wait() {
                    Ok(s) if s.success() => {}
                    other => m.error(format!("task {i}: {other:?}")),
                }
                ctx.bar.inc(1);
            }
        }
    }
    m.work_wall = t0.elapsed();
    let mut bytes = 0;
    let mut nlines = 0;
    for (i, c) in children.iter().enumerate() {
        bytes += c.2.bytes;
        nlines += c.2.lines;
        c.2.record_into(&mut m.latency);
        if c.2.samples.len() as u64 != rounds {
            m.error(format!(
                "task {i}: {} of {rounds} timestamp lines",
                c.2.samples.len()
            ));
        }
    }
    m.hung = open as u64;
    m.work = bytes as f64 / 1e6;
    m.tasks = n as u64;
    m.peak_tasks = n as u64;
    m.extra.insert("bytes".into(), bytes as f64);
    m.extra.insert("lines".into(), nlines as f64);
    m.survivors = ctx.survivors();
    Ok(m)
}
