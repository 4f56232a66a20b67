//! A small supervising program for the parent-death and stale-sweep tests: builds a pool,
//! starts N tasks (`mini-supervisor CONTAINMENT N HELPER STEPS...`), prints `ready` and waits
//! forever. The test then SIGKILLs it and checks that its task runners die with it. With
//! N = 0 it builds the pool (whose start sweeps dead pools' cgroups), prints `ready` and
//! exits 0 (the tests run it in another PID namespace this way).

use std::io::Write;

use pidring::{Containment, Pool, TaskSpec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: mini-supervisor cgroup|process-group N HELPER [STEPS...]");
        std::process::exit(2);
    }
    let containment = match args[0].as_str() {
        "cgroup" => Containment::Cgroup,
        _ => Containment::ProcessGroup,
    };
    let n: usize = args[1].parse().unwrap_or(1);
    let pool = match Pool::builder().workers(2).containment(containment).build() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("mini-supervisor: {e}");
            std::process::exit(1);
        }
    };
    let mut handles = Vec::new();
    for _ in 0..n {
        match pool.spawn(TaskSpec::new(&args[2]).args(&args[3..])) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                eprintln!("mini-supervisor: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    if n == 0 {
        drop(pool);
        std::process::exit(0);
    }
    loop {
        std::thread::park();
    }
}
