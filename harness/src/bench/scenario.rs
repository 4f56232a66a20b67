//! The scenarios: their knobs (CLI), resolved parameters, defaults (full and `--quick`), and
//! the child programs they run. Every backend runs the same children with the same knobs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which implementation supervises the children.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum BackendName {
    /// pidring's Pool on its io_uring driver.
    Uring,
    /// pidring's Pool on its epoll driver (what runs where io_uring is refused).
    Epoll,
    /// tokio::process: a task per child reading both pipes and waiting; kill via Child::kill.
    Tokio,
    /// std::process with a thread per child.
    Threads,
    /// The floor: a bare posix_spawn + waitpid loop (spawn), a raw poll + read loop (chatty).
    Limit,
    /// tokio::process with the safety pidring gives (`setsid` + `PR_SET_PDEATHSIG` in a
    /// `pre_exec`), which forces std onto fork (spawn only).
    TokioSafe,
    /// A plain `std::process::Command` loop with the same pipes (spawn only).
    Std,
}

impl BackendName {
    pub const ALL: [BackendName; 7] = [
        BackendName::Uring,
        BackendName::Epoll,
        BackendName::Tokio,
        BackendName::Threads,
        BackendName::Limit,
        BackendName::TokioSafe,
        BackendName::Std,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Uring => "uring",
            BackendName::Epoll => "epoll",
            BackendName::Tokio => "tokio",
            BackendName::Threads => "threads",
            BackendName::Limit => "limit",
            BackendName::TokioSafe => "tokio-safe",
            BackendName::Std => "std",
        }
    }
}

/// Containment of pidring's pool (`--containment`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ContainmentName {
    /// cgroup v2 where writable, else process group.
    #[default]
    Auto,
    Cgroup,
    ProcessGroup,
}

impl ContainmentName {
    pub fn to_pidring(self) -> pidring::Containment {
        match self {
            ContainmentName::Auto => pidring::Containment::Auto,
            ContainmentName::Cgroup => pidring::Containment::Cgroup,
            ContainmentName::ProcessGroup => pidring::Containment::ProcessGroup,
        }
    }
}

/// Scenario knobs, shared by the subcommands. Unset knobs take the defaults (or the
/// `--quick` defaults).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SpawnKnobs {
    /// Tasks to spawn and reap (default 3000, quick 200; 2000 with one submitter).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: Option<u64>,
    /// Tasks in flight at once (default 32; unlimited with one submitter).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: Option<u64>,
    /// The supervisor first allocates and touches this much memory (e.g. `2G`, `512M`).
    #[arg(long, value_parser = parse_size)]
    pub heap: Option<u64>,
    /// Idle tasks (`sleep`) the supervisor holds while it spawns (lowered to what the fd
    /// limit allows for backends that keep fds per task).
    #[arg(long)]
    pub hold: Option<u64>,
    /// Threads calling spawn (default: one per core). `1` is the way a newcomer first uses
    /// a library, `for … { pool.spawn(spec)? }`: the rate is then the spawn loop's, tasks are
    /// `sh -c 'echo spawned'`, and a `std::process::Command` loop (`std`) is the baseline.
    #[arg(long)]
    pub submitters: Option<u64>,
}

/// The largest `reqrep --size`: a request is one frame of the task's channel.
const MAX_REQUEST_SIZE: u64 = pidring::DEFAULT_MAX_FRAME as u64;

/// The longest `idle --idle-secs`: a day.
const MAX_IDLE_SECS: f64 = 86_400.0;

/// `--idle-secs`: seconds, finite, from 0 to a day (a `Duration` cannot hold a negative, NaN
/// or infinite value, and a longer bench is a typo).
fn parse_idle_secs(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected seconds (a number), got {s:?}"))?;
    if !(0.0..=MAX_IDLE_SECS).contains(&secs) {
        return Err(format!(
            "expected seconds from 0 to {MAX_IDLE_SECS}, got {s:?}"
        ));
    }
    Ok(secs)
}

