//! `tokio`: what a tokio user writes. A multi-thread runtime with 2 workers; one task per
//! child that reads stdout and stderr and waits for the exit concurrently (`join!`), and
//! kills through `Child::kill` (SIGKILL to the main process only) when asked. A `reqrep`
//! child gets one end of a `UnixStream` pair at fd 3; the same task reads its length-prefixed
//! requests (through a `BufReader`) and writes each back.
//!
//! `tokio-safe` (spawn only): the same with the safety pidring gives its tasks, added the
//! way a tokio user can: a `pre_exec` doing `setsid` + `PR_SET_PDEATHSIG`, which makes std
//! fork (page tables copied) instead of `posix_spawn`.
//!
//! From one caller (`spawn --submitters 1`) the spawns are a plain loop in `block_on`,
//! each child then supervised by its own task.

use std::process::Stdio;
use std::sync::Arc;

use crossbeam_channel::Sender;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::{watch, Semaphore};

use super::common::{run_with, Launch, Msg, RoundTrips, TaskEnd};
use super::{Ctx, Measured, NotRun};
use crate::bench::resources::mono_ns;
use crate::bench::scenario::{Child, Params};
use crate::bench::stats::LineClock;

struct Tokio {
    rt: tokio::runtime::Runtime,
    tag: String,
    /// `tokio-safe`: every command gets the safety `pre_exec`.
    safe: bool,
    /// Per group: kill switch and optional concurrency limit.
    kill: Vec<(watch::Sender<bool>, watch::Receiver<bool>)>,
    sem: Vec<Option<Arc<Semaphore>>>,
}

impl Tokio {
    fn command(&self, child: &Child) -> Command {
        let mut cmd = std::process::Command::new(&child.program);
        cmd.args(&child.args)
            .env(crate::bench::census::TAG_VAR, &self.tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.safe {
            crate::sys::add_safety_pre_exec(&mut cmd);
        }
        Command::from(cmd)
    }
}

impl Launch for Tokio {
    fn launch(&mut self, group: usize, idx: usize, child: &Child, tx: &Sender<Msg>) {
        let mut cmd = self.command(child);
        let channel = match child.reqrep {
            Some(reqrep) => match std::os::unix::net::UnixStream::pair() {
                Ok((ours, theirs)) => {
                    use std::os::fd::AsRawFd;
                    crate::sys::give_fd_at_exec(&mut cmd, theirs.as_raw_fd(), 3);
                    cmd.env(pidring::child::CHANNEL_FDS_VAR, "3");
                    Some((ours, theirs, reqrep.size as usize))
                }
                Err(e) => {
                    let _ = tx.send(Msg::SpawnFailed {
                        idx,
                        error: format!("socketpair: {e}"),
                    });
                    return;
                }
            },
            None => None,
        };
        let kill = self.kill[group].1.clone();
        let sem = self.sem[group].clone();
        let tx = tx.clone();
        self.rt.spawn(supervise(cmd, idx, sem, kill, tx, channel));
    }

    fn limit(&mut self, group: usize, n: usize) {
        self.sem[group] = Some(Arc::new(Semaphore::new(n)));
    }

    fn kill_group(&mut self, group: usize, _pids: &[i32]) {
        let _ = self.kill[group].0.send(true);
    }

    fn fds_per_task(&self) -> u64 {
        3 // stdout, stderr, and the pidfd tokio's reaper holds
    }

    fn extra_pids_per_task(&self) -> u64 {
        0
    }
}

/// The supervisor's end of a `reqrep` child's channel, the child's end (closed once the
/// child runs), and the request size.
type Channel = (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
    usize,
);

async fn supervise(
    mut cmd: Command,
    idx: usize,
    sem: Option<Arc<Semaphore>>,
    kill: watch::Receiver<bool>,
    tx: Sender<Msg>,
    channel: Option<Channel>,
) {
    let _permit = match sem {
        Some(s) => Some(s.acquire_owned().await.expect("semaphore open")),
        None => None,
    };
    let start_ns = mono_ns();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Msg::SpawnFailed {
                idx,
                error: e.to_string(),
            });
            return;
        }
    };
    supervise_child(child, idx, start_ns, kill, tx, channel).await;
}

