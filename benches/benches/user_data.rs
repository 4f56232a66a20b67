//! `user_data` pack/unpack: the tag on every io_uring submission and completion (slot,
//! generation, operation), decoded once per completion on the worker's hot path.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pidring::__private::user_data::{pack, unpack, OpTag, PidfdUse, Tag};

fn tags() -> Vec<Tag> {
    let ops = [
        OpTag::Exit,
        OpTag::Read(0),
        OpTag::Read(1),
        OpTag::TreeWatch,
        OpTag::Pidfd(PidfdUse::Reap),
        OpTag::Pidfd(PidfdUse::SignalTree(15)),
    ];
    (0..1024u32)
        .map(|i| Tag {
            slot: i * 7919 % 20_000,
            generation: (i % 65_536) as u16,
            op: ops[i as usize % ops.len()],
        })
        .collect()
}

fn user_data(c: &mut Criterion) {
    let tags = tags();
    let packed: Vec<u64> = tags.iter().map(|&t| pack(t)).collect();
    let mut g = c.benchmark_group("user_data");
    g.throughput(Throughput::Elements(tags.len() as u64));
    g.bench_function("pack_1024", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for &t in std::hint::black_box(&tags) {
                acc ^= pack(t);
            }
            acc
        })
    });
    g.bench_function("unpack_1024", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &u in std::hint::black_box(&packed) {
                if let Some(t) = unpack(u) {
                    acc = acc.wrapping_add(t.slot);
                }
            }
            acc
        })
    });
    g.bench_function("round_trip_1024", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for &t in std::hint::black_box(&tags) {
                ok += u32::from(unpack(pack(t)) == Some(t));
            }
            ok
        })
    });
    g.finish();
}

criterion_group!(benches, user_data);
criterion_main!(benches);
