//! Quick spawn-rate probe: `cargo run --release -p pidring-tests --example spawn_rate -- N MODE PROGRAM`.
use std::time::Instant;

use pidring::{Containment, Event, Pool, TaskSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let containment = match args.get(2).map(String::as_str) {
        Some("pg") => Containment::ProcessGroup,
        Some("cgroup") => Containment::Cgroup,
        _ => Containment::Auto,
    };
    let program = args.get(3).cloned().unwrap_or_else(|| "sleep".into());
    let pool = Pool::builder()
        .containment(containment)
        .max_tasks(n)
        .build()
        .unwrap();
    let t = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| pool.spawn(TaskSpec::new(&program).arg("600")).unwrap())
        .collect();
    let spawn = t.elapsed();
    println!(
        "{n} spawned in {spawn:.2?}: {:.0}/s ({})",
        n as f64 / spawn.as_secs_f64(),
        pool.containment().as_str()
    );
    if let Some(secs) = std::env::var("PAUSE_BEFORE_KILL")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // Time to attach a tracer to the kill phase alone.
        eprintln!("pid {}: killing in {secs} s", std::process::id());
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    let t = Instant::now();
    for h in &handles {
        h.kill().unwrap();
    }
    let mut done = 0;
    while done < n {
        if let Event::Done { .. } = pool.events().recv().unwrap() {
            done += 1;
        }
    }
    println!("kill-all to last Done: {:.2?}", t.elapsed());
}
