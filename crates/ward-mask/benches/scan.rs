//! Throughput of `Masker::mask` over a realistic mixed result-set corpus:
//! mostly clean values (log lines, product names, numbers, timestamps,
//! UUIDs, JSON blobs) with ~2% of values carrying PII.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ward_mask::{
    Detector, DetectorConfig, JsonKeys, MaskResult, Masker, MaskerConfig, Outcome, Strategy,
    mask_json_into,
};

/// Tiny deterministic PRNG so the corpus is identical on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
}

fn clean_value(r: &mut Lcg) -> String {
    const PRODUCTS: &[&str] = &[
        "Ergonomic Steel Chair",
        "Wireless Mouse M325",
        "USB-C Hub 7-in-1",
        "Organic Green Tea 500g",
        "4K Monitor 27\"",
        "Running Shoes Size 42",
    ];
    const LEVELS: &[&str] = &["INFO", "WARN", "DEBUG", "ERROR"];
    const MSGS: &[&str] = &[
        "request completed",
        "cache miss for key user_profile",
        "retrying upstream connection",
        "order shipped to warehouse",
        "payment authorised by provider",
        "session refreshed",
    ];
    match r.next() % 6 {
        0 => format!(
            "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} [worker-{}] {} latency_ms={} status={}",
            r.next() % 12 + 1,
            r.next() % 28 + 1,
            r.next() % 24,
            r.next() % 60,
            r.next() % 60,
            r.next() % 1000,
            r.pick(LEVELS),
            r.next() % 16,
            r.pick(MSGS),
            r.next() % 900,
            200 + r.next() % 4
        ),
        1 => format!(
            "{} (SKU {}) - in stock: {}",
            r.pick(PRODUCTS),
            100_000 + r.next() % 900_000,
            r.next() % 500
        ),
        2 => format!("{}", r.next() % 10_000_000),
        3 => format!("{}.{:02}", r.next() % 10_000, r.next() % 100),
        4 => format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            r.next(),
            r.next() & 0xffff,
            r.next() & 0xfff,
            r.next() & 0xfff,
            (r.next() * r.next()) & 0xffff_ffff_ffff
        ),
        _ => format!(
            r#"{{"order_id":{},"items":[{{"name":"{}","qty":{}}}],"created":"2024-03-{:02} 10:{:02}:00","version":"1.{}.{}"}}"#,
            r.next() % 100_000_000,
            r.pick(PRODUCTS),
            r.next() % 5 + 1,
            r.next() % 28 + 1,
            r.next() % 60,
            r.next() % 10,
            r.next() % 30
        ),
    }
}

fn pii_value(r: &mut Lcg) -> String {
    const PII: &[&str] = &[
        "customer john.doe@example.com called about refund",
        "card 4111 1111 1111 1111 declined",
        "ssn on file 123-45-6789",
        "callback +14155552671 after 5pm",
        "login from 203.0.113.42 blocked",
        "iban GB82 WEST 1234 5698 7654 32",
        "aws key AKIAIOSFODNN7EXAMPLE leaked",
        "token eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ];
    format!("{} ({})", r.pick(PII), clean_value(r))
}

/// Values plus whether each one was generated with PII.
fn corpus() -> (Vec<Vec<u8>>, Vec<bool>) {
    let mut r = Lcg(42);
    let (mut out, mut pii) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    while bytes < 4 << 20 {
        let is_pii = r.next() % 100 < 2;
        let v = if is_pii {
            pii_value(&mut r)
        } else {
            clean_value(&mut r)
        };
        bytes += v.len();
        out.push(v.into_bytes());
        pii.push(is_pii);
    }
    (out, pii)
}

fn masker() -> Masker {
    let d = |d| DetectorConfig::new(d, Strategy::Redact);
    Masker::new(MaskerConfig {
        detectors: vec![
            d(Detector::Email),
            d(Detector::PaymentCard),
            d(Detector::Iban),
            d(Detector::UsSsn),
            d(Detector::Phone),
            d(Detector::Ipv4),
            d(Detector::Ipv6),
            d(Detector::Jwt),
            d(Detector::AwsAccessKey),
            d(Detector::PemPrivateKey),
        ],
        token_key: None,
    })
    .expect("valid config")
}

fn bench(c: &mut Criterion) {
    let (values, pii) = corpus();
    let total: usize = values.iter().map(Vec::len).sum();
    let m = masker();
    let changed: Vec<bool> = values.iter().map(|v| !m.mask(v).is_unchanged()).collect();
    let masked = changed.iter().filter(|c| **c).count();
    let false_pos = changed
        .iter()
        .zip(&pii)
        .filter(|(c, p)| **c && !**p)
        .count();
    let false_neg = changed
        .iter()
        .zip(&pii)
        .filter(|(c, p)| !**c && **p)
        .count();
    eprintln!(
        "corpus: {} values, {} bytes, {} masked ({:.2}%), false positives {}, false negatives {}",
        values.len(),
        total,
        masked,
        100.0 * masked as f64 / values.len() as f64,
        false_pos,
        false_neg
    );

    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("mixed_corpus_all_detectors", |b| {
        b.iter(|| {
            let mut changed = 0usize;
            for v in &values {
                if !matches!(m.mask(black_box(v)), MaskResult::Unchanged(_)) {
                    changed += 1;
                }
            }
            black_box(changed)
        })
    });
    g.finish();

    // `jsonb`-style documents (spaces after `:`/`,`), ~2% with an email in
    // a nested free-text field, plus one key rule that never matches so the
    // glob check runs on every member name.
    let docs = json_corpus();
    let total: usize = docs.iter().map(Vec::len).sum();
    let keys = JsonKeys::new(vec![
        ("password".into(), Strategy::Null),
        ("*_secret".into(), Strategy::Redact),
    ]);
    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("mask_json_into_all_detectors", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            let mut changed = 0usize;
            for d in &docs {
                out.clear();
                let r = mask_json_into(&m, &keys, black_box(d), &mut out);
                if r != Some(Outcome::Unchanged) {
                    changed += 1;
                }
            }
            black_box(changed)
        })
    });
    g.finish();
}

fn json_corpus() -> Vec<Vec<u8>> {
    let mut r = Lcg(7);
    let mut docs = Vec::new();
    let mut bytes = 0;
    while bytes < 2 << 20 {
        let note = if r.next() % 100 < 2 {
            "customer john.doe@example.com asked for a refund".to_owned()
        } else {
            format!(
                "delivered to locker {} at 10:{:02}",
                r.next() % 900,
                r.next() % 60
            )
        };
        let d = format!(
            r#"{{"id": {}, "status": "shipped", "total": {}.{:02}, "created_at": "2024-03-{:02}T10:{:02}:00Z", "customer": {{"tier": "gold", "tags": ["vip", "eu"], "consent": true}}, "items": [{{"sku": "SKU-{}", "qty": {}, "price": 19.99}}, {{"sku": "SKU-{}", "qty": 1, "price": 5.5}}], "note": "{}", "meta": {{"source": "web", "ab": null, "trace": "{:016x}"}}}}"#,
            r.next() % 100_000_000,
            r.next() % 1000,
            r.next() % 100,
            r.next() % 28 + 1,
            r.next() % 60,
            r.next() % 100_000,
            r.next() % 5 + 1,
            r.next() % 100_000,
            note,
            r.next() * r.next()
        );
        bytes += d.len();
        docs.push(d.into_bytes());
    }
    docs
}

criterion_group!(benches, bench);
criterion_main!(benches);
