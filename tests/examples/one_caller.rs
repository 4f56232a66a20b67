//! One caller thread spawning `sh -c` tasks through `Pool::spawn`, against a
//! `std::process::Command` loop with the same pipes:
//! `cargo run --release -p pidring-tests --example one_caller -- N [pg|cgroup]`.
use std::io::Read;
use std::time::Instant;

use pidring::{Containment, Event, Pool, TaskSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let containment = match args.get(2).map(String::as_str) {
        Some("pg") => Containment::ProcessGroup,
        Some("cgroup") => Containment::Cgroup,
        _ => Containment::Auto,
    };
    for round in 0..4 {
        let pool = Pool::builder().containment(containment).build().unwrap();
        let events = pool.events().clone();
        let drain = std::thread::spawn(move || {
            let mut done = 0;
            while done < n {
                if let Ok(Event::Done { .. }) = events.recv() {
                    done += 1;
                }
            }
        });
        let t = Instant::now();
        for _ in 0..n {
            pool.spawn(TaskSpec::new("sh").arg("-c").arg("echo spawned"))
                .unwrap();
        }
        let ours = t.elapsed();
        drain.join().unwrap();
        drop(pool);

        let t = Instant::now();
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            children.push(
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg("echo spawned")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        let std_time = t.elapsed();
        for mut c in children {
            let mut s = String::new();
            c.stdout.take().unwrap().read_to_string(&mut s).unwrap();
            c.wait().unwrap();
        }
        println!(
            "round {round}: Pool::spawn {:.0}/s, std loop {:.0}/s: {:.2}x",
            n as f64 / ours.as_secs_f64(),
            n as f64 / std_time.as_secs_f64(),
            std_time.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
