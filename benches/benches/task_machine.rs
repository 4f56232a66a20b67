//! The task state machine's cost: a typical lifecycle (spawn, 100 outputs, exit, two EOFs,
//! release) measured in transitions (inputs handled, creation included) per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pidring::task::{Action, AfterExit, ExitStatus, StreamId, TaskConfig, TaskMachine, TreeWatch};

const OUTPUTS: u64 = 100;
/// `new` + the outputs + the exit + two EOFs.
const TRANSITIONS: u64 = 1 + OUTPUTS + 1 + 2;

fn drain(m: &mut TaskMachine) -> usize {
    let mut n = 0;
    while let Some(action) = m.poll_action() {
        black_box(&action);
        n += 1;
    }
    n
}

fn lifecycle(config: &TaskConfig, t0: Instant) -> bool {
    let mut m = TaskMachine::new(config.clone(), t0);
    drain(&mut m);
    let streams = [StreamId::STDOUT, StreamId::STDERR];
    for i in 0..OUTPUTS {
        let now = t0 + Duration::from_micros(i);
        let _ = m.handle_data(streams[(i % 2) as usize], 4096, true, now);
        drain(&mut m);
        black_box(m.poll_timeout());
    }
    let now = t0 + Duration::from_millis(1);
    let _ = m.handle_process_exited(ExitStatus::Code(0), now);
    drain(&mut m);
    let _ = m.handle_eof(StreamId::STDOUT, now);
    drain(&mut m);
    let _ = m.handle_eof(StreamId::STDERR, now);
    let mut released = false;
    while let Some(action) = m.poll_action() {
        released |= action == Action::Release;
    }
    released && m.is_released()
}

fn bench(c: &mut Criterion) {
    let config = TaskConfig {
        streams: vec![StreamId::STDOUT, StreamId::STDERR],
        writable: Vec::new(),
        timeout: Some(Duration::from_secs(60)),
        grace: Duration::from_secs(5),
        drain: Duration::from_secs(1),
        tree: TreeWatch::None,
        after_exit: AfterExit::KillTree,
    };
    let t0 = Instant::now();
    assert!(lifecycle(&config, t0), "the lifecycle must end in Release");
    let mut group = c.benchmark_group("task_machine");
    group.throughput(Throughput::Elements(TRANSITIONS));
    group.bench_function("lifecycle_100_outputs", |b| {
        b.iter(|| black_box(lifecycle(black_box(&config), t0)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