/// `2G`, `512M`, `64K` or plain bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("bad size unit in {s:?} (K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct IdleKnobs {
    /// Concurrent sleeping tasks (default 10000, quick 300); lowered, with the reason
    /// printed, when the fd or pid limits do not allow it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: Option<u64>,
    /// Seconds of idling over which CPU is measured (default 5, quick 1).
    #[arg(long, value_parser = parse_idle_secs)]
    pub idle_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExitLatencyKnobs {
    /// Sleeping tasks resident while the latency is measured (default 2000, quick 100).
    #[arg(long)]
    pub fleet: Option<u64>,
    /// Measured tasks, each printing its CLOCK_MONOTONIC and exiting (default 1000, quick 100).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: Option<u64>,
    /// Measured tasks in flight at once (default 4).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: Option<u64>,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChattyKnobs {
    /// Concurrent chatty tasks (default 32, quick 8).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: Option<u64>,
    /// Rounds per task; each round writes `--lines` lines then one timestamp line (default 64, quick 8).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: Option<u64>,
    /// Lines per round, `line <i>\n` (default 16384, quick 512).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub lines: Option<u64>,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReqrepKnobs {
    /// Concurrent tasks, each with one framed channel (default 100, quick 10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: Option<u64>,
    /// Round trips per task: request, wait for the reply, repeat (default 1000, quick 100).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: Option<u64>,
    /// Bytes per request and reply (at least 16; default 64).
    #[arg(long, value_parser = clap::value_parser!(u64).range(16..=MAX_REQUEST_SIZE))]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct KilltreeKnobs {
    /// Task trees (default 100, quick 10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub trees: Option<u64>,
    /// Processes forked below each spawned process of a tree (default 3).
    #[arg(long)]
    pub width: Option<u64>,
    /// 1: the task and its forked children; 2: plus a `setsid` child (escaping the process
    /// group, holding the pipes) with its own forked children (default 2).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=2))]
    pub depth: Option<u64>,
    /// Every k-th tree ignores SIGTERM (default 2: half of them; 0: none).
    #[arg(long)]
    pub ignore_term_every: Option<u64>,
    /// Grace between SIGTERM and SIGKILL, ms (default 300).
    #[arg(long)]
    pub grace_ms: Option<u64>,
    /// How long to wait for every tree's end before counting what hangs, ms (default 3000).
    #[arg(long)]
    pub deadline_ms: Option<u64>,
}

/// One scenario with every parameter resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "scenario", rename_all = "kebab-case")]
pub enum Params {
    Spawn {
        tasks: u64,
        concurrency: u64,
        /// Bytes the supervisor touches before the spawns (0: none).
        #[serde(default)]
        heap: u64,
        /// Idle tasks held meanwhile.
        #[serde(default)]
        hold: u64,
        /// Threads calling spawn; 0: one per core.
        #[serde(default)]
        submitters: u64,
    },
    Idle {
        tasks: u64,
        idle_secs: f64,
    },
    ExitLatency {
        fleet: u64,
        tasks: u64,
        concurrency: u64,
    },
    Chatty {
        tasks: u64,
        rounds: u64,
        lines: u64,
    },
    Killtree {
        trees: u64,
        width: u64,
        depth: u64,
        ignore_term_every: u64,
        grace_ms: u64,
        deadline_ms: u64,
    },
    Reqrep {
        tasks: u64,
        rounds: u64,
        size: u64,
    },
}

impl Params {
    pub fn name(&self) -> &'static str {
        match self {
            Params::Spawn { .. } => "spawn",
            Params::Idle { .. } => "idle",
            Params::ExitLatency { .. } => "exit-latency",
            Params::Chatty { .. } => "chatty",
            Params::Killtree { .. } => "killtree",
            Params::Reqrep { .. } => "reqrep",
        }
    }

    /// What `ops_per_s` counts for this scenario.
    pub fn unit(&self) -> &'static str {
        match self {
            Params::Spawn { .. } => "tasks/s",
            Params::Idle { .. } => "kills/s",
            Params::ExitLatency { .. } => "tasks/s",
            Params::Chatty { .. } => "MB/s",
            Params::Killtree { .. } => "trees/s",
            Params::Reqrep { .. } => "round trips/s",
        }
    }

    /// What the latency measures.
    pub fn latency_meaning(&self) -> &'static str {
        match self {
            Params::Spawn { .. } => "spawn call to Done (task reaped, pipes closed)",
            Params::Idle { .. } => "kill-all start to each task's Done",
            Params::ExitLatency { .. } => "child's CLOCK_MONOTONIC stamp to Done",
            Params::Chatty { .. } => "timestamp line written to line seen by the consumer",
            Params::Killtree { .. } => "terminate-all start to each tree's Done",
            Params::Reqrep { .. } => {
                "request sent to reply received, measured by the child (framed channel)"
            }
        }
    }

    /// Whether `backend` has a row for this scenario (`limit` only where a floor exists).
    pub fn has_backend(&self, backend: BackendName) -> bool {
        match backend {
            // The spawn floor uses every core: no floor for one caller (`std` is its baseline).
            BackendName::Limit => {
                matches!(self, Params::Spawn { .. } | Params::Chatty { .. }) && !self.one_caller()
            }
            BackendName::TokioSafe => matches!(self, Params::Spawn { .. }),
            // A thread per child spawns from that thread: not one caller. The reqrep protocol
            // has a tokio implementation, not a thread-per-child one.
            BackendName::Threads => !self.one_caller() && !matches!(self, Params::Reqrep { .. }),
            BackendName::Std => matches!(self, Params::Spawn { submitters: 1, .. }),
            _ => true,
        }
    }
}