/// Reads both pipes and waits for the exit (or kills on request), then reports `Done`.
async fn supervise_child(
    mut child: tokio::process::Child,
    idx: usize,
    start_ns: u64,
    mut kill: watch::Receiver<bool>,
    tx: Sender<Msg>,
    channel: Option<Channel>,
) {
    let _ = tx.send(Msg::Started {
        idx,
        pid: child.id().unwrap_or(0) as i32,
    });
    let serve = async move {
        let Some((ours, theirs, size)) = channel else {
            return RoundTrips::default();
        };
        drop(theirs);
        serve_requests(ours, size).await
    };
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let read_out = async move {
        let mut clock = LineClock::default();
        let mut buf = vec![0u8; 8 * 1024];
        while let Ok(n) = out.read(&mut buf).await {
            if n == 0 {
                break;
            }
            clock.feed(&buf[..n], mono_ns());
        }
        clock
    };
    let read_err = async move {
        let mut buf = vec![0u8; 8 * 1024];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let wait = async {
        tokio::select! {
            s = child.wait() => s,
            true = async { kill.wait_for(|k| *k).await.is_ok() } => {
                let _ = child.kill().await;
                child.wait().await
            }
        }
    };
    let (stdout, (), status, requests) = tokio::join!(read_out, read_err, wait, serve);
    let done_ns = mono_ns();
    let end = TaskEnd {
        status: status.map_err(|e| e.to_string()),
        stdout,
        requests,
    };
    let _ = tx.send(Msg::Done {
        idx,
        start_ns,
        done_ns,
        end,
    });
}

/// Answers each length-prefixed request with itself until the child closes its end.
async fn serve_requests(sock: std::os::unix::net::UnixStream, size: usize) -> RoundTrips {
    let mut trips = RoundTrips::default();
    let sock = match sock
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(sock))
    {
        Ok(sock) => sock,
        Err(e) => {
            trips.error = Some(format!("channel: {e}"));
            return trips;
        }
    };
    let (read, mut write) = sock.into_split();
    let mut read = tokio::io::BufReader::new(read);
    let mut frame = Vec::with_capacity(4 + size);
    loop {
        let mut header = [0u8; 4];
        if read.read_exact(&mut header).await.is_err() {
            return trips; // the child closed its end
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > 16 << 20 {
            trips.error = Some(format!("a frame of {len} bytes"));
            return trips;
        }
        frame.clear();
        frame.extend_from_slice(&header);
        frame.resize(4 + len, 0);
        if let Err(e) = read.read_exact(&mut frame[4..]).await {
            trips.error = Some(format!("a frame cut short: {e}"));
            return trips;
        }
        trips.request(&frame[4..], size);
        if let Err(e) = write.write_all(&frame).await {
            trips.error = Some(format!("reply: {e}"));
            return trips;
        }
    }
}

pub fn run(params: &Params, ctx: &Ctx, safe: bool) -> Result<Measured, NotRun> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| NotRun::Failed(format!("tokio runtime: {e}")))?;
    let mut t = Tokio {
        rt,
        tag: ctx.tag.clone(),
        safe,
        kill: (0..2).map(|_| watch::channel(false)).collect(),
        sem: vec![None, None],
    };
    let base = crate::bench::resources::rss().rss_kib;
    let result = if params.one_caller() {
        Ok(one_caller(&t, params, ctx))
    } else {
        run_with(&mut t, params, ctx)
    };
    let result = result.map(|mut m| {
        m.base_rss_kib = Some(base);
        m
    });
    t.rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// `for … { Command::spawn()? }` in `block_on`, each child then supervised by its own task;
/// the rate is the spawn loop's.
fn one_caller(t: &Tokio, params: &Params, ctx: &Ctx) -> Measured {
    let mut m = Measured::default();
    let Params::Spawn { tasks, .. } = *params else {
        return m;
    };
    let n = tasks as usize;
    let child = ctx.programs.spawned(params);
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let (_no_kill, kill) = watch::channel(false);
    ctx.stage("spawn loop + reap", tasks);
    let cpu0 = crate::bench::resources::cpu_self();
    let t0 = std::time::Instant::now();
    t.rt.block_on(async {
        for idx in 0..n {
            let start_ns = mono_ns();
            match t.command(&child).spawn() {
                Ok(c) => {
                    tokio::spawn(supervise_child(
                        c,
                        idx,
                        start_ns,
                        kill.clone(),
                        tx.clone(),
                        None,
                    ));
                }
                Err(e) => {
                    let _ = tx.send(Msg::SpawnFailed {
                        idx,
                        error: e.to_string(),
                    });
                }
            }
        }
    });
    let spawn_loop = t0.elapsed();
    let ended = super::common::collect_done(
        &rx,
        n,
        t0 + std::time::Duration::from_secs(180),
        Vec::new(),
        &mut m,
        &ctx.bar,
        |m, idx, s, d, end| {
            m.latency.record_ns(d.saturating_sub(s));
            super::common::Expect::Success.check(m, idx, &end);
        },
    );
    m.extra
        .insert("all_done_s".into(), t0.elapsed().as_secs_f64());
    m.extra
        .insert("spawn_loop_s".into(), spawn_loop.as_secs_f64());
    m.extra.insert(
        "phase_cpu_s".into(),
        (crate::bench::resources::cpu_self() - cpu0).as_secs_f64(),
    );
    m.work_wall = spawn_loop;
    m.work = ended as f64;
    m.tasks = tasks;
    m.peak_tasks = tasks;
    m.hung = (n - ended) as u64;
    m.survivors = ctx.survivors();
    m
}
