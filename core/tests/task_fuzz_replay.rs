//! The task machine's fuzz invariants on the stable toolchain: the committed seed corpus of
//! the `task_machine` fuzz target, replayed, and a deterministic random walk of 100,000
//! scenarios, both through the same driver as the fuzz target (`pidring::task::sim`).

use std::path::PathBuf;
use std::time::Instant;

use pidring::task::sim;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/task_machine")
}

#[test]
fn replay_seed_corpus() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seed corpus in {}", dir.display());
    let base = Instant::now();
    let mut decoded = 0;
    for file in &files {
        // A fuzzer running on this directory may remove a file between listing and reading.
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", file.display()),
        };
        let Some(scenario) = sim::decode(&bytes) else {
            continue;
        };
        decoded += 1;
        if let Err(failure) = sim::run(&scenario, base) {
            panic!("{}: {failure}\n{scenario:#?}", file.display());
        }
    }
    assert!(decoded > 0, "no corpus file decodes to a scenario");
}

#[test]
fn random_walk_100k() {
    let base = Instant::now();
    for seed in 0..100_000u64 {
        let scenario = sim::random_scenario(seed);
        if let Err(failure) = sim::run(&scenario, base) {
            panic!("seed {seed}: {failure}\n{scenario:#?}");
        }
    }
}