/// The default suite, in order.
pub fn suite(quick: bool) -> Vec<Params> {
    vec![
        spawn(&SpawnKnobs::default(), quick),
        idle(&IdleKnobs::default(), quick),
        exit_latency(&ExitLatencyKnobs::default(), quick),
        chatty(&ChattyKnobs::default(), quick),
        killtree(&KilltreeKnobs::default(), quick),
        reqrep(&ReqrepKnobs::default(), quick),
    ]
}

pub fn reqrep(k: &ReqrepKnobs, quick: bool) -> Params {
    Params::Reqrep {
        tasks: k.tasks.unwrap_or(if quick { 10 } else { 100 }),
        rounds: k.rounds.unwrap_or(if quick { 100 } else { 1000 }),
        size: k.size.unwrap_or(64).max(16),
    }
}

pub fn spawn(k: &SpawnKnobs, quick: bool) -> Params {
    let one_caller = k.submitters == Some(1);
    Params::Spawn {
        tasks: k.tasks.unwrap_or(match (quick, one_caller) {
            (true, _) => 200,
            (false, true) => 2000,
            (false, false) => 3000,
        }),
        concurrency: k
            .concurrency
            .unwrap_or(if one_caller { u64::MAX } else { 32 })
            .max(1),
        heap: k.heap.unwrap_or(0),
        hold: k.hold.unwrap_or(0),
        submitters: k.submitters.unwrap_or(0),
    }
}

impl Params {
    /// Spawn: submitter threads, `0` resolved to one per core.
    pub fn submitters(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        match *self {
            Params::Spawn { submitters: 0, .. } => cores,
            Params::Spawn { submitters, .. } => submitters as usize,
            _ => cores,
        }
    }

    /// Spawn from one caller thread: the rate is the spawn loop's.
    pub fn one_caller(&self) -> bool {
        matches!(self, Params::Spawn { submitters: 1, .. })
    }
}

pub fn idle(k: &IdleKnobs, quick: bool) -> Params {
    Params::Idle {
        tasks: k.tasks.unwrap_or(if quick { 300 } else { 10_000 }),
        idle_secs: k.idle_secs.unwrap_or(if quick { 1.0 } else { 5.0 }),
    }
}

pub fn exit_latency(k: &ExitLatencyKnobs, quick: bool) -> Params {
    Params::ExitLatency {
        fleet: k.fleet.unwrap_or(if quick { 100 } else { 2000 }),
        tasks: k.tasks.unwrap_or(if quick { 100 } else { 1000 }),
        concurrency: k.concurrency.unwrap_or(4).max(1),
    }
}

pub fn chatty(k: &ChattyKnobs, quick: bool) -> Params {
    Params::Chatty {
        tasks: k.tasks.unwrap_or(if quick { 8 } else { 32 }),
        rounds: k.rounds.unwrap_or(if quick { 8 } else { 64 }),
        lines: k.lines.unwrap_or(if quick { 512 } else { 16384 }),
    }
}

pub fn killtree(k: &KilltreeKnobs, quick: bool) -> Params {
    Params::Killtree {
        trees: k.trees.unwrap_or(if quick { 10 } else { 100 }),
        width: k.width.unwrap_or(3),
        depth: k.depth.unwrap_or(2).clamp(1, 2),
        ignore_term_every: k.ignore_term_every.unwrap_or(2),
        grace_ms: k.grace_ms.unwrap_or(300),
        deadline_ms: k.deadline_ms.unwrap_or(3000),
    }
}

