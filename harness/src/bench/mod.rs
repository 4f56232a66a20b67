//! `pidring bench`: pidring side by side with what users would pick instead (tokio::process,
//! a thread per child, and a bare floor), in the same run on the same machine.
//!
//! - `scenario.rs`: knobs, defaults, child programs; `backend/*`: one file per backend;
//! - `stats.rs`: hdrhistogram latencies; `resources.rs`: RSS, CPU, limits;
//! - `census.rs`: finding, counting and cleaning up every process a scenario started;
//! - `table.rs`, `json.rs`, `report.rs`: the outputs.
//!
//! With more than one (scenario, backend) to run, each runs in a fresh `pidring bench`
//! process (hidden `--child`), so RSS, CPU, the fd table and thread pools of one backend
//! never colour another's figures.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

mod backend;
mod census;
mod json;
mod report;
mod resources;
mod scenario;
mod stats;
mod table;

use json::{Record, Results};
use scenario::{BackendName, Params};

/// `pidring bench [SCENARIO [KNOBS]] [--quick] [--backend B,...] [--json FILE]`
#[derive(Debug, Default, clap::Args)]
pub struct BenchArgs {
    /// One scenario with its knobs; none runs the default suite.
    #[command(subcommand)]
    pub scenario: Option<ScenarioCmd>,
    /// Small N and short phases (seconds): the CI smoke run.
    #[arg(long, global = true)]
    pub quick: bool,
    /// Backends to run, comma-separated (default: all).
    #[arg(long, global = true, value_delimiter = ',')]
    pub backend: Vec<BackendName>,
    /// Also write the results JSON here.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Where `<timestamp>/results.json` and `report.html` go.
    #[arg(long, global = true, default_value = "bench-results")]
    pub out_dir: PathBuf,
    /// Containment of pidring's pool (uring, epoll rows).
    #[arg(long, global = true, value_enum, default_value_t)]
    pub containment: scenario::ContainmentName,
    /// Run every (scenario, backend) in this process instead of a fresh one each.
    #[arg(long, global = true)]
    pub in_process: bool,
    /// Internal: run one (scenario, backend) and write its record (JSON spec).
    #[arg(long, hide = true)]
    pub child: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScenarioCmd {
    /// Short tasks: spawn-and-reap throughput and latency.
    Spawn(scenario::SpawnKnobs),
    /// N sleeping tasks: RSS per task, idle CPU, kill-all time.
    Idle(scenario::IdleKnobs),
    /// Latency from a child's exit to its Done, with an idle fleet resident.
    ExitLatency(scenario::ExitLatencyKnobs),
    /// Tasks streaming lines: MB/s and line latency.
    Chatty(scenario::ChattyKnobs),
    /// Task trees, some ignoring SIGTERM: time to end them all, and survivors.
    Killtree(scenario::KilltreeKnobs),
    /// Request/reply round trips over a framed channel: round-trip latency.
    Reqrep(scenario::ReqrepKnobs),
}

/// What the suite hands a `--child` process.
#[derive(Debug, Serialize, Deserialize)]
struct ChildSpec {
    params: Params,
    backend: BackendName,
    tag: String,
    containment: scenario::ContainmentName,
    out: PathBuf,
}

pub fn run(args: BenchArgs) -> ExitCode {
    resources::raise_nofile();
    census::become_subreaper();
    if let Some(spec) = &args.child {
        return run_child(spec);
    }
    let params: Vec<Params> = match &args.scenario {
        None => scenario::suite(args.quick),
        Some(ScenarioCmd::Spawn(k)) => vec![scenario::spawn(k, args.quick)],
        Some(ScenarioCmd::Idle(k)) => vec![scenario::idle(k, args.quick)],
        Some(ScenarioCmd::ExitLatency(k)) => vec![scenario::exit_latency(k, args.quick)],
        Some(ScenarioCmd::Chatty(k)) => vec![scenario::chatty(k, args.quick)],
        Some(ScenarioCmd::Killtree(k)) => vec![scenario::killtree(k, args.quick)],
        Some(ScenarioCmd::Reqrep(k)) => vec![scenario::reqrep(k, args.quick)],
    };
    let backends: Vec<BackendName> = if args.backend.is_empty() {
        BackendName::ALL.to_vec()
    } else {
        args.backend.clone()
    };
    let mut pairs = Vec::new();
    let not_available: Vec<Record> = Vec::new();
    for p in &params {
        for &b in &backends {
            if p.has_backend(b) {
                pairs.push((p.clone(), b));
            }
        }
    }
    if pairs.is_empty() && not_available.is_empty() {
        eprintln!(
            "pidring bench: nothing to run (the limit backend exists only for spawn and chatty)"
        );
        return ExitCode::from(2);
    }
    let started = timestamp();
    let out_dir = if args.out_dir.as_os_str().is_empty() {
        PathBuf::from("bench-results")
    } else {
        args.out_dir.clone()
    };
    let run_dir = out_dir.join(&started);
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        eprintln!("pidring bench: cannot create {}: {e}", run_dir.display());
        return ExitCode::from(2);
    }
    let isolate = !args.in_process && pairs.len() > 1;
    eprintln!(
        "pidring bench: {} runs ({}), {} cores{}",
        pairs.len(),
        if args.quick { "quick" } else { "full" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if isolate {
            ", each in a fresh process"
        } else {
            ""
        }
    );
    let t0 = Instant::now();
    let mut records = Vec::new();
    for (i, (p, b)) in pairs.iter().enumerate() {
        let tag = format!("{}-{}-{}-{i}", std::process::id(), p.name(), b.as_str());
        let mut rec = if isolate {
            run_isolated(p, *b, &tag, args.containment, &run_dir, i)
        } else {
            run_pair(p, *b, &tag, args.containment)
        };
        // Whatever the run left, the harness finds and ends (the record already counted it).
        let left = census::cleanup(&tag, Duration::from_secs(5));
        rec.leftover = rec.leftover.max(left as u64);
        eprintln!("{}", table::summary_line(&rec));
        records.push(rec);
    }
    for rec in not_available {
        eprintln!("{}", table::summary_line(&rec));
        records.push(rec);
    }
    let results = Results {
        schema: 1,
        started: started.clone(),
        command: std::env::args().collect(),
        host: json::host(),
        results: records,
    };
    println!();
    print!("{}", table::render(&results.results));
    println!();
    let json_path = run_dir.join("results.json");
    let mut ok = true;
    for path in std::iter::once(json_path.clone()).chain(args.json.clone()) {
        if let Err(e) = json::write(&path, &results) {
            eprintln!("pidring bench: cannot write {}: {e}", path.display());
            ok = false;
        }
    }
    let report_path = run_dir.join("report.html");
    if let Err(e) = std::fs::write(&report_path, report::render(&results)) {
        eprintln!("pidring bench: cannot write {}: {e}", report_path.display());
        ok = false;
    }
    println!("results: {}", json_path.display());
    if let Some(j) = &args.json {
        println!("results: {}", j.display());
    }
    println!("report:  {}", report_path.display());
    println!("took {:.1} s", t0.elapsed().as_secs_f64());
    let failures: Vec<String> = results.results.iter().filter_map(Record::failure).collect();
    for f in &failures {
        eprintln!("pidring bench: FAIL {f}");
    }
    if ok && failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run_child(spec: &str) -> ExitCode {
    let spec: ChildSpec = match serde_json::from_str(spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pidring bench: bad --child spec: {e}");
            return ExitCode::from(2);
        }
    };
    let rec = run_pair(&spec.params, spec.backend, &spec.tag, spec.containment);
    match serde_json::to_string(&rec)
        .map_err(std::io::Error::other)
        .and_then(|t| std::fs::write(&spec.out, t))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pidring bench: cannot write {}: {e}", spec.out.display());
            ExitCode::FAILURE
        }
    }
}

