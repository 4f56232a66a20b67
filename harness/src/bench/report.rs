//! `report.html`: one self-contained page with the table and, per scenario, a hand-written
//! SVG of the latency distributions (percentile curves, log-log) and of the throughput.

use std::fmt::Write as _;

use super::json::{Record, Results};
use super::table;

fn color(backend: &str) -> &'static str {
    match backend {
        "uring" => "#1f6fd1",
        "epoll" => "#8e44ad",
        "tokio" => "#e67e22",
        "threads" => "#27ae60",
        "limit" => "#7f8c8d",
        _ => "#c0392b",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const DESCRIPTIONS: [(&str, &str); 6] = [
    ("spawn", "Short tasks (<code>/bin/true</code>, stdout and stderr captured), a fixed number in flight: spawn-and-reap throughput. Latency: spawn call to the task's end."),
    ("idle", "N sleeping tasks at once: supervisor RSS per task, CPU while idle, then kill-all. Latency: from the kill-all to each task's end; throughput: kills per second."),
    ("exit-latency", "While an idle fleet stays resident, tasks print their CLOCK_MONOTONIC and exit at once. Latency: from that stamp to the supervisor seeing the task's end."),
    ("chatty", "Tasks stream lines (<code>line i</code>) with a timestamp line every round. Throughput: MB/s over all tasks; latency: timestamp line written to line seen."),
    ("killtree", "Task trees (forked children, a <code>setsid</code> child holding the pipes), half of them ignoring SIGTERM; then every tree is ended the backend's way (pidring: terminate = SIGTERM, grace, SIGKILL to the whole tree; tokio/threads: <code>Child::kill</code>). Survivors: processes of the trees still alive afterwards."),
    ("reqrep", "Request/reply round trips over a task's request channel."),
];

/// x position of quantile q on the percentile axis: log10(1 / (1 - q)), max at 5.
fn qx(q: f64) -> f64 {
    if q >= 1.0 {
        5.0
    } else {
        (1.0 / (1.0 - q)).log10().min(4.6)
    }
}

fn latency_svg(rows: &[&Record]) -> String {
    let (w, h) = (760.0, 340.0);
    let (l, r, t, b) = (70.0, 190.0, 20.0, 45.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let pts: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.latency_curve.iter().map(|p| p[1].max(1.0)))
        .collect();
    if pts.is_empty() {
        return "<p><em>no latency samples</em></p>".into();
    }
    let lo = pts.iter().cloned().fold(f64::MAX, f64::min).log10().floor();
    let mut hi = pts.iter().cloned().fold(0.0, f64::max).log10().ceil();
    if hi <= lo {
        hi = lo + 1.0;
    }
    let x = |q: f64| l + qx(q) / 5.0 * pw;
    let y = |us: f64| t + ph - (us.max(1.0).log10() - lo) / (hi - lo) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>"##
    );
    // y: decades
    let mut d = lo;
    while d <= hi + 1e-9 {
        let us = 10f64.powf(d);
        let yy = y(us);
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e3e3e3"/>"##,
            l + pw
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            l - 6.0,
            yy + 4.0,
            decade_label(us)
        );
        d += 1.0;
    }
    for (q, label) in [
        (0.0, "0%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
        (1.0, "max"),
    ] {
        let xx = x(q);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" y1="{t}" x2="{xx:.1}" y2="{:.1}" stroke="#e3e3e3"/>"##,
            t + ph
        );
        let _ = write!(
            s,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{label}</text>"##,
            t + ph + 16.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">percentile</text>"##,
        l + pw / 2.0,
        h - 6.0
    );
    let _ = write!(
        s,
        r##"<text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle" fill="#333">latency</text>"##,
        t + ph / 2.0
    );
    for (i, rec) in rows.iter().enumerate() {
        if rec.latency_curve.is_empty() {
            continue;
        }
        let c = color(&rec.backend);
        let dash = if rec.backend == "limit" {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let poly: Vec<String> = rec
            .latency_curve
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1])))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
            poly.join(" ")
        );
        let ly = t + 14.0 + i as f64 * 20.0;
        let lx = l + pw + 14.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{c}" stroke-width="3"{dash}/>"#,
            lx + 22.0
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} (p99 {})</text>"#,
            lx + 28.0,
            ly + 4.0,
            esc(&rec.backend),
            table::dur_us(rec.latency_us.p99)
        );
    }
    s.push_str("</svg>");
    s
}

/// A decade as an axis label: 1µs, 10µs, 100µs, 1ms, ...
fn decade_label(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.0}ms", us / 1e3)
    } else {
        format!("{:.0}s", us / 1e6)
    }
}

