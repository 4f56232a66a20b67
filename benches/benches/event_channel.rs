//! Event delivery from a worker thread to the user through a crossbeam channel, the path of
//! every `Event` the pool emits: one event across threads, and a burst of output events.

use std::thread;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_channel::{bounded, unbounded};
use pidring::{Event, ExitStatus, StreamId, TaskId};

fn output(i: u64) -> Event {
    Event::Output {
        task: TaskId(i),
        stream: StreamId::STDOUT,
        bytes: vec![b'x'; 64].into(),
    }
}

fn channel(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_channel");
    g.throughput(Throughput::Elements(1));
    g.bench_function("same_thread_send_recv", |b| {
        let (tx, rx) = unbounded();
        let mut i = 0;
        b.iter(|| {
            i += 1;
            tx.send(Event::Exited {
                task: TaskId(i),
                status: ExitStatus::Code(0),
            })
            .unwrap();
            std::hint::black_box(rx.recv().unwrap());
        })
    });
    // A round trip through another thread: the worker-to-user hop and back.
    g.bench_function("cross_thread_ping_pong", |b| {
        let (to_worker, worker_rx) = bounded::<Event>(1);
        let (to_user, user_rx) = bounded::<Event>(1);
        let echo = thread::spawn(move || {
            while let Ok(ev) = worker_rx.recv() {
                if to_user.send(ev).is_err() {
                    break;
                }
            }
        });
        let mut i = 0;
        b.iter(|| {
            i += 1;
            to_worker.send(output(i)).unwrap();
            std::hint::black_box(user_rx.recv().unwrap());
        });
        drop(to_worker);
        echo.join().unwrap();
    });
    // Throughput: a producer thread sends a burst of 64-byte output events, the user drains.
    const BURST: u64 = 10_000;
    g.throughput(Throughput::Elements(BURST));
    g.bench_function("cross_thread_burst_10k", |b| {
        b.iter(|| {
            let (tx, rx) = unbounded();
            let producer = thread::spawn(move || {
                for i in 0..BURST {
                    tx.send(output(i)).unwrap();
                }
            });
            let mut n = 0;
            for ev in rx.iter() {
                std::hint::black_box(&ev);
                n += 1;
            }
            producer.join().unwrap();
            assert_eq!(n, BURST);
        })
    });
    g.finish();
}

criterion_group!(benches, channel);
criterion_main!(benches);
