use super::*;

fn load(yaml: &str) -> Result<Masking, MaskingError> {
    let config: MaskingConfig = serde_yaml::from_str(yaml).expect("valid yaml");
    Masking::with_key(&config, Some(b"k".to_vec()))
}

fn subject<'a>(
    identity: &'a str,
    groups: &'a [String],
    labels: &'a BTreeMap<String, String>,
) -> MaskSubject<'a> {
    MaskSubject {
        identity,
        groups,
        target: "orders-db",
        target_labels: labels,
    }
}

fn col<'a>(name: &'a str, schema: &'a str, table: &'a str) -> ColumnRef<'a> {
    ColumnRef {
        name,
        attribute: None,
        origin: Origin::Table { schema, table },
    }
}

const RULES: &str = r#"
rules:
  - name: cards
    columns: ["public.customers.card", "notes"]
    strategy: redact
  - name: pii
    detectors: [email, payment_card]
    scan: ["*.comment", "*.email"]
    unmask_for: ["group:dpo"]
    strategy: tokenize
  - name: ops-only
    identities: ["ops-*"]
    columns: ["*.ssn"]
    strategy: "null"
"#;

#[test]
fn column_rules_match_qualified_and_bare_patterns() {
    let m = Arc::new(load(RULES).unwrap());
    let labels = BTreeMap::new();
    let s = m.for_session(&subject("ci", &[], &labels)).unwrap();
    assert!(s.has_column_rules());
    assert_eq!(
        s.column(&col("card", "public", "customers")).whole,
        Some(Strategy::Redact)
    );
    assert!(s.column(&col("card", "public", "orders")).whole.is_none());
    assert!(s.column(&col("card", "other", "customers")).whole.is_none());
    // Bare patterns match any table and computed columns.
    assert!(s.column(&col("notes", "x", "y")).whole.is_some());
    let computed = ColumnRef {
        name: "notes",
        attribute: None,
        origin: Origin::Computed,
    };
    assert!(s.column(&computed).whole.is_some());
    // An alias does not hide the attribute's own name.
    let aliased = ColumnRef {
        name: "c",
        attribute: Some("card"),
        origin: Origin::Table {
            schema: "public",
            table: "customers",
        },
    };
    assert!(s.column(&aliased).whole.is_some());
    // A table that could not be named errs towards masking.
    let unresolved = ColumnRef {
        name: "card",
        attribute: None,
        origin: Origin::Unresolved,
    };
    assert!(s.column(&unresolved).whole.is_some());
    // Identity-scoped rule does not apply to ci.
    assert!(s.column(&col("ssn", "public", "customers")).whole.is_none());
    let ops = m.for_session(&subject("ops-1", &[], &labels)).unwrap();
    assert_eq!(
        ops.column(&col("ssn", "public", "customers")).whole,
        Some(Strategy::Null)
    );
}

#[test]
fn scan_scope_and_unmask_for() {
    let m = Arc::new(load(RULES).unwrap());
    let labels = BTreeMap::new();
    let s = m.for_session(&subject("ci", &[], &labels)).unwrap();
    assert!(s.column(&col("comment", "public", "t")).content.is_some());
    assert!(s.column(&col("other", "public", "t")).content.is_none());
    let dpo = vec!["dpo".to_string()];
    let d = m.for_session(&subject("ci", &dpo, &labels)).unwrap();
    assert!(d.column(&col("comment", "public", "t")).content.is_none());
    assert_eq!(d.rule_names(), ["cards".to_string()]);
}

#[test]
fn sessions_without_rules_get_none() {
    let m = Arc::new(load("rules:\n  - { name: a, targets: [other], detectors: all }").unwrap());
    let labels = BTreeMap::new();
    assert!(m.for_session(&subject("ci", &[], &labels)).is_none());
    let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    let m = Arc::new(load("rules:\n  - { name: a, targets: [env=prod], detectors: all }").unwrap());
    assert!(m.for_session(&subject("ci", &[], &labels)).is_some());
}

#[test]
fn bad_rules_are_explained() {
    let cases = [
        ("rules:\n  - { name: a }", "say what to mask"),
        (
            "rules:\n  - { name: a, detectors: [emial] }",
            "unknown detector \"emial\"",
        ),
        (
            "rules:\n  - { name: a, columns: [a.b.c.d] }",
            "schema.table.column",
        ),
        (
            "rules:\n  - { name: a, columns: [x], strategy: fixed }",
            "needs `fixed:`",
        ),
        (
            "detectors:\n  - { name: e, pattern: '(' }\nrules: []",
            "detectors.e",
        ),
        (
            "detectors:\n  - { name: email, pattern: 'x' }\nrules: []",
            "built-in",
        ),
        (
            "rules:\n  - { name: a, columns: [x] }\n  - { name: a, columns: [y] }",
            "two rules",
        ),
    ];
    for (yaml, expected) in cases {
        let err = load(yaml).unwrap_err().to_string();
        assert!(err.contains(expected), "{yaml}: {err}");
    }
    let config: MaskingConfig =
        serde_yaml::from_str("rules:\n  - { name: a, columns: [x], strategy: tokenize }").unwrap();
    let err = Masking::with_key(&config, None).unwrap_err().to_string();
    assert!(err.contains("token_key"), "{err}");
}

#[test]
fn custom_detectors_are_usable_by_name() {
    let m = Arc::new(
        load("detectors:\n  - { name: emp, pattern: 'EMP-[0-9]{6}' }\nrules:\n  - { name: a, detectors: [emp], strategy: fixed, fixed: '[emp]' }")
            .unwrap(),
    );
    let labels = BTreeMap::new();
    let s = m.for_session(&subject("ci", &[], &labels)).unwrap();
    let masker = s.column(&col("x", "public", "t")).content.unwrap();
    assert_eq!(
        masker.mask(b"id EMP-123456 ok"),
        ward_mask::MaskResult::Masked(b"id [emp] ok".to_vec())
    );
}
