//! `tokio`: what a tokio user writes. A multi-thread runtime with 2 workers; one task per
//! child that reads stdout and stderr and waits for the exit concurrently (`join!`), and
//! kills through `Child::kill` (SIGKILL to the main process only) when asked. A `reqrep`
//! child gets one end of a `UnixStream` pair at fd 3; the same task reads its length-prefixed
//! requests (through a `BufReader`) and writes each back.

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
    /// Per group: kill switch and optional concurrency limit.
    kill: Vec<(watch::Sender<bool>, watch::Receiver<bool>)>,
    sem: Vec<Option<Arc<Semaphore>>>,
}

impl Launch for Tokio {
    fn launch(&mut self, group: usize, idx: usize, child: &Child, tx: &Sender<Msg>) {
        let mut cmd = Command::new(&child.program);
        cmd.args(&child.args)
            .env(crate::bench::census::TAG_VAR, &self.tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
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
    mut kill: watch::Receiver<bool>,
    tx: Sender<Msg>,
    channel: Option<Channel>,
) {
    let _permit = match sem {
        Some(s) => Some(s.acquire_owned().await.expect("semaphore open")),
        None => None,
    };
    let start_ns = mono_ns();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Msg::SpawnFailed {
                idx,
                error: e.to_string(),
            });
            return;
        }
    };
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

pub fn run(params: &Params, ctx: &Ctx) -> Result<Measured, NotRun> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| NotRun::Failed(format!("tokio runtime: {e}")))?;
    let mut t = Tokio {
        rt,
        tag: ctx.tag.clone(),
        kill: (0..2).map(|_| watch::channel(false)).collect(),
        sem: vec![None, None],
    };
    let base = crate::bench::resources::rss().rss_kib;
    let result = run_with(&mut t, params, ctx).map(|mut m| {
        m.base_rss_kib = Some(base);
        m
    });
    t.rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
