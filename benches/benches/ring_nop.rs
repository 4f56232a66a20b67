//! One io_uring round trip: submit a NOP, wait for its completion, reap it. The floor under
//! every operation the worker does through its ring.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use io_uring::{opcode, IoUring};

fn nop(c: &mut Criterion) {
    let mut ring = match IoUring::new(256) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("io_uring unavailable, skipping ring_nop: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("nop_round_trip", |b| {
        b.iter(|| {
            let sqe = opcode::Nop::new().build().user_data(0x42);
            // SAFETY: a NOP references no memory.
            unsafe { ring.submission().push(&sqe).expect("queue has room") };
            ring.submit_and_wait(1).expect("submit");
            let cqe = ring.completion().next().expect("one completion");
            std::hint::black_box(cqe.user_data());
        })
    });
    const BATCH: u64 = 64;
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("nop_batch_64", |b| {
        b.iter_batched(
            || (),
            |()| {
                for i in 0..BATCH {
                    let sqe = opcode::Nop::new().build().user_data(i);
                    // SAFETY: a NOP references no memory.
                    unsafe { ring.submission().push(&sqe).expect("queue has room") };
                }
                ring.submit_and_wait(BATCH as usize).expect("submit");
                let n = ring.completion().count();
                std::hint::black_box(n);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, nop);
criterion_main!(benches);