/// A child program: path and arguments.
#[derive(Debug, Clone)]
pub struct Child {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// A `reqrep` child: one framed channel (fd 3, named in `PIDRING_CHANNEL_FDS`) whose
    /// requests of `size` bytes the supervisor answers with themselves.
    pub reqrep: Option<ReqrepChild>,
}

/// What a supervisor needs to know to serve a `reqrep` child: the size of its requests.
#[derive(Debug, Clone, Copy)]
pub struct ReqrepChild {
    pub size: u64,
}

impl Child {
    fn new(program: impl Into<PathBuf>, args: &[String]) -> Child {
        Child {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            reqrep: None,
        }
    }
}

/// Finds a program on `PATH` (falls back to `/bin/<name>`).
pub fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    Path::new("/bin").join(name)
}

/// The children of each scenario. `helper` is this binary (`pidring helper STEP...`).
pub struct Programs {
    pub helper: PathBuf,
    pub true_: PathBuf,
    pub sleep: PathBuf,
}

impl Programs {
    pub fn new() -> Programs {
        Programs {
            helper: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            true_: which("true"),
            sleep: which("sleep"),
        }
    }

    /// A short task: `/bin/true`.
    pub fn short(&self) -> Child {
        Child::new(&self.true_, &[])
    }

    /// What the spawn scenario runs: `/bin/true`, or from one caller the newcomer's
    /// `sh -c 'echo spawned'`.
    pub fn spawned(&self, params: &Params) -> Child {
        if params.one_caller() {
            Child::new("/bin/sh", &["-c".into(), "echo spawned".into()])
        } else {
            self.short()
        }
    }

    /// An idle task: `sleep 100000`.
    pub fn idle(&self) -> Child {
        Child::new(&self.sleep, &["100000".into()])
    }

    fn helper(&self, steps: Vec<String>) -> Child {
        let mut args = vec!["helper".to_string()];
        args.extend(steps);
        Child::new(&self.helper, &args)
    }

    /// Prints its CLOCK_MONOTONIC and exits.
    pub fn stamp(&self) -> Child {
        self.helper(vec!["monotonic".into()])
    }

    /// `rounds` × (`lines` lines, one timestamp line).
    pub fn chatty(&self, rounds: u64, lines: u64) -> Child {
        let mut steps = Vec::new();
        for _ in 0..rounds {
            steps.push(format!("lines={lines}"));
            steps.push("monotonic".into());
        }
        self.helper(steps)
    }

    /// `rounds` request/reply round trips of `size` bytes on framed channel 0, then one last
    /// request (`pidring helper reqrep`): each request carries the previous round trip.
    pub fn reqrep(&self, rounds: u64, size: u64) -> Child {
        let mut child = self.helper(vec![format!("reqrep=0:{rounds}:{size}")]);
        child.reqrep = Some(ReqrepChild { size });
        child
    }

    /// One tree of `killtree`: `width` forked sleepers; with depth 2 also a `setsid` child
    /// holding the pipes with its own `width` forked sleepers; ignoring SIGTERM if asked.
    /// It prints one timestamp line once its own forks are up.
    pub fn tree(&self, width: u64, depth: u64, ignore_term: bool) -> Child {
        let mut steps = Vec::new();
        if ignore_term {
            steps.push("ignore-term".to_string());
        }
        if depth >= 2 {
            steps.push(format!("spawn=setsid;forktree={width};sleep=100000000"));
        }
        steps.push(format!("forktree={width}"));
        steps.push("monotonic".into());
        steps.push("sleep=100000000".into());
        self.helper(steps)
    }

    /// Processes in one tree of [`Programs::tree`].
    pub fn tree_size(width: u64, depth: u64) -> u64 {
        (1 + width) * depth.clamp(1, 2)
    }

    /// Whether `pidring helper` works in this binary (it prints a timestamp).
    pub fn helper_works(&self) -> Result<(), String> {
        let out = std::process::Command::new(&self.helper)
            .args(["helper", "monotonic"])
            .output()
            .map_err(|e| format!("cannot run {} helper: {e}", self.helper.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success()
            && crate::bench::stats::parse_timestamp(text.trim_end().as_bytes()).is_some()
        {
            Ok(())
        } else {
            Err(format!(
                "`pidring helper monotonic` does not work in this build ({})",
                out.status
            ))
        }
    }
}
