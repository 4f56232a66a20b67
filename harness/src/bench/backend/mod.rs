//! The backends: one file each. Every backend runs a scenario's children the way its users
//! would, reports what it measured in [`Measured`], and tears its own tasks down before it
//! returns (the caller then checks `/proc` and cleans up anything left).

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::ProgressBar;

use super::census;
use super::scenario::{BackendName, Params, Programs};
use super::stats::Latency;

mod common;
mod inline;
pub mod limit;
pub mod std_loop;
pub mod threads;
pub mod tokio;
pub mod uring;

/// What one (scenario, backend) run produced.
#[derive(Default)]
pub struct Measured {
    /// Tasks actually run (may be lower than asked: see `notes`).
    pub tasks: u64,
    /// The most tasks alive at once (for RSS per task).
    pub peak_tasks: u64,
    /// The amount the throughput counts (tasks, kills, bytes, trees).
    pub work: f64,
    /// The time over which `work` was done.
    pub work_wall: Duration,
    pub latency: Latency,
    /// Things that went wrong: spawn failures, unexpected outcomes, lost events.
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Tasks that never reached their end before the scenario's deadline.
    pub hung: u64,
    /// Live processes of the scenario found when the backend considered everything done.
    pub survivors: u64,
    /// RSS with the whole fleet up (idle), KiB.
    pub fleet_rss_kib: Option<u64>,
    /// RSS once the backend is set up (pool built, runtime started), before any task, KiB:
    /// RSS per task counts from here, so fixed costs are not spread over the tasks.
    pub base_rss_kib: Option<u64>,
    /// Scenario-specific figures (`idle_cpu_s`, `spawn_s`, `killall_s`, ...).
    /// `phase_cpu_s`, when set, is the CPU of the measured phase alone (the spawn scenario
    /// leaves out holding its idle tasks): the record's CPU then shows that.
    pub extra: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

impl Measured {
    pub fn error(&mut self, what: impl Into<String>) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(what.into());
        }
    }
}

/// Why a backend has no figures for a scenario.
pub enum NotRun {
    /// The backend cannot be used here (e.g. the epoll driver does not exist yet).
    Unavailable(String),
    /// It tried and failed as a whole.
    Failed(String),
}

/// What a backend gets to run a scenario.
pub struct Ctx {
    /// Marks every child (`PIDRING_BENCH_TAG`).
    pub tag: String,
    pub programs: Programs,
    pub bar: ProgressBar,
    /// Containment of pidring's pool.
    pub containment: super::scenario::ContainmentName,
}

impl Ctx {
    pub fn env(&self) -> (&'static str, &str) {
        (census::TAG_VAR, &self.tag)
    }

    /// Live processes of this scenario right now.
    pub fn survivors(&self) -> u64 {
        census::census(&self.tag).alive.len() as u64
    }

    /// Lowers `asked` to what the limits allow for `fds`/`pids` per task; prints and notes why.
    pub fn fit(&self, m: &mut Measured, asked: u64, fds: u64, pids: u64) -> u64 {
        let (n, why) = super::resources::fit_tasks(asked, fds, pids);
        if let Some(why) = why {
            self.note(&why);
            m.notes.push(why);
        }
        n
    }

    /// Prints a line above the progress bar (or plainly when there is no bar).
    pub fn note(&self, msg: &str) {
        if self.bar.is_hidden() {
            eprintln!("  note: {msg}");
        } else {
            self.bar.println(format!("  note: {msg}"));
        }
    }

    pub fn stage(&self, msg: &str, len: u64) {
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.bar.set_message(msg.to_string());
    }

    /// Waits until `expected` processes of this scenario are alive (trees fully built), up to
    /// `limit`. Returns how many were seen.
    pub fn wait_population(&self, expected: u64, limit: Duration) -> u64 {
        let until = std::time::Instant::now() + limit;
        loop {
            let n = self.survivors();
            if n >= expected || std::time::Instant::now() >= until {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn run(backend: BackendName, params: &Params, ctx: &Ctx) -> Result<Measured, NotRun> {
    let needs_helper = matches!(
        params,
        Params::ExitLatency { .. }
            | Params::Chatty { .. }
            | Params::Killtree { .. }
            | Params::Reqrep { .. }
    );
    if needs_helper {
        ctx.programs.helper_works().map_err(NotRun::Failed)?;
    }
    // The supervisor's own memory, touched before any spawn (kept until the run ends).
    let _heap = match *params {
        Params::Spawn { heap, .. } if heap > 0 => {
            ctx.stage("touching the heap", 0);
            Some(crate::bench::resources::touch_heap(heap))
        }
        _ => None,
    };
    match backend {
        BackendName::Uring => uring::run(pidring::Backend::Uring, params, ctx),
        BackendName::Epoll => uring::run(pidring::Backend::Epoll, params, ctx),
        BackendName::Tokio => tokio::run(params, ctx, false),
        BackendName::TokioSafe => tokio::run(params, ctx, true),
        BackendName::Threads => threads::run(params, ctx),
        BackendName::Limit => limit::run(params, ctx),
        BackendName::Std => std_loop::run(params, ctx),
    }
}
