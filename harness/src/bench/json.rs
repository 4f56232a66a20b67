//! The machine-readable results: one [`Record`] per (scenario, backend), written as
//! `results.json` (schema in the README, section `pidring bench`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::stats::LatencySummary;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub scenario: String,
    pub backend: String,
    /// `ok`, `unavailable` (the backend cannot do this scenario here) or `failed`.
    pub status: String,
    /// Why it is unavailable or failed.
    pub reason: Option<String>,
    /// Tasks run (trees for killtree; measured tasks for exit-latency).
    pub tasks: u64,
    /// The measured phase, over which `ops_per_s` is computed.
    pub wall_s: f64,
    /// The whole run of this (scenario, backend), set-up and tear-down included.
    pub total_s: f64,
    pub ops_per_s: f64,
    pub ops_unit: String,
    pub latency_us: LatencySummary,
    pub latency_meaning: String,
    /// (quantile, µs) points of the latency distribution, for plots.
    pub latency_curve: Vec<[f64; 2]>,
    /// Supervisor RSS with the fleet up (idle, exit-latency) or at peak, KiB.
    pub rss_kib: u64,
    /// (that RSS − RSS before the scenario) / most tasks alive at once.
    pub rss_per_task_bytes: f64,
    /// Supervisor CPU (user + system, all threads; children excluded) for the whole run.
    pub cpu_s: f64,
    /// Live processes of the scenario when the backend considered all its tasks ended.
    pub survivors: u64,
    /// Still alive after the harness's own cleanup (kill + reap): must be 0.
    pub leftover: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Tasks that had not ended by the scenario's deadline.
    pub hung: u64,
    /// Scenario-specific figures: `spawn_s`, `idle_cpu_s`, `killall_s`, `bytes`, `lines`, ...
    pub extra: BTreeMap<String, f64>,
    pub notes: Vec<String>,
    /// The scenario's resolved parameters.
    pub params: serde_json::Value,
}

impl Record {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// pidring's own rows: these must have no survivors and nothing hung.
    pub fn is_pidring(&self) -> bool {
        matches!(self.backend.as_str(), "uring" | "epoll")
    }

    /// Why this record makes the run fail, if it does.
    pub fn failure(&self) -> Option<String> {
        let who = format!("{}/{}", self.scenario, self.backend);
        if self.status == "failed" {
            return Some(format!(
                "{who} failed: {}",
                self.reason.as_deref().unwrap_or("?")
            ));
        }
        if self.errors > 0 {
            return Some(format!(
                "{who}: {} errors ({})",
                self.errors,
                self.error_samples.join("; ")
            ));
        }
        if self.leftover > 0 {
            return Some(format!(
                "{who}: {} processes survived the cleanup",
                self.leftover
            ));
        }
        if self.is_pidring() && self.survivors > 0 {
            return Some(format!("{who}: {} survivors", self.survivors));
        }
        if self.is_pidring() && self.hung > 0 {
            return Some(format!("{who}: {} tasks never reached Done", self.hung));
        }
        None
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Bumped on incompatible changes.
    pub schema: u32,
    pub started: String,
    pub command: Vec<String>,
    pub host: BTreeMap<String, String>,
    pub results: Vec<Record>,
}

pub fn write(path: &Path, results: &Results) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(results).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// A few facts about the machine, for the report.
pub fn host() -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    h.insert("kernel".into(), read("/proc/sys/kernel/osrelease"));
    h.insert(
        "cores".into(),
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_default(),
    );
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    h.insert("cpu".into(), cpu);
    let (soft, hard) = super::resources::raise_nofile();
    h.insert("nofile".into(), format!("{soft}/{hard}"));
    h.insert("pid_max".into(), read("/proc/sys/kernel/pid_max"));
    h.insert("loadavg".into(), read("/proc/loadavg"));
    h
}
