//! `std`: a plain `std::process::Command` loop on one thread with the same pipes as the
//! others (stdin `/dev/null`, stdout and stderr piped): the baseline of
//! `spawn --submitters 1`. The loop keeps every child; afterwards each one's pipes are read
//! to EOF and it is waited for. The rate is the loop's.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::common::{Expect, TaskEnd};
use super::{Ctx, Measured, NotRun};
use crate::bench::resources::{cpu_self, mono_ns};
use crate::bench::scenario::Params;
use crate::bench::stats::LineClock;

pub fn run(params: &Params, ctx: &Ctx) -> Result<Measured, NotRun> {
    let Params::Spawn { tasks, .. } = *params else {
        return Err(NotRun::Unavailable("std is a spawn baseline".into()));
    };
    if !params.one_caller() {
        return Err(NotRun::Unavailable(
            "std is the baseline of spawn --submitters 1".into(),
        ));
    }
    let mut m = Measured::default();
    let n = ctx.fit(&mut m, tasks, 2, 1) as usize;
    let child = ctx.programs.spawned(params);
    ctx.stage("spawn loop + reap", n as u64);
    let cpu0 = cpu_self();
    let t0 = Instant::now();
    let mut children = Vec::with_capacity(n);
    for idx in 0..n {
        let start_ns = mono_ns();
        let spawned = Command::new(&child.program)
            .args(&child.args)
            .env(crate::bench::census::TAG_VAR, &ctx.tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(c) => children.push((idx, start_ns, c)),
            Err(e) => m.error(format!("spawn {idx}: {e}")),
        }
    }
    let spawn_loop = t0.elapsed();
    let mut ended = 0;
    for (idx, start_ns, mut c) in children {
        let mut clock = LineClock::default();
        let mut buf = Vec::new();
        if let Some(mut out) = c.stdout.take() {
            let _ = out.read_to_end(&mut buf);
            clock.feed(&buf, mono_ns());
        }
        if let Some(mut err) = c.stderr.take() {
            let _ = err.read_to_end(&mut buf);
        }
        let status = c.wait().map_err(|e| e.to_string());
        m.latency.record_ns(mono_ns().saturating_sub(start_ns));
        Expect::Success.check(
            &mut m,
            idx,
            &TaskEnd {
                status,
                stdout: clock,
                requests: Default::default(),
            },
        );
        ended += 1;
        ctx.bar.inc(1);
    }
    m.extra
        .insert("all_done_s".into(), t0.elapsed().as_secs_f64());
    m.extra
        .insert("spawn_loop_s".into(), spawn_loop.as_secs_f64());
    m.extra
        .insert("phase_cpu_s".into(), (cpu_self() - cpu0).as_secs_f64());
    m.work_wall = spawn_loop;
    m.work = ended as f64;
    m.tasks = n as u64;
    m.peak_tasks = n as u64;
    m.survivors = ctx.survivors();
    Ok(m)
}