fn throughput_svg(rows: &[&Record]) -> String {
    bars_svg(
        rows,
        |r| r.ops_per_s,
        |r| format!("{} {}", table::si(r.ops_per_s), esc(&r.ops_unit)),
    )
}

/// Processes of each backend's trees still alive after it ended them.
fn survivors_svg(rows: &[&Record]) -> String {
    bars_svg(
        rows,
        |r| r.survivors as f64,
        |r| {
            let procs = r.extra.get("processes").copied().unwrap_or(0.0);
            format!("{} of {procs:.0} alive, {} hung", r.survivors, r.hung)
        },
    )
}

fn bars_svg(
    rows: &[&Record],
    value: impl Fn(&Record) -> f64,
    label: impl Fn(&Record) -> String,
) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let bar_h = 22.0;
    let (w, l, r) = (760.0, 70.0, 190.0);
    let h = 10.0 + rows.len() as f64 * (bar_h + 8.0) + 10.0;
    let max = rows.iter().map(|r| value(r)).fold(0.0, f64::max).max(1e-9);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    for (i, rec) in rows.iter().enumerate() {
        let yy = 10.0 + i as f64 * (bar_h + 8.0);
        let bw = (value(rec) / max * (w - l - r)).max(1.0);
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            l - 6.0,
            yy + bar_h * 0.7,
            esc(&rec.backend)
        );
        let _ = write!(
            s,
            r#"<rect x="{l}" y="{yy:.1}" width="{bw:.1}" height="{bar_h}" fill="{}"/>"#,
            color(&rec.backend)
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            l + bw + 6.0,
            yy + bar_h * 0.7,
            label(rec)
        );
    }
    s.push_str("</svg>");
    s
}

