//! What the supervisor process itself costs, and what the system lets it do: RSS from
//! `/proc/self/status`, CPU from `getrusage`, the fd / pid / process limits.

use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// `VmRSS` and `VmHWM` of this process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn rss() -> Rss {
    let mut out = Rss::default();
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        for line in s.lines() {
            let field = |prefix: &str| -> Option<u64> {
                line.strip_prefix(prefix)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            };
            if let Some(v) = field("VmRSS:") {
                out.rss_kib = v;
            } else if let Some(v) = field("VmHWM:") {
                out.hwm_kib = v;
            }
        }
    }
    out
}

/// Resets `VmHWM` to the current RSS (`echo 5 > /proc/self/clear_refs`), so the peak of a
/// scenario is its own. Best effort.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Allocates `bytes` and writes one byte in every page, so the memory is resident and
/// mapped by small pages (as a supervisor's heap of many objects is): what a fork-style
/// spawn has to copy the page tables of. Keep the result alive for as long as it counts.
pub fn touch_heap(bytes: u64) -> Vec<u8> {
    let mut heap = vec![0u8; bytes as usize];
    for page in heap.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&heap);
    heap
}

/// Waits until the machine has settled after a burst of new processes (the held tasks of
/// `spawn --hold` still run their start-up after their exec, which would otherwise be
/// measured as the spawns' cost): until at most `runnable` tasks are runnable system-wide
/// (`/proc/loadavg`) three looks in a row, or `limit` passed. Returns the time waited.
pub fn wait_quiet(runnable: u64, limit: Duration) -> Duration {
    let t0 = std::time::Instant::now();
    let mut calm = 0;
    while calm < 3 && t0.elapsed() < limit {
        let running = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
            .unwrap_or(0u64);
        calm = if running <= runnable { calm + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

/// CPU time of this process's live threads, summed by the name's prefix before the last
/// `-` (e.g. `pidring-worker`, `pidring-spawn`), from `/proc/self/task/*/schedstat`
/// (nanoseconds on the CPU).
pub fn cpu_by_thread_kind() -> std::collections::BTreeMap<String, Duration> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let name = name.trim();
        let kind = name.rsplit_once('-').map_or(name, |(k, _)| k).to_string();
        let ns: u64 = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        *out.entry(kind).or_insert(Duration::ZERO) += Duration::from_nanos(ns);
    }
    out
}

/// User + system CPU time of this process (all its threads; not its children).
pub fn cpu_self() -> Duration {
    crate::sys::rusage_self_cpu().unwrap_or(Duration::ZERO)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the test helper's `monotonic` step prints.
pub fn mono_ns() -> u64 {
    crate::sys::monotonic_ns()
}

/// `RLIM_INFINITY` as the raw limits report it.
const INFINITY: u64 = u64::MAX;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns (soft, hard) after the attempt.
pub fn raise_nofile() -> (u64, u64) {
    let rl = getrlimit(Resource::Nofile);
    let (mut cur, max) = (
        rl.current.unwrap_or(INFINITY),
        rl.maximum.unwrap_or(INFINITY),
    );
    if cur < max {
        let want = Rlimit {
            current: rl.maximum,
            maximum: rl.maximum,
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            cur = max;
        }
    }
    (cur, max)
}

/// The soft limit of `res`, `None` when unlimited.
fn rlimit_soft(res: Resource) -> Option<u64> {
    getrlimit(res).current
}

/// Open fds of this process right now.
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Threads (kernel tasks) alive on the whole system, from `/proc/loadavg`.
fn system_threads() -> u64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(1000)
}

/// How many tasks of a backend fit: each task needs `fds` entries in this process's fd table
/// and `pids` pids (processes + threads). Returns the count and, if it is lower than asked,
/// why. The fd limit was raised to the hard limit first (`raise_nofile`).
pub fn fit_tasks(asked: u64, fds: u64, pids: u64) -> (u64, Option<String>) {
    let mut n = asked;
    let mut why = Vec::new();
    let (soft, _hard) = raise_nofile();
    if let Some(room) = soft.saturating_sub(open_fds() + 200).checked_div(fds) {
        if room < n {
            n = room;
            why.push(format!(
                "RLIMIT_NOFILE {soft} at {fds} fds per task (hard limit reached)"
            ));
        }
    }
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(32768);
    let threads_max = read_u64("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
    let used = system_threads();
    if let Some(room) = pid_max
        .min(threads_max)
        .saturating_sub(used + 1000)
        .checked_div(pids)
    {
        if room < n {
            n = room;
            why.push(format!(
                "pid_max {pid_max} with {used} in use, at {pids} pids per task"
            ));
        }
        if let Some(nproc) = rlimit_soft(Resource::Nproc) {
            let room = nproc.saturating_sub(used + 1000) / pids;
            if room < n {
                n = room;
                why.push(format!("RLIMIT_NPROC {nproc} at {pids} pids per task"));
            }
        }
    }
    let reason = (n < asked).then(|| format!("{asked} lowered to {n}: {}", why.join("; ")));
    (n, reason)
}

/// Kernel memory that grows with processes and their fd tables (`Slab + KernelStack +
/// PageTables` of `/proc/meminfo`), KiB. System-wide: other activity on the machine adds noise.
pub fn kernel_kib() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    s.lines()
        .filter(|l| {
            l.starts_with("Slab:") || l.starts_with("KernelStack:") || l.starts_with("PageTables:")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Samples this process's open fd count on a thread of its own (every 200 µs) until
/// stopped, keeping the peak: how large the fd table gets during a kill-all, for example.
pub struct FdPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl FdPeak {
    pub fn start() -> FdPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bench-fd-peak".into())
            .spawn(move || {
                let mut peak = open_fds();
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(open_fds());
                    std::thread::sleep(Duration::from_micros(200));
                }
                peak.max(open_fds())
            })
            .ok();
        FdPeak { stop, thread }
    }

    /// Stops sampling; the highest count seen (0 if the sampler could not start).
    pub fn peak(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}
