//! The terminal table: scenario × backend.

use super::json::Record;

pub fn si(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Microseconds as µs / ms / s.
pub fn dur_us(us: f64) -> String {
    if us <= 0.0 {
        "-".into()
    } else if us < 1_000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

pub fn bytes(b: f64) -> String {
    if b <= 0.0 {
        "0".into()
    } else if b < 1024.0 {
        format!("{b:.0}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1}KiB", b / 1024.0)
    } else {
        format!("{:.1}MiB", b / 1024.0 / 1024.0)
    }
}

/// Throughput of `r` over tokio's in the same scenario.
pub fn ratio_to_tokio(r: &Record, all: &[Record]) -> Option<f64> {
    let tokio = all
        .iter()
        .find(|t| t.scenario == r.scenario && t.backend == "tokio" && t.ok())?;
    (r.ok() && tokio.ops_per_s > 0.0).then(|| r.ops_per_s / tokio.ops_per_s)
}

pub const HEADER: [&str; 13] = [
    "scenario",
    "backend",
    "tasks",
    "throughput",
    "p50",
    "p99",
    "p99.9",
    "RSS/task",
    "CPU s",
    "survivors",
    "hung",
    "errors",
    "vs tokio",
];

/// The cells of one row.
pub fn cells(r: &Record, all: &[Record]) -> Vec<String> {
    if !r.ok() {
        // The first sentence: the cause. The remedy is in the run's summary line and the JSON.
        let why = r.reason.clone().unwrap_or_default();
        let why = why
            .split_once(". ")
            .map_or(why.as_str(), |(first, _)| first);
        let mut c = vec![
            r.scenario.clone(),
            r.backend.clone(),
            format!("{}: {why}", r.status),
        ];
        c.resize(HEADER.len(), String::new());
        return c;
    }
    vec![
        r.scenario.clone(),
        r.backend.clone(),
        r.tasks.to_string(),
        format!("{} {}", si(r.ops_per_s), r.ops_unit),
        dur_us(r.latency_us.p50),
        dur_us(r.latency_us.p99),
        dur_us(r.latency_us.p999),
        bytes(r.rss_per_task_bytes),
        format!("{:.2}", r.cpu_s),
        r.survivors.to_string(),
        r.hung.to_string(),
        r.errors.to_string(),
        ratio_to_tokio(r, all)
            .map(|x| format!("{x:.2}×"))
            .unwrap_or_else(|| "-".into()),
    ]
}

pub fn render(records: &[Record]) -> String {
    let rows: Vec<Vec<String>> = records.iter().map(|r| cells(r, records)).collect();
    let mut width: Vec<usize> = HEADER.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        // A not-run row spans the columns after the backend: don't widen column 3 for it.
        let spans = row[3].is_empty() && !row[2].is_empty() && row[2].contains(':');
        for (i, c) in row.iter().enumerate() {
            if spans && i == 2 {
                continue;
            }
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let spans = cells[3].is_empty() && cells[2].contains(':');
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if spans && i == 2 {
                s.push_str(c);
                break;
            }
            let pad = width[i].saturating_sub(c.chars().count());
            if i < 2 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
            s.push_str("  ");
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    let header: Vec<String> = HEADER.iter().map(|s| s.to_string()).collect();
    line(&header, &mut out);
    let total: usize = width.iter().sum::<usize>() + 2 * (width.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    let mut last = "";
    for (r, row) in records.iter().zip(&rows) {
        if !last.is_empty() && last != r.scenario {
            out.push('\n');
        }
        last = &r.scenario;
        line(row, &mut out);
    }
    out
}

/// One line after each run, whatever the terminal.
pub fn summary_line(r: &Record) -> String {
    if !r.ok() {
        return format!(
            "{}/{}: {} ({})",
            r.scenario,
            r.backend,
            r.status,
            r.reason.as_deref().unwrap_or("")
        );
    }
    let threads: Vec<String> = r
        .extra
        .iter()
        .filter_map(|(k, v)| {
            let kind = k.strip_prefix("cpu_")?.strip_suffix("_s")?;
            Some(format!("{kind} {v:.2}s"))
        })
        .collect();
    let threads = if threads.is_empty() {
        String::new()
    } else {
        format!(" [CPU by thread: {}]", threads.join(", "))
    };
    format!(
        "{}/{}: {} tasks, {} {}, p50 {} p99 {}, RSS/task {}, CPU {:.2}s, survivors {}, hung {}, errors {} ({:.1}s){threads}",
        r.scenario,
        r.backend,
        r.tasks,
        si(r.ops_per_s),
        r.ops_unit,
        dur_us(r.latency_us.p50),
        dur_us(r.latency_us.p99),
        bytes(r.rss_per_task_bytes),
        r.cpu_s,
        r.survivors,
        r.hung,
        r.errors,
        r.total_s
    )
}
