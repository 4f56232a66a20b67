//! Spawn → exit cycles through one pool, a fixed number in flight, on each driver:
//! `cargo run --release -p pidring-tests --example cycles -- N [uring|epoll] [cgroup|pg]`.
use std::time::Instant;

use pidring::{Backend, Containment, Event, Pool, TaskSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let backend = match args.get(2).map(String::as_str) {
        Some("epoll") => Backend::Epoll,
        _ => Backend::Uring,
    };
    let containment = match args.get(3).map(String::as_str) {
        Some("pg") => Containment::ProcessGroup,
        _ => Containment::Cgroup,
    };
    let pool = Pool::builder()
        .workers(2)
        .backend(backend)
        .containment(containment)
        .build()
        .unwrap();
    let t = Instant::now();
    let (mut spawned, mut done, mut live) = (0, 0, 0);
    while done < n {
        while spawned < n && live < 64 {
            pool.spawn(TaskSpec::new("true")).unwrap();
            spawned += 1;
            live += 1;
        }
        if let Event::Done { .. } = pool.events().recv().unwrap() {
            done += 1;
            live -= 1;
        }
    }
    let took = t.elapsed();
    println!(
        "{n} cycles on {:?}/{:?} in {took:.2?}: {:.0}/s; {:?}",
        pool.backend(),
        pool.containment(),
        n as f64 / took.as_secs_f64(),
        pool.stats()
    );
}
