//! Hot-path micro-benchmarks of the PostgreSQL relay: walking message boundaries of a
//! result stream, and the tracker's per-message bookkeeping for a `pgbench -S`-style
//! exchange. Run with `cargo bench -p ward-pg --bench framing`.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use ward_core::event::SessionId;
use ward_pg::codec::{Framer, Scan, put_cstr, put_message};
use ward_pg::tracker::Tracker;

/// A result of `rows` DataRows of two text columns, as a server would send it.
fn result_stream(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    put_message(&mut out, b'T', |b| {
        b.extend(2i16.to_be_bytes());
        for name in ["aid", "abalance"] {
            put_cstr(b, name);
            b.extend([0u8; 18]);
        }
    });
    for i in 0..rows {
        put_message(&mut out, b'D', |b| {
            b.extend(2i16.to_be_bytes());
            let a = i.to_string();
            b.extend((a.len() as i32).to_be_bytes());
            b.extend(a.as_bytes());
            b.extend(4i32.to_be_bytes());
            b.extend(b"1234");
        });
    }
    put_message(&mut out, b'C', |b| put_cstr(b, &format!("SELECT {rows}")));
    put_message(&mut out, b'Z', |b| b.push(b'I'));
    out
}

fn bench_framing(c: &mut Criterion) {
    let stream = result_stream(1000);
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("scan_result_1000_rows", |b| {
        b.iter(|| {
            let mut framer = Framer::new(1 << 30);
            let mut rows = 0u32;
            let n = framer
                .scan::<()>(
                    black_box(&stream),
                    |t| t == b'D',
                    |s| {
                        if let Scan::Whole { tag: b'D', .. } = s {
                            rows += 1;
                        }
                        Ok(())
                    },
                )
                .unwrap()
                .unwrap();
            black_box((n, rows))
        })
    });
    group.finish();

    // One pgbench -S transaction in extended mode: Bind/Execute/Sync out, BindComplete/
    // DataRow/CommandComplete/ReadyForQuery back.
    let mut front = Vec::new();
    put_message(&mut front, b'P', |b| {
        put_cstr(b, "");
        put_cstr(b, "SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
        b.extend(0i16.to_be_bytes());
    });
    put_message(&mut front, b'B', |b| {
        put_cstr(b, "");
        put_cstr(b, "");
        b.extend(0i16.to_be_bytes());
        b.extend(1i16.to_be_bytes());
        b.extend(5i32.to_be_bytes());
        b.extend(b"31337");
        b.extend(0i16.to_be_bytes());
    });
    put_message(&mut front, b'E', |b| {
        put_cstr(b, "");
        b.extend(0i32.to_be_bytes());
    });
    put_message(&mut front, b'S', |_| {});
    let back = result_stream(1);
    let mut back_full = Vec::new();
    put_message(&mut back_full, b'1', |_| {});
    put_message(&mut back_full, b'2', |_| {});
    back_full.extend(back);
    c.bench_function("tracker_extended_transaction", |b| {
        let mut tracker = Tracker::new(SessionId::generate(), 1024, 65536);
        let mut events = Vec::with_capacity(4);
        b.iter(|| {
            let mut f = Framer::new(1 << 30);
            f.scan::<()>(
                &front,
                |_| false,
                |s| {
                    if let Scan::Whole { tag, body } = s {
                        tracker.frontend(tag, body);
                    }
                    Ok(())
                },
            )
            .unwrap()
            .unwrap();
            let mut f = Framer::new(1 << 30);
            f.scan::<()>(
                &back_full,
                |_| false,
                |s| {
                    if let Scan::Whole { tag, body } = s {
                        tracker.backend(tag, body, &mut events);
                    }
                    Ok(())
                },
            )
            .unwrap()
            .unwrap();
            black_box(events.drain(..).count())
        })
    });
}

criterion_group!(benches, bench_framing);
criterion_main!(benches);
