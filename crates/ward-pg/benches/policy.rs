//! Parse + decision per statement: what a guardrail costs on the hot path.
//! Run with `cargo bench -p ward-pg --bench policy`.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use std::collections::BTreeMap;
use ward_core::policy::{Policy, PolicyConfig, RuleConfig, Subject};
use ward_pg::classify::{classify, classify_uncached};

/// Ten rules of the kinds a team would write.
const RULES: &str = r#"
- { name: no-deletes, statements: [delete], identities: ["ci-*"], action: deny }
- { name: no-drops, statements: [drop, truncate], action: deny }
- { name: no-bulk, statements: [update, delete], flags: [no_where], action: deny }
- { name: approve-grants, statements: [grant, revoke], action: review, approvers: [group:sre] }
- { name: pii-reads, tables: ["*.customers", "*.payment_cards"], access: read, groups: [contractors], action: review }
- { name: audit-ro, tables: ["audit.*"], access: write, action: deny }
- { name: no-terminate, functions: [pg_terminate_backend, pg_cancel_backend], action: deny }
- { name: prod-ddl, targets: ["env=prod"], statements: [create, alter], action: review }
- { name: log-copies, statements: [copy], action: log }
- { name: dba-procedural, statements: [do, call], groups: [dba], action: allow }
"#;

const OLTP: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = 48213",
    "UPDATE pgbench_accounts SET abalance = abalance + -2314 WHERE aid = 48213",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 48213, -2314, CURRENT_TIMESTAMP)",
    "SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1",
];

fn bench(c: &mut Criterion) {
    let rules: Vec<RuleConfig> = serde_yaml::from_str(RULES).unwrap();
    let policy = Policy::new(rules, PolicyConfig::default(), BTreeMap::new()).unwrap();
    let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    let groups = vec!["ci".to_string()];
    let subject = Subject {
        identity: "ci-nightly",
        groups: &groups,
        target: "orders-db",
        target_labels: &labels,
        protocol: "postgres",
    };

    let mut group = c.benchmark_group("policy");
    for (i, sql) in OLTP.iter().enumerate() {
        group.bench_function(format!("parse_and_decide_cold/{i}"), |b| {
            b.iter(|| {
                let classified = classify_uncached(black_box(sql));
                black_box(policy.decide(&subject, classified.as_deref()))
            })
        });
        group.bench_function(format!("parse_and_decide_warm/{i}"), |b| {
            b.iter(|| {
                let classified = classify(black_box(sql));
                black_box(policy.decide(&subject, classified.as_deref()))
            })
        });
    }
    // pgbench -S in simple mode: the same statement with a new literal every time.
    let mut aid = 0u64;
    group.bench_function("parse_and_decide_new_literal_each_time", |b| {
        b.iter(|| {
            aid += 1;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid}");
            let classified = classify(black_box(&sql));
            black_box(policy.decide(&subject, classified.as_deref()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