/// Runs one (scenario, backend) in a fresh `pidring bench --child` process.
fn run_isolated(
    params: &Params,
    backend: BackendName,
    tag: &str,
    containment: scenario::ContainmentName,
    dir: &Path,
    i: usize,
) -> Record {
    let out = dir.join(format!(".part-{i}.json"));
    let spec = ChildSpec {
        params: params.clone(),
        backend,
        tag: tag.to_string(),
        containment,
        out: out.clone(),
    };
    let spec = serde_json::to_string(&spec).expect("serializable");
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let t0 = Instant::now();
    let status = std::process::Command::new(exe)
        .args(["bench", "--child", &spec])
        .stdin(std::process::Stdio::null())
        .status();
    let rec = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str::<Record>(&t).ok());
    let _ = std::fs::remove_file(&out);
    match (rec, status) {
        (Some(rec), _) => rec,
        (None, status) => Record {
            scenario: params.name().into(),
            backend: backend.as_str().into(),
            status: "failed".into(),
            reason: Some(format!("the bench process died: {status:?}")),
            total_s: t0.elapsed().as_secs_f64(),
            params: serde_json::to_value(params).unwrap_or_default(),
            ..Default::default()
        },
    }
}

fn bar(prefix: String) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let b = ProgressBar::with_draw_target(Some(0), target);
    b.set_style(
        ProgressStyle::with_template(
            "{prefix:>22} [{bar:30.cyan/blue}] {pos:>6}/{len:6} {msg} {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b.set_prefix(prefix);
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// Runs one (scenario, backend) in this process and measures it.
fn run_pair(
    params: &Params,
    b: BackendName,
    tag: &str,
    containment: scenario::ContainmentName,
) -> Record {
    let ctx = backend::Ctx {
        tag: tag.to_string(),
        programs: scenario::Programs::new(),
        bar: bar(format!("{}/{}", params.name(), b.as_str())),
        containment,
    };
    resources::reset_peak_rss();
    let rss0 = resources::rss();
    let cpu0 = resources::cpu_self();
    let t0 = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        backend::run(b, params, &ctx)
    }));
    let total_s = t0.elapsed().as_secs_f64();
    let cpu_s = (resources::cpu_self().saturating_sub(cpu0)).as_secs_f64();
    let rss1 = resources::rss();
    ctx.bar.finish_and_clear();
    let mut rec = Record {
        scenario: params.name().into(),
        backend: b.as_str().into(),
        ops_unit: params.unit().into(),
        latency_meaning: params.latency_meaning().into(),
        params: serde_json::to_value(params).unwrap_or_default(),
        total_s,
        cpu_s,
        ..Default::default()
    };
    match result {
        Ok(Ok(mut m)) => {
            rec.status = "ok".into();
            rec.tasks = m.tasks;
            rec.wall_s = m.work_wall.as_secs_f64();
            rec.ops_per_s = if rec.wall_s > 0.0 {
                m.work / rec.wall_s
            } else {
                0.0
            };
            rec.latency_us = m.latency.summary();
            rec.latency_curve = m.latency.curve();
            let peak_kib = m.fleet_rss_kib.unwrap_or(rss1.hwm_kib.max(rss1.rss_kib));
            let base_kib = m.base_rss_kib.unwrap_or(rss0.rss_kib);
            rec.rss_kib = peak_kib;
            rec.rss_per_task_bytes =
                peak_kib.saturating_sub(base_kib) as f64 * 1024.0 / m.peak_tasks.max(1) as f64;
            m.extra.insert(
                "setup_rss_kib".into(),
                base_kib.saturating_sub(rss0.rss_kib) as f64,
            );
            if let Some(&phase) = m.extra.get("phase_cpu_s") {
                rec.cpu_s = phase;
            }
            rec.survivors = m.survivors;
            rec.errors = m.errors;
            rec.error_samples = m.error_samples;
            rec.hung = m.hung;
            rec.extra = m.extra;
            rec.notes = m.notes;
        }
        Ok(Err(backend::NotRun::Unavailable(why))) => {
            rec.status = "unavailable".into();
            rec.reason = Some(why);
        }
        Ok(Err(backend::NotRun::Failed(why))) => {
            rec.status = "failed".into();
            rec.reason = Some(why);
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            rec.status = "failed".into();
            rec.reason = Some(format!("panicked: {msg}"));
        }
    }
    rec.leftover = census::cleanup(tag, Duration::from_secs(5)) as u64;
    census::reap_all();
    rec
}

/// Local time as `YYYYmmdd-HHMMSS`.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let tm = crate::sys::local_time(now);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        tm.year, tm.month, tm.day, tm.hour, tm.minute, tm.second
    )
}