pub fn render(results: &Results) -> String {
    let recs = &results.results;
    let mut s = String::new();
    s.push_str(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pidring bench</title><style>",
    );
    s.push_str(
        "body{font-family:sans-serif;max-width:1100px;margin:1.5em auto;color:#222;padding:0 1em}",
    );
    s.push_str("table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}");
    s.push_str("tr.first td{border-top:2px solid #999}td:nth-child(1),td:nth-child(2),th:nth-child(1),th:nth-child(2){text-align:left}tr.na td{color:#888}");
    s.push_str("td.bad{color:#c0392b;font-weight:bold}.meta{color:#555;font-size:13px}h2{margin-top:1.6em;border-bottom:1px solid #ccc}");
    s.push_str(".note{color:#555;font-size:13px;margin:2px 0}</style></head><body>");
    let _ = write!(
        s,
        "<h1>pidring bench</h1><p class=\"meta\">{} · <code>{}</code><br>",
        esc(&results.started),
        esc(&results.command.join(" "))
    );
    for (k, v) in &results.host {
        let _ = write!(s, "{}: {} · ", esc(k), esc(v));
    }
    s.push_str("</p><p class=\"meta\">Throughput ratio “vs tokio” is within this run. Supervisor CPU and RSS are of the supervising process only (each (scenario, backend) runs in a fresh process). Survivors: processes of the scenario alive after the backend saw every task end.</p>");
    // The table.
    s.push_str("<table><tr>");
    for h in table::HEADER {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>");
    let mut last = "";
    for r in recs {
        let cells = table::cells(r, recs);
        let first = if !last.is_empty() && last != r.scenario {
            " class=\"first\""
        } else {
            ""
        };
        last = &r.scenario;
        if r.ok() {
            let _ = write!(s, "<tr{first}>");
            for (i, c) in cells.iter().enumerate() {
                let bad = (i == 9 && r.survivors > 0)
                    || (i == 10 && r.hung > 0)
                    || (i == 11 && r.errors > 0);
                let _ = write!(
                    s,
                    "<td{}>{}</td>",
                    if bad { " class=\"bad\"" } else { "" },
                    esc(c)
                );
            }
        } else {
            let na = if first.is_empty() { "na" } else { "na first" };
            let _ = write!(s, "<tr class=\"{na}\"><td>{}</td><td>{}</td><td colspan=\"{}\" style=\"text-align:left\">{}</td>", esc(&cells[0]), esc(&cells[1]), table::HEADER.len() - 2, esc(&cells[2]));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    // Per scenario.
    let mut scenarios: Vec<&str> = Vec::new();
    for r in recs {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    for sc in scenarios {
        let rows: Vec<&Record> = recs.iter().filter(|r| r.scenario == sc).collect();
        let ok: Vec<&Record> = rows.iter().copied().filter(|r| r.ok()).collect();
        let _ = write!(s, "<h2 id=\"{0}\">{0}</h2>", esc(sc));
        if let Some((_, d)) = DESCRIPTIONS.iter().find(|(n, _)| *n == sc) {
            let _ = write!(s, "<p>{d}</p>");
        }
        if let Some(r) = rows.first() {
            let _ = write!(
                s,
                "<p class=\"meta\">parameters: <code>{}</code></p>",
                esc(&r.params.to_string())
            );
        }
        if !ok.is_empty() {
            let _ = write!(
                s,
                "<h3>Latency distribution ({})</h3>{}",
                esc(&ok[0].latency_meaning),
                latency_svg(&ok)
            );
            let _ = write!(
                s,
                "<h3>Throughput ({})</h3>{}",
                esc(&ok[0].ops_unit),
                throughput_svg(&ok)
            );
            if sc == "idle" {
                let rss = bars_svg(
                    &ok,
                    |r| r.rss_per_task_bytes,
                    |r| {
                        let kernel = r.extra.get("kernel_kib_per_task").copied().unwrap_or(0.0);
                        format!(
                            "{} (kernel ≈{kernel:.0}KiB)",
                            table::bytes(r.rss_per_task_bytes)
                        )
                    },
                );
                let _ = write!(s, "<h3>Supervisor RSS per idle task</h3>{rss}");
            }
            if sc == "killtree" || ok.iter().any(|r| r.survivors > 0) {
                let _ = write!(
                    s,
                    "<h3>Survivors (processes of the scenario alive after every task was ended)</h3>{}",
                    survivors_svg(&ok)
                );
            }
        }
        for r in &rows {
            if !r.ok() {
                let _ = write!(
                    s,
                    "<p class=\"note\"><b>{}</b>: {} — {}</p>",
                    esc(&r.backend),
                    esc(&r.status),
                    esc(r.reason.as_deref().unwrap_or(""))
                );
            }
            for n in &r.notes {
                let _ = write!(
                    s,
                    "<p class=\"note\"><b>{}</b>: {}</p>",
                    esc(&r.backend),
                    esc(n)
                );
            }
            if !r.extra.is_empty() && r.ok() {
                let extra: Vec<String> = r
                    .extra
                    .iter()
                    .map(|(k, v)| format!("{k} {}", table::si(*v)))
                    .collect();
                let _ = write!(
                    s,
                    "<p class=\"note\"><b>{}</b>: {}</p>",
                    esc(&r.backend),
                    esc(&extra.join(", "))
                );
            }
            for e in &r.error_samples {
                let _ = write!(
                    s,
                    "<p class=\"note\" style=\"color:#c0392b\"><b>{}</b> error: {}</p>",
                    esc(&r.backend),
                    esc(e)
                );
            }
        }
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Latency;

    fn rec(backend: &str, ops: f64, survivors: u64) -> Record {
        let mut lat = Latency::default();
        for us in 1..1000 {
            lat.record_ns(us * 1000);
        }
        Record {
            scenario: "killtree".into(),
            backend: backend.into(),
            status: "ok".into(),
            tasks: 10,
            ops_per_s: ops,
            ops_unit: "trees/s".into(),
            latency_us: lat.summary(),
            latency_curve: lat.curve(),
            survivors,
            ..Default::default()
        }
    }

    #[test]
    fn renders_table_plots_and_json() {
        let mut na = rec("epoll", 0.0, 0);
        na.status = "unavailable".into();
        na.reason = Some("no <driver>".into());
        let results = Results {
            schema: 1,
            started: "now".into(),
            command: vec!["pidring".into(), "bench".into()],
            host: Default::default(),
            results: vec![rec("uring", 300.0, 0), na, rec("tokio", 0.0, 70)],
        };
        let html = render(&results);
        assert!(html.contains("<svg") && html.contains("polyline") && html.contains("Survivors"));
        assert!(html.contains("no &lt;driver&gt;"), "escaped");
        let table = table::render(&results.results);
        assert!(table.contains("unavailable: no <driver>"));
        let back: Results =
            serde_json::from_str(&serde_json::to_string(&results).unwrap()).unwrap();
        assert_eq!(back.results.len(), 3);
        assert_eq!(back.results[2].survivors, 70);
        assert!(results.results[0].failure().is_none());
        let mut bad = rec("uring", 1.0, 3);
        assert!(bad.failure().is_some(), "pidring survivors fail the run");
        bad.survivors = 0;
        bad.errors = 1;
        assert!(bad.failure().is_some());
        assert!(
            rec("tokio", 0.0, 70).failure().is_none(),
            "tokio's survivors are a finding"
        );
    }
}
