//! `threads`: std::process with a thread per child. The thread reads stdout to EOF, then
//! stderr, then waits (the bench children write nothing on stderr, so reading them in turn
//! cannot deadlock here). A kill is a SIGKILL to the main process (what `Child::kill` does,
//! sent through a pidfd), sent by the controlling thread.

use std::io::Read;
use std::process::{Command, Stdio};

use crossbeam_channel::{Receiver, Sender};

use super::common::{run_with, Launch, Msg, TaskEnd};
use super::{Ctx, Measured, NotRun};
use crate::bench::resources::mono_ns;
use crate::bench::scenario::{Child, Params};
use crate::bench::stats::LineClock;

struct Threads {
    tag: String,
    /// Per group: a token channel limiting tasks in flight.
    tokens: Vec<Option<(Sender<()>, Receiver<()>)>>,
}

impl Launch for Threads {
    fn launch(&mut self, group: usize, idx: usize, child: &Child, tx: &Sender<Msg>) {
        let token = self.tokens[group].as_ref().map(|(give, take)| {
            take.recv().expect("token channel open");
            give.clone()
        });
        let mut cmd = Command::new(&child.program);
        cmd.args(&child.args)
            .env(crate::bench::census::TAG_VAR, &self.tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (tx, tx2) = (tx.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("child-{idx}"))
            .spawn(move || {
                supervise(cmd, idx, &tx);
                if let Some(give) = token {
                    let _ = give.send(());
                }
            });
        if let Err(e) = spawned {
            let _ = tx2.send(Msg::SpawnFailed {
                idx,
                error: format!("thread: {e}"),
            });
        }
    }

    fn limit(&mut self, group: usize, n: usize) {
        let (give, take) = crossbeam_channel::bounded(n);
        for _ in 0..n {
            let _ = give.send(());
        }
        self.tokens[group] = Some((give, take));
    }

    fn kill_group(&mut self, _group: usize, pids: &[i32]) {
        for &pid in pids.iter().filter(|&&p| p > 0) {
            // The thread reaps only after EOF on stdout, which the killed process's exit
            // brings, so the pid is not reused before this.
            crate::sys::kill_via_pidfd(pid);
        }
    }

    fn fds_per_task(&self) -> u64 {
        2 // stdout, stderr
    }

    fn extra_pids_per_task(&self) -> u64 {
        1 // the thread
    }
}

fn supervise(mut cmd: Command, idx: usize, tx: &Sender<Msg>) {
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
        pid: child.id() as i32,
    });
    let mut clock = LineClock::default();
    let mut buf = vec![0u8; 8 * 1024];
    if let Some(mut out) = child.stdout.take() {
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            clock.feed(&buf[..n], mono_ns());
        }
    }
    if let Some(mut err) = child.stderr.take() {
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string());
    let done_ns = mono_ns();
    let _ = tx.send(Msg::Done {
        idx,
        start_ns,
        done_ns,
        end: TaskEnd {
            status,
            stdout: clock,
            requests: Default::default(),
        },
    });
}

pub fn run(params: &Params, ctx: &Ctx) -> Result<Measured, NotRun> {
    let mut t = Threads {
        tag: ctx.tag.clone(),
        tokens: vec![None, None],
    };
    run_with(&mut t, params, ctx)
}
