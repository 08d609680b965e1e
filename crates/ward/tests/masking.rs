//! Masking: sensitive values in results never reach a client (or the audit) in clear,
//! whichever path they take — text and binary DataRows, JSON, bytea and encodings, COPY,
//! error and notice fields, notifications — while everything else passes untouched.
//!
//! Every test runs real clients (psql, tokio-postgres) through a real `ward serve` against a
//! table of synthetic PII in the harness's PostgreSQL, and checks three things, so a test
//! cannot pass by returning nothing:
//! * none of the original sensitive strings (nor their hex / base64 / upper-case forms)
//!   appears in what the client received (stdout and stderr together);
//! * the masked forms do appear (`u****@*******.com`, the last four card digits), with the
//!   expected number of rows;
//! * non-sensitive values (`id`, `name`) are intact, and the same query straight to
//!   PostgreSQL does show the clear values (the data really is there).

mod harness;
mod pgwire;

use harness::{
    AuthMethod, PgTarget, Postgres, Target, TokenSpec, Ward, WardOptions, wait_for, wait_until,
};
use std::future::poll_fn;
use std::process::Output;
use std::time::Duration;
use tokio_postgres::AsyncMessage;
use tokio_postgres::types::{FromSql, Type};

const ID: &str = "ci-nightly";
const TARGET: &str = "shop";
const ROWS: usize = 20;

/// The masked form every `user{N}@example.com` must take under `strategy: redact`.
const MASKED_DOMAIN: &str = "@*******.com";

/// The main rule set: column rules (one schema-qualified, one table glob, one bare column
/// name), every built-in detector, and a JSON key.
const PII_RULES: &str = r#"
masking:
  rules:
    - name: pii
      targets: [shop]
      columns: ["public.customers.card", "*.notes", "secret_code"]
      detectors: all
      json_keys: [password]
      strategy: redact
"#;

const FIRST_NAMES: [&str; ROWS] = [
    "Alice", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Kiara", "Lars", "Mina", "Noah", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tara",
];

const COLORS: [&str; 5] = ["green", "black", "jasmine", "mint", "oolong"];

// ---------------------------------------------------------------------------------------
// Synthetic PII
// ---------------------------------------------------------------------------------------

/// One generated customer row.
#[derive(Clone, Debug)]
struct Customer {
    id: usize,
    name: String,
    email: String,
    /// As stored: odd ids in `4556 7375 …` groups, even ids as 16 bare digits.
    card: String,
    ssn: String,
    phone: String,
    notes: String,
    secret_code: String,
}

/// The Luhn check digit for `body` (digits only).
fn luhn_check_digit(body: &str) -> u32 {
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).expect("digit");
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

fn luhn_valid(number: &str) -> bool {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let (body, check) = digits.split_at(digits.len() - 1);
    luhn_check_digit(body) == check.parse::<u32>().unwrap()
}

fn customers() -> Vec<Customer> {
    (1..=ROWS)
        .map(|n| {
            let body = format!("45567375{:07}", 1_000_000 + n * 104_729);
            let digits = format!("{body}{}", luhn_check_digit(&body));
            assert_eq!(digits.len(), 16);
            assert!(
                luhn_valid(&digits),
                "generated card {digits} is not Luhn-valid"
            );
            let card = if n % 2 == 1 {
                format!(
                    "{} {} {} {}",
                    &digits[0..4],
                    &digits[4..8],
                    &digits[8..12],
                    &digits[12..16]
                )
            } else {
                digits
            };
            Customer {
                id: n,
                name: format!("{} Tester", FIRST_NAMES[n - 1]),
                email: format!("user{n}@example.com"),
                card,
                ssn: format!("123-45-67{:02}", 10 + n),
                phone: format!("(415) 555-01{:02}", 10 + n),
                notes: format!("likes {} tea and jazz, visit {n}", COLORS[n % COLORS.len()]),
                secret_code: format!("zebra{n}quartz"),
            }
        })
        .collect()
}

/// The `profile` jsonb document of a customer.
fn profile(c: &Customer) -> serde_json::Value {
    serde_json::json!({
        "email": c.email,
        "password": "hunter2",
        "nested": { "card": "4111111111111111" },
        "tier": "gold",
    })
}

impl Customer {
    fn card_digits(&self) -> String {
        self.card.chars().filter(char::is_ascii_digit).collect()
    }

    /// The card as `redact` must show it: separators and last four digits kept.
    fn masked_card(&self) -> String {
        let total = self.card_digits().len();
        let mut seen = 0;
        self.card
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    seen += 1;
                    if seen > total - 4 { c } else { '*' }
                } else {
                    c
                }
            })
            .collect()
    }

    /// The email as `redact` must show it: `u****@*******.com`.
    fn masked_email(&self) -> String {
        let (local, _) = self.email.split_once('@').unwrap();
        format!(
            "{}{}{MASKED_DOMAIN}",
            &local[..1],
            "*".repeat(local.len() - 1)
        )
    }

    /// Strings a detector must catch wherever they show up.
    fn detectable(&self) -> Vec<String> {
        let digits = self.card_digits();
        let mut v = vec![
            self.email.clone(),
            self.email.to_uppercase(),
            hex::encode(self.email.as_bytes()),
            base64(self.email.as_bytes()),
            self.card.clone(),
            digits.clone(),
            digits[..12].to_string(),
            self.ssn.clone(),
            self.phone.clone(),
            self.phone[6..].to_string(), // `555-01NN`
            "4111111111111111".to_string(),
        ];
        if self.card.contains(' ') {
            v.push(self.card[..14].to_string()); // `4556 7375 1234`
        }
        v
    }

    /// Strings only a column rule or a JSON key rule can catch.
    fn rule_only(&self) -> Vec<String> {
        vec![
            self.notes.clone(),
            self.secret_code.clone(),
            "hunter2".to_string(),
        ]
    }
}

/// Everything a detector must catch, over all customers.
fn detectable_strings() -> Vec<String> {
    customers().iter().flat_map(Customer::detectable).collect()
}

/// Everything that must not appear when column rules and JSON keys apply too.
fn all_sensitive_strings() -> Vec<String> {
    let mut v = detectable_strings();
    for c in customers() {
        v.extend(c.rule_only());
    }
    // Markers every note and secret code shares: a partial leak shows them too.
    v.push("jazz".into());
    v.push("quartz".into());
    v
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let got = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&got[..3 - pad]);
    }
    Some(out)
}

/// Decodings of every hex (`\x…` or bare) and base64 token in `text`, one per line, so
/// that a leak hidden behind an encoding is seen (and masked forms behind one can be
/// checked).
fn decoded_views(text: &str) -> String {
    let mut out = String::new();
    let is_tok = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
    for tok in text.split(|c: char| !is_tok(c)) {
        let hexpart = tok.strip_prefix('x').unwrap_or(tok);
        if hexpart.len() >= 8
            && hexpart.len() % 2 == 0
            && hexpart.chars().all(|c| c.is_ascii_hexdigit())
            && let Ok(bytes) = hex::decode(hexpart)
        {
            out.push_str(&String::from_utf8_lossy(&bytes));
            out.push('\n');
        }
        if tok.len() >= 12
            && let Some(bytes) = base64_decode(tok)
        {
            out.push_str(&String::from_utf8_lossy(&bytes));
            out.push('\n');
        }
    }
    out
}

/// `text` plus the decodings of its encoded tokens.
fn with_decodings(text: &str) -> String {
    format!("{text}\n{}", decoded_views(text))
}

/// The forbidden strings found in `text` (or in its decoded tokens).
fn leaks(text: &str, forbidden: &[String]) -> Vec<String> {
    let all = with_decodings(text);
    let mut seen = std::collections::HashSet::new();
    forbidden
        .iter()
        .filter(|f| all.contains(f.as_str()) && seen.insert(f.as_str()))
        .cloned()
        .collect()
}

fn assert_no_leaks(what: &str, text: &str, forbidden: &[String]) {
    let found = leaks(text, forbidden);
    assert!(
        found.is_empty(),
        "{what}: {} sensitive value(s) reached the client in clear: {found:?}\n--- output ---\n{}",
        found.len(),
        shorten(text)
    );
}

fn shorten(text: &str) -> String {
    if text.len() <= 4000 {
        text.to_string()
    } else {
        let mut end = 4000;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}\n… ({} bytes in all)", &text[..end], text.len())
    }
}

// ---------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A fresh target database with `customers` (20 rows of synthetic PII) and a view over it,
/// both owned by the target's user.
fn create_db(name: &str) -> PgTarget {
    let pg = Postgres::get();
    let db = pg.create_target(name, AuthMethod::ScramSha256);
    let values: Vec<String> = customers()
        .iter()
        .map(|c| {
            format!(
                "({}, {}, {}, {}, {}, {}, {}, {}::jsonb, {})",
                c.id,
                lit(&c.name),
                lit(&c.email),
                lit(&c.card),
                lit(&c.ssn),
                lit(&c.phone),
                lit(&c.notes),
                lit(&profile(c).to_string()),
                lit(&c.secret_code)
            )
        })
        .collect();
    pg.admin_sql(
        &db.database,
        &format!(
            "create table customers (id int primary key, name text, email text unique, \
               card text, ssn text, phone text, notes text, profile jsonb, secret_code text);
             insert into customers values {};
             create view v_customers as select * from customers;
             alter table customers owner to {user};
             alter view v_customers owner to {user}",
            values.join(",\n"),
            user = db.user
        ),
    );
    db
}

struct Env {
    db: PgTarget,
    ward: Ward,
}

/// A target `shop` with the customers table and a ward with `yaml` and a token for [`ID`].
fn start(name: &str, yaml: &str) -> Env {
    let db = create_db(name);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &db))
            .token(ID)
            .extra_yaml(yaml),
    );
    Env { db, ward }
}

impl Env {
    fn psql(&self, sql: &str) -> Output {
        self.ward.psql(ID, TARGET, sql)
    }

    /// The same SQL straight to PostgreSQL.
    fn direct(&self, sql: &str) -> String {
        Postgres::get().admin_sql(&self.db.database, sql)
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The log part of a `Ward::try_start` error (the error also quotes the config file,
/// which names the problem itself).
fn log_part(err: &str) -> &str {
    err.split_once("--- ward log ---")
        .map(|(_, log)| log)
        .unwrap_or(err)
}

/// Everything the audit holds: the session list and every session's details, as JSON text.
fn audit_dump(ward: &Ward) -> String {
    let list = ward.sessions_json();
    let mut all = list.to_string();
    for s in list["sessions"].as_array().into_iter().flatten() {
        if let Some(id) = s["id"].as_str() {
            all.push('\n');
            all.push_str(&ward.session_json(id).to_string());
        }
    }
    all
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn is_token(s: &str) -> bool {
    s.len() == 20
        && s.starts_with("tok_")
        && s[4..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// A column value as raw wire bytes (binary format), whatever its type.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------
// Plain selects (psql, text format)
// ---------------------------------------------------------------------------------------

#[test]
fn select_star_via_psql_masks_every_sensitive_column() {
    let env = start("mask_select_star", PII_RULES);
    let sql = "select * from customers order by id";

    // Sanity: PostgreSQL itself holds the clear values.
    let direct = env.direct(sql);
    for needle in [
        "user1@example.com",
        "hunter2",
        "zebra1quartz",
        "123-45-6711",
    ] {
        assert!(
            direct.contains(needle),
            "direct output lacks {needle}: {direct}"
        );
    }

    let out = env.psql(sql);
    let text = output_text(&out);
    assert!(out.status.success(), "{}", harness::describe(&out));
    assert_no_leaks(sql, &text, &all_sensitive_strings());

    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), ROWS, "one line per row:\n{text}");
    let mut problems = Vec::new();
    for (c, line) in customers().iter().zip(&lines) {
        // id|name|email|card|ssn|phone|notes|profile|secret_code
        let f: Vec<&str> = line.split('|').collect();
        if f.len() != 9 {
            problems.push(format!("row {}: expected 9 fields: {line}", c.id));
            continue;
        }
        let mut check = |ok: bool, what: &str| {
            if !ok {
                problems.push(format!("row {}: {what}: {line}", c.id));
            }
        };
        check(f[0] == c.id.to_string(), "id intact");
        check(f[1] == c.name, "name intact");
        check(
            f[2] == c.masked_email(),
            "email redacted as u****@*******.com",
        );
        check(f[3] == c.masked_card(), "card keeps separators and last 4");
        check(f[4] == "***-**-****", "ssn redacted");
        check(
            !f[5].is_empty() && !f[5].chars().any(|ch| ch.is_ascii_digit()),
            "phone has no digit left",
        );
        check(
            !f[6].is_empty() && !f[6].chars().any(|ch| ch.is_ascii_alphanumeric()),
            "notes (column rule) fully redacted",
        );
        check(
            f[7].contains("gold") && f[7].contains("\"password\"") && f[7].contains(MASKED_DOMAIN),
            "profile: clear key names and tier, masked email",
        );
        check(
            !f[8].is_empty() && !f[8].chars().any(|ch| ch.is_ascii_alphanumeric()),
            "secret_code (bare column rule) fully redacted",
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn non_sensitive_columns_and_values_are_untouched() {
    let env = start("mask_untouched", PII_RULES);
    let sql = "select id, name from customers order by id";
    let through = env.ward.psql_ok(ID, TARGET, sql);
    assert_eq!(through, env.direct(sql));
    assert!(through.contains("Alice Tester"), "{through}");

    // Values that look a little like PII but are not (no false positives).
    let sql = "select 42, 3.14159, '2024-01-15'::date, 'ORD-000123', 'order 12345 shipped', \
               '10.0.0', 'v1.2.3', 'a@b', 1234567890123456::bigint, '4111111111111112', \
               count(*) from customers";
    let through = env.ward.psql_ok(ID, TARGET, sql);
    assert_eq!(through, env.direct(sql));
}

#[test]
fn column_rules_mask_values_no_detector_recognises() {
    let env = start("mask_column_rules", PII_RULES);
    env.direct(&format!(
        "insert into customers (id, name, card, notes, secret_code) \
           values (100, 'Zed', 'opaque-ref-77', 'call after 5pm', 'plainword');
         create table archive (card text, notes text);
         insert into archive values ('opaque-ref-77', 'archived note');
         create schema vault;
         create table vault.keys (secret_code text, label text);
         insert into vault.keys values ('plainword', 'front door');
         alter table archive owner to {u}; alter schema vault owner to {u};
         alter table vault.keys owner to {u}",
        u = env.db.user
    ));
    let starred = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_ascii_alphanumeric());
    let one = |sql: &str| env.ward.psql_ok(ID, TARGET, sql);

    // `public.customers.card` covers customers.card whatever it holds …
    let v = one("select card from customers where id = 100");
    assert!(starred(&v), "customers.card not masked: {v:?}");
    // … under an alias too …
    let v = one("select card as c from customers where id = 100");
    assert!(starred(&v), "aliased customers.card not masked: {v:?}");
    // … but not another table's `card` column (the pattern is schema.table-qualified).
    assert_eq!(one("select card from archive"), "opaque-ref-77");

    // `*.notes` covers every table's notes; `secret_code` every table's secret_code.
    for sql in [
        "select notes from customers where id = 100",
        "select notes from archive",
        "select secret_code from customers where id = 100",
        "select secret_code from vault.keys",
        "select secret_code as x from customers where id = 100",
        "select n from (select notes as n from customers where id = 100) s",
    ] {
        let v = one(sql);
        assert!(starred(&v), "{sql}: not masked: {v:?}");
    }
    // The non-rule column next to it is clear.
    assert_eq!(one("select label from vault.keys"), "front door");
    assert_eq!(
        env.direct("select secret_code from vault.keys"),
        "plainword",
        "sanity"
    );
}

// ---------------------------------------------------------------------------------------
// Binary format (tokio-postgres)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_format_results_are_masked() {
    let env = start("mask_binary", PII_RULES);
    let (client, conn) = env.ward.client(ID, TARGET).await;
    let forbidden = all_sensitive_strings();
    let people = customers();

    // Every text column, binary format.
    let rows = client
        .query(
            "select id, name, email, card, ssn, phone, notes, secret_code from customers order by id",
            &[],
        )
        .await
        .expect("select through ward");
    assert_eq!(rows.len(), ROWS);
    let mut seen = String::new();
    for (row, c) in rows.iter().zip(&people) {
        assert_eq!(row.get::<_, i32>(0) as usize, c.id);
        assert_eq!(row.get::<_, String>(1), c.name);
        let email: String = row.get(2);
        let card: String = row.get(3);
        let ssn: String = row.get(4);
        assert_eq!(email, c.masked_email(), "binary email of row {}", c.id);
        assert_eq!(card, c.masked_card(), "binary card of row {}", c.id);
        assert_eq!(ssn, "***-**-****", "binary ssn of row {}", c.id);
        for i in 2..8 {
            seen.push_str(&row.get::<_, String>(i));
            seen.push('\n');
        }
    }
    assert_no_leaks("binary select", &seen, &forbidden);

    // A prepared statement with a parameter.
    let stmt = client
        .prepare("select email, card, ssn from customers where id = $1")
        .await
        .unwrap();
    let row = client.query_one(&stmt, &[&3i32]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), people[2].masked_email());
    assert_eq!(row.get::<_, String>(1), people[2].masked_card());
    assert_eq!(row.get::<_, String>(2), "***-**-****");

    // The parameter reaches PostgreSQL in clear (filters still work); only output is masked.
    let row = client
        .query_one(
            "select id, email from customers where email = $1",
            &[&"user2@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, String>(1), people[1].masked_email());
    // A value that came in as a parameter is still masked on the way out.
    let echo: String = client
        .query_one("select $1::text", &[&"write to user5@example.com today"])
        .await
        .unwrap()
        .get(0);
    assert!(
        !echo.contains("user5@example.com") && echo.contains(MASKED_DOMAIN),
        "{echo}"
    );

    // bytea, binary: the raw bytes are the (masked) text.
    let rows = client
        .query("select email::bytea from customers order by id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), ROWS);
    let mut all = String::new();
    for (row, c) in rows.iter().zip(&people) {
        let bytes: Vec<u8> = row.get(0);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(
            !bytes.is_empty() && !text.contains(&c.email),
            "bytea of row {}: {text:?}",
            c.id
        );
        assert!(
            text.contains(MASKED_DOMAIN),
            "bytea of row {}: {text:?}",
            c.id
        );
        all.push_str(&text);
        all.push('\n');
    }
    assert_no_leaks("binary bytea", &all, &forbidden);

    // jsonb, binary: version byte 1, then the masked document.
    let rows = client
        .query("select profile from customers order by id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), ROWS);
    let mut all = String::new();
    for row in &rows {
        let Some(Raw(bytes)) = row.get::<_, Option<Raw>>(0) else {
            panic!("binary jsonb profile came back NULL (only its password member is masked)");
        };
        assert_eq!(bytes.first(), Some(&1u8), "jsonb version byte");
        let doc: serde_json::Value = serde_json::from_slice(&bytes[1..])
            .unwrap_or_else(|e| panic!("masked jsonb is not JSON ({e}): {bytes:?}"));
        assert_eq!(doc["tier"], "gold", "{doc}");
        assert!(doc["password"].is_string(), "{doc}");
        assert!(
            doc["email"].as_str().unwrap_or("").contains(MASKED_DOMAIN),
            "{doc}"
        );
        all.push_str(&doc.to_string());
        all.push('\n');
    }
    assert_no_leaks("binary jsonb", &all, &forbidden);

    // json and jsonb as text, binary format.
    let rows = client
        .query(
            "select profile::text, profile::json::text, row_to_json(c)::text from customers c order by id",
            &[],
        )
        .await
        .unwrap();
    let mut all = String::new();
    for row in &rows {
        for i in 0..3 {
            all.push_str(&row.get::<_, String>(i));
            all.push('\n');
        }
    }
    // Casts of a masked document to text may be masked whole (conservative); they must
    // still come back, masked, one per row.
    assert_eq!(rows.len(), ROWS);
    assert!(all.contains('*'), "{all}");
    assert_no_leaks("binary json text", &all, &forbidden);

    // Binary json (not jsonb) and a binary record.
    let rows = client
        .query("select row_to_json(c), c from customers c order by id", &[])
        .await
        .unwrap();
    let mut all = String::new();
    for row in &rows {
        for i in 0..2 {
            // NULL (a conservative mask of a non-textual binary value) cannot leak.
            let b = row
                .get::<_, Option<Raw>>(i)
                .map(|r| r.0)
                .unwrap_or_default();
            all.push_str(&String::from_utf8_lossy(&b));
            all.push('\n');
        }
    }
    assert!(all.contains("Alice Tester"), "{all}");
    assert_no_leaks("binary json / record", &all, &detectable_strings());
    drop(client);
    let _ = conn.await;
}

// ---------------------------------------------------------------------------------------
// The bypass corpus
// ---------------------------------------------------------------------------------------

/// One attempt to get sensitive values past the masking.
struct Case {
    sql: &'static str,
    /// Whether column-rule and JSON-key values (notes, secret codes, `hunter2`) must be
    /// hidden too, not only what detectors recognise.
    strict: bool,
    /// At least this many output lines.
    min_lines: usize,
    /// Each must appear in the output or in its decoded hex/base64 tokens. Left empty
    /// where a computed value derived from a column-rule column may be masked whole.
    expect: &'static [&'static str],
}

const fn case(
    sql: &'static str,
    strict: bool,
    min_lines: usize,
    expect: &'static [&'static str],
) -> Case {
    Case {
        sql,
        strict,
        min_lines,
        expect,
    }
}

const CORPUS: &[Case] = &[
    case(
        "select email::bytea from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select convert_to(email, 'UTF8') from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case("select email::bytea::text from customers", true, 20, &[]),
    case(
        "select upper(email) from customers",
        true,
        20,
        &["@*******.COM"],
    ),
    case(
        "select email || '' from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select concat(name, ' ', email, ' ', card) from customers",
        true,
        20,
        &[],
    ),
    case(
        "select row_to_json(t) from customers t",
        true,
        20,
        &["Alice Tester", MASKED_DOMAIN, "gold"],
    ),
    case(
        "select json_agg(t) from customers t",
        true,
        1,
        &["Alice Tester", MASKED_DOMAIN, "gold"],
    ),
    case(
        "select to_jsonb(t) from customers t",
        true,
        20,
        &["Alice Tester", MASKED_DOMAIN, "gold"],
    ),
    case(
        "select jsonb_agg(to_jsonb(t) - 'id') from customers t",
        true,
        1,
        &["Alice Tester", MASKED_DOMAIN],
    ),
    case(
        "select jsonb_pretty(profile) from customers",
        true,
        20,
        &["gold", MASKED_DOMAIN],
    ),
    case(
        "select to_json(email), quote_literal(card) from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select array_agg(email) from customers",
        true,
        1,
        &[MASKED_DOMAIN],
    ),
    case(
        "select array[email, card, ssn] from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select string_agg(card, ',') from customers",
        true,
        1,
        &["****"],
    ),
    case(
        "select translate(card, ' ', '-') from customers",
        true,
        20,
        &["****"],
    ),
    case(
        "select format('%s', email) from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select * from v_customers",
        true,
        20,
        &["Alice Tester", MASKED_DOMAIN, "***-**-****"],
    ),
    case(
        "table customers",
        true,
        20,
        &["Alice Tester", MASKED_DOMAIN],
    ),
    case(
        "with x as (select email as e, card as c from customers) select * from x",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select encode(email::bytea, 'base64') from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select encode(email::bytea, 'hex') from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select encode(card::bytea, 'base64') from customers",
        true,
        20,
        &[],
    ),
    case(
        "select lower(ssn), replace(card, ' ', '') from customers",
        true,
        20,
        &["***-**-****"],
    ),
    case(
        "select (select email from customers limit 1)",
        true,
        1,
        &[MASKED_DOMAIN],
    ),
    case(
        "select email as e from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select secret_code as x from customers",
        true,
        20,
        &["*****"],
    ),
    case(
        "select notes as n, name from customers",
        true,
        20,
        &["Alice Tester"],
    ),
    case(
        "select d.secret_code, d.notes, c.name from customers c join customers d on c.id = d.id",
        true,
        20,
        &["Alice Tester"],
    ),
    case(
        "select (t).secret_code, (t).email from customers t",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    // Record text: what detectors recognise must be masked; column rules inside records
    // are checked by `whole_row_records_apply_column_rules`.
    case("select t from customers t", false, 20, &[]),
    case(
        "select profile->'nested' from customers",
        true,
        20,
        &["card", "1111"],
    ),
    case(
        "select profile #>> '{nested,card}' from customers",
        true,
        20,
        &["1111"],
    ),
    case(
        "select profile from customers",
        true,
        20,
        &["password", "gold", MASKED_DOMAIN],
    ),
    case(
        "select profile->>'email' from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select name, substr(email, 1, 100), ssn::varchar, phone::char(20) from customers",
        true,
        20,
        &["Alice Tester", MASKED_DOMAIN],
    ),
    case(
        "select email from customers union all select card from customers",
        true,
        40,
        &[MASKED_DOMAIN],
    ),
    case(
        "select xmlelement(name c, email) from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "begin; declare cur cursor for select * from customers; fetch all from cur; commit",
        true,
        20,
        &["Alice Tester", MASKED_DOMAIN],
    ),
    case(
        "prepare p as select secret_code, email, card from customers; execute p",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "explain (verbose, costs off) select * from customers where email = 'user1@example.com'",
        true,
        1,
        &[MASKED_DOMAIN],
    ),
    // PostgreSQL wraps long base64 output every 76 characters.
    case(
        "select encode(convert_to(string_agg(email || ',' || card, ';'), 'UTF8'), 'base64') from customers",
        true,
        2,
        &[],
    ),
    case(
        "select upper(encode(email::bytea, 'hex')), E'\\\\x' || encode(card::bytea, 'hex') from customers",
        true,
        20,
        &[],
    ),
    case(
        "select initcap(email), lpad(email, 60, '.'), quote_literal(email), to_json(email) from customers",
        true,
        20,
        &[],
    ),
    case(
        "select regexp_replace(card, '[ ]', '.', 'g') from customers",
        true,
        20,
        &[],
    ),
    case(
        "select jsonb_build_object('e', email, 'c', card), json_object_agg(id, email) over () from customers",
        true,
        20,
        &[],
    ),
    case(
        "select reverse(secret_code), string_agg(notes, ' | ') over (), lower(notes) from customers",
        true,
        20,
        &[],
    ),
    case(
        "with x as (select secret_code as s, notes as n from customers) select upper(s), n || '!' from x",
        true,
        20,
        &[],
    ),
    case(
        "select s from (select secret_code || '' as s from customers) sub",
        true,
        20,
        &[],
    ),
    case(
        "select array[email, card, ssn], row(name, phone) from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
    case(
        "select unnest(array_agg(email)) from customers",
        true,
        20,
        &[MASKED_DOMAIN],
    ),
];

#[test]
fn bypass_corpus_does_not_leak() {
    let env = start("mask_corpus", PII_RULES);
    let strict = all_sensitive_strings();
    let detectable = detectable_strings();
    let mut failures = Vec::new();
    for c in CORPUS {
        // Sanity: the query works and returns the clear data straight from PostgreSQL.
        if let Err(e) = Postgres::get().try_admin_sql(&env.db.database, c.sql) {
            failures.push(format!("{}: fails even directly (test bug): {e}", c.sql));
            continue;
        }
        let out = env.psql(c.sql);
        let text = output_text(&out);
        if !out.status.success() {
            failures.push(format!(
                "{}: failed through ward\n{}",
                c.sql,
                harness::describe(&out)
            ));
            continue;
        }
        let forbidden = if c.strict { &strict } else { &detectable };
        let found = leaks(&text, forbidden);
        if !found.is_empty() {
            failures.push(format!(
                "{}: LEAKED {found:?}\n    output: {}",
                c.sql,
                shorten(&text).replace('\n', "\n            ")
            ));
            continue;
        }
        let lines = stdout_lines(&out).len();
        if lines < c.min_lines {
            failures.push(format!(
                "{}: {lines} lines, expected at least {}\n    output: {text}",
                c.sql, c.min_lines
            ));
            continue;
        }
        let decoded = with_decodings(&text);
        let missing: Vec<&str> = c
            .expect
            .iter()
            .copied()
            .filter(|e| !decoded.contains(e))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{}: expected {missing:?} in the output\n    output: {}",
                c.sql,
                shorten(&text).replace('\n', "\n            ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bypass attempts failed:\n\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n\n")
    );
}

#[test]
fn whole_row_records_apply_column_rules() {
    // A whole-row reference is a record of the table's row type: its fields are the
    // table's columns, so column rules (notes, secret_code) and JSON keys (the password
    // inside profile) must hold inside it as they do in row_to_json(t).
    let env = start("mask_records", PII_RULES);
    let strict = all_sensitive_strings();
    let mut failures = Vec::new();
    for sql in [
        "select t from customers t",
        "select array_agg(t) from customers t",
        "select c from v_customers c",
    ] {
        let min_lines = if sql.contains("array_agg") { 1 } else { ROWS };
        let out = env.psql(sql);
        let text = output_text(&out);
        let found = leaks(&text, &strict);
        if !out.status.success() {
            failures.push(format!("{sql}: failed\n{}", harness::describe(&out)));
        } else if !found.is_empty() {
            failures.push(format!("{sql}: LEAKED {found:?}\n{}", shorten(&text)));
        } else if stdout_lines(&out).len() < min_lines || !text.contains('*') {
            // Masking the whole record is acceptable (nothing leaks); returning nothing is not.
            failures.push(format!("{sql}: expected masked rows\n{}", shorten(&text)));
        }
    }
    // Binary format (tokio-postgres): the record's binary form.
    let binary = runtime().block_on(async {
        let (client, _conn) = env.ward.client(ID, TARGET).await;
        let rows = client
            .query("select t from customers t order by id", &[])
            .await
            .unwrap();
        rows.iter()
            .map(|r| match r.get::<_, Option<Raw>>(0) {
                Some(Raw(b)) => String::from_utf8_lossy(&b).into_owned(),
                None => "(null)".to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let found = leaks(&binary, &strict);
    if !found.is_empty() {
        failures.push(format!(
            "binary record: LEAKED {found:?}\n{}",
            shorten(&binary)
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// COPY
// ---------------------------------------------------------------------------------------

const COPIES: [&str; 4] = [
    "COPY (select * from customers) TO STDOUT",
    "COPY customers TO STDOUT WITH (FORMAT csv)",
    "COPY customers (id, name, email, card, profile) TO STDOUT WITH (FORMAT csv, HEADER)",
    "COPY (select id, email::bytea, encode(card::bytea, 'base64') from customers) TO STDOUT",
];

#[test]
fn copy_to_stdout_masks_detected_values() {
    let env = start("mask_copy", PII_RULES);
    let detectable = detectable_strings();
    let mut failures = Vec::new();
    for sql in COPIES {
        assert!(
            env.direct(sql).contains("user1@example.com") || sql.contains("bytea"),
            "sanity: {sql}"
        );
        let out = env.psql(sql);
        let text = output_text(&out);
        if !out.status.success() {
            failures.push(format!("{sql}: failed\n{}", harness::describe(&out)));
            continue;
        }
        let found = leaks(&text, &detectable);
        if !found.is_empty() {
            failures.push(format!("{sql}: LEAKED {found:?}\n{}", shorten(&text)));
            continue;
        }
        let lines = stdout_lines(&out);
        let expected = if sql.contains("HEADER") {
            ROWS + 1
        } else {
            ROWS
        };
        if lines.len() != expected {
            failures.push(format!(
                "{sql}: {} lines, expected {expected}\n{text}",
                lines.len()
            ));
            continue;
        }
        let decoded = with_decodings(&text);
        if !decoded.contains(MASKED_DOMAIN) {
            failures.push(format!("{sql}: no masked email in\n{}", shorten(&text)));
        }
        if !sql.contains("bytea") && !text.contains("Alice Tester") {
            failures.push(format!("{sql}: names not intact\n{}", shorten(&text)));
        }
    }
    // A file copy through psql's \copy is a COPY TO STDOUT on the wire.
    let file = harness::fresh_dir("mask_copy").join("out.csv");
    let out = env.ward.psql_args(
        &env.ward.conninfo(ID, TARGET),
        &[
            "-At",
            "-c",
            &format!("\\copy customers to '{}' with (format csv)", file.display()),
        ],
    );
    if out.status.success() {
        let body = std::fs::read_to_string(&file).unwrap_or_default();
        let found = leaks(&body, &detectable);
        if !found.is_empty() || body.lines().count() != ROWS {
            failures.push(format!(
                "\\copy to a file: leaked {found:?}\n{}",
                shorten(&body)
            ));
        }
    } else {
        failures.push(format!("\\copy failed\n{}", harness::describe(&out)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn copy_to_stdout_applies_column_rules_and_json_keys() {
    // COPY has no RowDescription: column rules (notes, secret_code) and JSON keys
    // (password) must still hold. Refusing the COPY with a clear masking error is
    // acceptable; returning the clear values is not.
    let env = start("mask_copy_rules", PII_RULES);
    let strict = all_sensitive_strings();
    let mut failures = Vec::new();
    for sql in [
        "COPY customers TO STDOUT",
        "COPY customers TO STDOUT WITH (FORMAT csv)",
        "COPY (select id, notes, secret_code, profile from customers) TO STDOUT",
        "COPY (select * from v_customers) TO STDOUT WITH (FORMAT csv)",
    ] {
        let out = env.psql(sql);
        let text = output_text(&out);
        let found = leaks(&text, &strict);
        if !found.is_empty() {
            failures.push(format!("{sql}: LEAKED {found:?}\n{}", shorten(&text)));
        } else if out.status.success() {
            if stdout_lines(&out).len() != ROWS {
                failures.push(format!("{sql}: expected {ROWS} lines\n{text}"));
            }
        } else if !text.to_lowercase().contains("mask") {
            failures.push(format!(
                "{sql}: failed without a masking reason\n{}",
                harness::describe(&out)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// Errors, notices, notifications and the audit
// ---------------------------------------------------------------------------------------

#[test]
fn unique_violation_detail_and_its_audit_are_masked() {
    let env = start("mask_unique", PII_RULES);
    let sql = "insert into customers (id, name, email) values (999, 'x', 'user7@example.com')";
    // Sanity: PostgreSQL does put the value in the detail.
    let direct = Postgres::get()
        .try_admin_sql(&env.db.database, sql)
        .unwrap_err();
    assert!(
        direct.contains("(email)=(user7@example.com) already exists"),
        "{direct}"
    );

    let out = env.psql(sql);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{}", harness::describe(&out));
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("duplicate key"), "{err}");
    assert!(
        !err.contains("user7@example.com"),
        "the detail leaks the email: {err}"
    );
    assert!(err.contains("Key (email)=("), "{err}");
    assert!(err.contains(MASKED_DOMAIN), "{err}");

    // The audit has the statement (its text masked too) and its error, never the email.
    let audit = wait_until(
        || {
            let dump = audit_dump(&env.ward);
            dump.contains("23505").then_some(dump)
        },
        "the failed insert in the audit",
    );
    assert!(audit.contains("insert into customers"), "{audit}");
    assert_no_leaks("the audit", &audit, &detectable_strings());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_keeps_masked_statement_text_and_parameters_only() {
    let env = start("mask_audit", PII_RULES);
    let (client, conn) = env.ward.client(ID, TARGET).await;
    let row = client
        .query_one(
            "select id from customers where email = $1",
            &[&"user4@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        4,
        "the parameter reached PostgreSQL in clear"
    );
    client
        .simple_query(
            "select count(*) from customers where ssn = '123-45-6713' or card like '4556 7375%'",
        )
        .await
        .unwrap();
    let err = client
        .query_one("select email::int from customers where id = $1", &[&5i32])
        .await
        .unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("invalid input syntax"), "{err:?}");
    assert!(
        !message.contains("user5@example.com") && message.contains(MASKED_DOMAIN),
        "extended-protocol error message: {message}"
    );
    drop(client);
    let _ = conn.await;

    let audit = wait_until(
        || {
            let dump = audit_dump(&env.ward);
            (dump.contains("select id from customers where email = $1") && dump.contains("22P02"))
                .then_some(dump)
        },
        "the statements in the audit",
    );
    assert_no_leaks("the audit", &audit, &detectable_strings());
    assert!(
        audit.contains("select count(*) from customers where ssn ="),
        "{audit}"
    );
}

#[test]
fn error_and_notice_messages_are_masked() {
    let env = start("mask_errors", PII_RULES);
    // ERROR message field: invalid input syntax for type integer: "user1@example.com".
    let sql = "select email::int from customers where id = 1";
    let direct = Postgres::get()
        .try_admin_sql(&env.db.database, sql)
        .unwrap_err();
    assert!(direct.contains("user1@example.com"), "sanity: {direct}");
    let out = env.psql(sql);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("invalid input syntax"), "{err}");
    assert!(
        !err.contains("user1@example.com"),
        "error message leaks: {err}"
    );
    assert!(err.contains(MASKED_DOMAIN), "{err}");

    // A card in an error message (cast of a card to a number type).
    let out = env.psql("select card::numeric from customers where id = 1");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("invalid input syntax"), "{err}");
    assert_no_leaks("numeric cast error", &err, &detectable_strings());

    // NOTICE: `table "…" does not exist, skipping`.
    let out = env.psql("drop table if exists \"user3@example.com\"");
    let text = output_text(&out);
    assert!(out.status.success(), "{}", harness::describe(&out));
    assert!(text.contains("does not exist, skipping"), "{text}");
    assert!(!text.contains("user3@example.com"), "notice leaks: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_payloads_are_masked() {
    let env = start("mask_notify", PII_RULES);
    let (client, mut conn) = env
        .ward
        .pg_config(ID, TARGET)
        .connect(harness::insecure_connector())
        .await
        .expect("connect through ward");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let driver = tokio::spawn(async move {
        while let Some(m) = poll_fn(|cx| conn.poll_message(cx)).await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                }
                Ok(_) => {}
                Err(e) => panic!("the listening connection through ward failed: {e}"),
            }
        }
    });
    client.batch_execute("listen ch").await.expect("LISTEN");

    // From a session straight to PostgreSQL …
    env.direct("notify ch, 'contact user1@example.com, card 4111 1111 1111 1111'");
    let (channel, payload) = next_notification(&mut rx).await;
    assert_eq!(channel, "ch");
    assert!(payload.starts_with("contact "), "{payload}");
    assert!(
        !payload.contains("user1@example.com"),
        "payload leaks: {payload}"
    );
    assert!(
        !payload.contains("4111 1111 1111 1111"),
        "payload leaks: {payload}"
    );
    assert!(
        payload.contains(MASKED_DOMAIN) && payload.contains("1111"),
        "{payload}"
    );

    // … and from another session through ward, with pg_notify.
    env.ward.psql_ok(
        ID,
        TARGET,
        "select pg_notify('ch', 'ssn ' || ssn || ' of ' || name) from customers where id = 2",
    );
    let (_, payload) = next_notification(&mut rx).await;
    assert!(payload.contains("Bruno Tester"), "{payload}");
    assert!(!payload.contains("123-45-6712"), "payload leaks: {payload}");
    assert!(payload.contains("***-**-****"), "{payload}");

    // A clean payload is untouched.
    env.direct("notify ch, 'nothing to see here 42'");
    let (_, payload) = next_notification(&mut rx).await;
    assert_eq!(payload, "nothing to see here 42");
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
}

async fn next_notification(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) -> (String, String) {
    tokio::time::timeout(harness::WAIT_TIMEOUT, rx.recv())
        .await
        .expect("a notification within the timeout")
        .expect("the listening connection is open")
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn key_file(content: &str) -> std::path::PathBuf {
    let path = harness::fresh_dir("mask_key").join("token.key");
    harness::write_file(&path, content, 0o600);
    path
}

#[test]
fn tokenize_gives_deterministic_keyed_tokens() {
    let key = key_file("k3y-for-tests-0123456789abcdef\n");
    let yaml = format!(
        "masking:\n  token_key: \"file:{}\"\n  rules:\n    - {{ name: tok, detectors: [email], columns: [secret_code], strategy: tokenize }}\n",
        key.display()
    );
    let env = start("mask_tokenize", &yaml);
    let q = |sql: &str| env.ward.psql_ok(ID, TARGET, sql);

    let first = q("select email from customers order by id");
    let tokens: Vec<&str> = first.lines().collect();
    assert_eq!(tokens.len(), ROWS);
    for t in &tokens {
        assert!(is_token(t), "not a tok_ + 16 hex token: {t:?}");
    }
    let distinct: std::collections::BTreeSet<&str> = tokens.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ROWS,
        "different emails, different tokens: {first}"
    );
    assert_no_leaks("tokenized emails", &first, &detectable_strings());

    // Same value, another query and another session: the same token.
    assert_eq!(q("select email from customers where id = 1"), tokens[0]);
    // The same value inside a longer text: the same token for the span.
    assert_eq!(
        q("select 'mail ' || email || ' now' from customers where id = 2"),
        format!("mail {} now", tokens[1])
    );
    // Grouping on the masked output still groups equal values.
    let both = q("select email from customers union all select email from customers order by 1");
    let lines: Vec<&str> = both.lines().collect();
    assert_eq!(lines.len(), 2 * ROWS);
    let groups: std::collections::BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(groups.len(), ROWS, "{both}");
    // Column rule + tokenize: whole values, deterministic too.
    let codes = q("select secret_code from customers where id in (1, 1, 2) order by id");
    let codes: Vec<&str> = codes.lines().collect();
    assert!(codes.iter().all(|c| is_token(c)), "{codes:?}");
    assert_eq!(
        q("select secret_code from customers where id = 1"),
        codes[0]
    );

    // Binary format gives the same token as text format.
    let binary: String = runtime().block_on(async {
        let (client, _conn) = env.ward.client(ID, TARGET).await;
        client
            .query_one("select email from customers where id = $1", &[&1i32])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(binary, tokens[0]);

    // Another key gives other tokens (tokens are keyed, not a bare hash).
    let key2 = key_file("another-key-entirely-fedcba9876543210\n");
    let yaml2 = yaml.replace(&key.display().to_string(), &key2.display().to_string());
    let ward2 = Ward::start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &env.db))
            .token(ID)
            .extra_yaml(&yaml2),
    );
    let other = ward2.psql_ok(ID, TARGET, "select email from customers where id = 1");
    assert!(is_token(&other), "{other}");
    assert_ne!(
        other, tokens[0],
        "a different key must give a different token"
    );
}

#[test]
fn tokenize_key_can_come_from_the_environment() {
    let db = create_db("mask_env_key");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &db))
            .token(ID)
            .env("WARD_TEST_MASK_KEY", "environment-key-0123456789")
            .extra_yaml(
                "masking:\n  token_key: env:WARD_TEST_MASK_KEY\n  rules:\n    - { name: tok, columns: [email], strategy: tokenize }\n",
            ),
    );
    let got = ward.psql_ok(
        ID,
        TARGET,
        "select id, email from customers where id in (1, 2) order by id",
    );
    let rows: Vec<&str> = got.lines().collect();
    assert_eq!(rows.len(), 2, "{got}");
    let t1 = rows[0].strip_prefix("1|").unwrap_or("");
    let t2 = rows[1].strip_prefix("2|").unwrap_or("");
    assert!(is_token(t1) && is_token(t2) && t1 != t2, "{got}");
}

#[test]
fn null_strategy_returns_sql_null() {
    let env = start(
        "mask_null",
        "masking:\n  rules:\n    - { name: nul, columns: [ssn], detectors: [email], strategy: null }\n",
    );
    assert_eq!(
        env.ward.psql_ok(
            ID,
            TARGET,
            "select id, ssn, email, name from customers where id = 1"
        ),
        "1|||Alice Tester"
    );
    let (ssn, email, contact, phone) = runtime().block_on(async {
        let (client, _conn) = env.ward.client(ID, TARGET).await;
        let row = client
            .query_one(
                "select ssn, email, 'contact ' || email, phone from customers where id = $1",
                &[&1i32],
            )
            .await
            .unwrap();
        (
            row.get::<_, Option<String>>(0),
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<String>>(2),
            row.get::<_, Option<String>>(3),
        )
    });
    assert_eq!(ssn, None, "column rule, strategy null");
    assert_eq!(email, None, "detected email, strategy null");
    assert_eq!(contact, None, "a value holding a detection becomes NULL");
    assert_eq!(
        phone.as_deref(),
        Some("(415) 555-0111"),
        "not covered by the rule"
    );
}

#[test]
fn fixed_strategy_replaces_with_the_fixed_text() {
    let env = start(
        "mask_fixed",
        "masking:\n  rules:\n    - { name: fx, columns: [secret_code], detectors: [email], strategy: fixed, fixed: \"[hidden]\" }\n",
    );
    assert_eq!(
        env.ward.psql_ok(
            ID,
            TARGET,
            "select id, secret_code, email, 'write to ' || email || ' today' from customers where id = 3"
        ),
        "3|[hidden]|[hidden]|write to [hidden] today"
    );
    assert_eq!(
        env.ward
            .psql_ok(ID, TARGET, "select ssn from customers where id = 3"),
        "123-45-6713",
        "not covered by the rule"
    );
}

// ---------------------------------------------------------------------------------------
// Scope: who sees what
// ---------------------------------------------------------------------------------------

#[test]
fn rules_apply_only_to_their_targets_identities_and_groups() {
    let db = create_db("mask_scope");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .target(Target::postgres("other", &db))
            .target(Target::postgres("labeled", &db).extra_yaml("labels: { env: prod }"))
            .token("ci-nightly")
            .token_spec(TokenSpec::new("ci-dpo").groups(&["dpo"]))
            .token("bob")
            .token_spec(TokenSpec::new("carl").groups(&["contractors"]))
            .extra_yaml(
                r#"
masking:
  rules:
    - { name: shop-ci, targets: [shop], identities: ["ci-*"], unmask_for: ["group:dpo"], detectors: [email] }
    - { name: prod-ssn, targets: ["env=prod"], detectors: [us_ssn] }
    - { name: contractors-phone, targets: [other], groups: [contractors], detectors: [phone] }
"#,
            ),
    );
    let c = &customers()[0];
    let sql = "select email, ssn, phone from customers where id = 1";
    let clear = format!("{}|{}|{}", c.email, c.ssn, c.phone);
    // (identity, target, email masked, ssn masked, phone masked)
    let cases = [
        ("ci-nightly", "shop", true, false, false),
        ("ci-dpo", "shop", false, false, false),
        ("bob", "shop", false, false, false),
        ("ci-nightly", "other", false, false, false),
        ("carl", "other", false, false, true),
        ("bob", "other", false, false, false),
        ("bob", "labeled", false, true, false),
        ("ci-dpo", "labeled", false, true, false),
        ("carl", "labeled", false, true, false),
    ];
    let mut failures = Vec::new();
    for (identity, target, email_m, ssn_m, phone_m) in cases {
        let got = ward.psql_ok(identity, target, sql);
        let f: Vec<&str> = got.split('|').collect();
        let ok = f.len() == 3
            && (f[0] == c.email) != email_m
            && (f[1] == c.ssn) != ssn_m
            && (f[2] == c.phone) != phone_m
            && (!email_m || f[0] == c.masked_email())
            && (!ssn_m || f[1] == "***-**-****")
            && (!phone_m || !f[2].chars().any(|ch| ch.is_ascii_digit()));
        if !ok {
            failures.push(format!(
                "{identity} on {target}: got {got:?} (clear is {clear:?}; masked expected: \
                 email {email_m}, ssn {ssn_m}, phone {phone_m})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unmask_for_group_sees_clear_values_others_masked() {
    let db = create_db("mask_unmask");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &db))
            .token_spec(TokenSpec::new("dana").groups(&["dpo"]))
            .token_spec(TokenSpec::new("eve").groups(&["support"]))
            .token("auditor-1")
            .extra_yaml(
                r#"
masking:
  rules:
    - name: pii
      unmask_for: ["group:dpo", "auditor-*"]
      columns: ["*.notes", "secret_code"]
      detectors: all
      json_keys: [password]
"#,
            ),
    );
    let sql = "select * from customers order by id";
    let direct = Postgres::get().admin_sql(&db.database, sql);
    assert_eq!(
        ward.psql_ok("dana", TARGET, sql),
        direct,
        "group:dpo is exempt"
    );
    assert_eq!(
        ward.psql_ok("auditor-1", TARGET, sql),
        direct,
        "auditor-* is exempt"
    );
    let eve = ward.psql_ok("eve", TARGET, sql);
    assert_no_leaks("eve (group support)", &eve, &all_sensitive_strings());
    assert!(
        eve.contains(MASKED_DOMAIN) && eve.contains("Alice Tester"),
        "{eve}"
    );
}

#[test]
fn scan_limits_content_detection_to_listed_columns() {
    let env = start(
        "mask_scan",
        "masking:\n  rules:\n    - { name: scoped, detectors: all, scan: [\"customers.email\"] }\n",
    );
    let c = &customers()[0];
    let got = env.ward.psql_ok(
        ID,
        TARGET,
        "select email, ssn, profile->>'email' as contact, card from customers where id = 1",
    );
    assert_eq!(
        got,
        format!("{}|{}|{}|{}", c.masked_email(), c.ssn, c.email, c.card),
        "only customers.email is scanned"
    );
}

#[test]
fn custom_regex_detector_masks_its_matches() {
    let env = start(
        "mask_custom",
        r#"
masking:
  detectors:
    - { name: employee_id, pattern: 'EMP-[0-9]{6}', validator: none }
  rules:
    - { name: staff, detectors: [employee_id] }
"#,
    );
    let got = env.ward.psql_ok(
        ID,
        TARGET,
        "select 'badge EMP-123456 issued', 'EMP-12345 is too short', email from customers where id = 1",
    );
    let f: Vec<&str> = got.split('|').collect();
    assert_eq!(f.len(), 3, "{got}");
    assert!(
        !f[0].contains("123456"),
        "custom detector did not mask: {got}"
    );
    assert!(
        f[0].starts_with("badge ") && f[0].ends_with(" issued"),
        "{got}"
    );
    assert_eq!(f[0], "badge ***-****** issued");
    assert_eq!(f[1], "EMP-12345 is too short", "no match, no change");
    assert_eq!(f[2], "user1@example.com", "only the listed detector runs");
}

// ---------------------------------------------------------------------------------------
// Configuration errors and reload
// ---------------------------------------------------------------------------------------

fn refused_start(name: &str, yaml: &str) -> String {
    let db = Postgres::get().create_target(name, AuthMethod::ScramSha256);
    match Ward::try_start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &db))
            .token(ID)
            .extra_yaml(yaml),
    ) {
        Ok(_) => panic!("ward started with a broken masking config:\n{yaml}"),
        Err(e) => log_part(&e).to_string(),
    }
}

#[test]
fn unknown_detector_refuses_to_start() {
    let log = refused_start(
        "mask_bad_detector",
        "masking:\n  rules:\n    - { name: typo, detectors: [email, emale] }\n",
    );
    assert!(
        log.contains("emale"),
        "the error names the detector:\n{log}"
    );
    assert!(log.contains("typo"), "the error names the rule:\n{log}");
}

#[test]
fn tokenize_without_token_key_refuses_to_start() {
    let log = refused_start(
        "mask_no_key",
        "masking:\n  rules:\n    - { name: tok, detectors: [email], strategy: tokenize }\n",
    );
    assert!(
        log.contains("token_key"),
        "the error names token_key:\n{log}"
    );
}

#[test]
fn invalid_custom_detector_pattern_refuses_to_start() {
    let log = refused_start(
        "mask_bad_regex",
        "masking:\n  detectors:\n    - { name: broken_det, pattern: 'EMP-[0-9' }\n  rules:\n    - { name: r, detectors: [broken_det] }\n",
    );
    assert!(
        log.contains("broken_det"),
        "the error names the detector:\n{log}"
    );
}

#[test]
fn masking_rules_reload_on_config_change_and_sighup() {
    let env = start("mask_reload", "");
    let q = || {
        env.ward
            .psql_ok(ID, TARGET, "select email from customers where id = 1")
    };
    assert_eq!(q(), "user1@example.com", "no masking rules yet");

    let reloads = || env.ward.log().matches("policy reloaded").count();
    let write = |content: &str| {
        let tmp = env.ward.config_path().with_extension("yaml.new");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, env.ward.config_path()).unwrap();
    };
    let base = std::fs::read_to_string(env.ward.config_path()).unwrap();

    // 1. Editing the file is enough (no signal).
    let before = reloads();
    let masked_cfg =
        format!("{base}masking:\n  rules:\n    - {{ name: pii, detectors: [email] }}\n");
    write(&masked_cfg);
    wait_for(
        || reloads() > before,
        "ward to notice the edited config file",
    );
    assert_eq!(
        q(),
        customers()[0].masked_email(),
        "a new session is masked"
    );

    // 2. A broken masking section is rejected and the running rules stay.
    let before_rejects = env.ward.log().matches("config reload rejected").count();
    write(&masked_cfg.replace("[email]", "[emale]"));
    let pid = env.ward.pid().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    wait_for(
        || env.ward.log().matches("config reload rejected").count() > before_rejects,
        "ward to reject the broken masking rules",
    );
    assert!(env.ward.log().contains("emale"), "{}", env.ward.log());
    assert_eq!(q(), customers()[0].masked_email(), "the running rules stay");

    // 3. SIGHUP with the rules removed: clear again.
    let before = reloads();
    write(&base);
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    wait_for(|| reloads() > before, "ward to reload on SIGHUP");
    assert_eq!(q(), "user1@example.com", "rules removed");
}

// ---------------------------------------------------------------------------------------
// Volume
// ---------------------------------------------------------------------------------------

#[test]
fn large_results_are_masked_across_chunk_boundaries() {
    let env = start("mask_large", PII_RULES);
    let sql = "select c.id, c.email, c.card, g from customers c, generate_series(1, 5000) g";
    let out = env.psql(sql);
    assert!(out.status.success(), "{}", harness::describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), ROWS * 5000, "row count intact");
    let people = customers();
    let mut bad = Vec::new();
    for line in &lines {
        let f: Vec<&str> = line.split('|').collect();
        let ok = f.len() == 4
            && f[0]
                .parse::<usize>()
                .ok()
                .and_then(|id| people.get(id.wrapping_sub(1)))
                .is_some_and(|c| f[1] == c.masked_email() && f[2] == c.masked_card())
            && f[3].parse::<u32>().is_ok();
        if !ok {
            bad.push(*line);
            if bad.len() >= 10 {
                break;
            }
        }
    }
    assert!(
        bad.is_empty(),
        "rows not masked as expected (first 10): {bad:#?}"
    );
    assert_no_leaks(sql, &output_text(&out), &detectable_strings());

    // One value far larger than any relay buffer (~1.6 MB), masked as a whole.
    let sql =
        "select string_agg(email || ' ' || card, ' ; ') from customers, generate_series(1, 4000)";
    let out = env.psql(sql);
    assert!(out.status.success(), "{}", harness::describe(&out));
    let value = String::from_utf8_lossy(&out.stdout);
    assert_eq!(value.trim_end().lines().count(), 1);
    assert_eq!(
        value.matches(MASKED_DOMAIN).count(),
        ROWS * 4000,
        "every email in the large value is masked"
    );
    assert_no_leaks(sql, &output_text(&out), &detectable_strings());
}

#[test]
fn errors_echoing_a_column_rule_value_are_masked() {
    let env = start("mask_error_echo", PII_RULES);
    let secrets: Vec<String> = customers().iter().map(|c| c.secret_code.clone()).collect();
    // Straight to PostgreSQL the error quotes the stored value…
    let direct =
        Postgres::get().try_admin_sql(&env.db.database, "select secret_code::int from customers");
    let direct_err = direct.expect_err("a secret code is not an integer");
    assert!(
        secrets.iter().any(|s| direct_err.contains(s.as_str())),
        "{direct_err}"
    );
    // …through ward the quoted value is hidden, the error itself still clear.
    let out = env.psql("select secret_code::int from customers");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        err.contains("invalid input syntax for type integer"),
        "{err}"
    );
    assert_no_leaks("cast error", &err, &secrets);
    // And the audit keeps only the masked message.
    assert_no_leaks("audit of the cast error", &audit_dump(&env.ward), &secrets);
}

#[test]
fn copy_with_a_custom_delimiter_fails_closed_for_column_rules() {
    let env = start("mask_copy_delim", PII_RULES);
    let out = env.psql("copy customers to stdout with (delimiter '|')");
    assert!(out.status.success(), "{}", harness::describe(&out));
    let text = output_text(&out);
    assert_eq!(
        stdout_lines(&out).len(),
        ROWS,
        "every row is still delivered"
    );
    assert_no_leaks("copy with delimiter |", &text, &all_sensitive_strings());
    let out = env.psql("copy customers to stdout with (format csv, delimiter ';')");
    assert!(out.status.success(), "{}", harness::describe(&out));
    assert_eq!(stdout_lines(&out).len(), ROWS);
    assert_no_leaks(
        "csv copy with delimiter ;",
        &output_text(&out),
        &all_sensitive_strings(),
    );
}

/// Views, prepared statements and cursors run a select list that is not in the statement
/// the client sends; values derived from column-rule columns must stay masked through them.
#[test]
fn views_prepared_statements_and_cursors_keep_column_rules() {
    let env = start("mask_indirect", PII_RULES);
    Postgres::get().admin_sql(
        &env.db.database,
        &format!(
            "create view v_alias as select id, notes as n, reverse(secret_code) as r, secret_code as s from customers;
             alter view v_alias owner to {}",
            env.db.user
        ),
    );
    let strict = all_sensitive_strings();
    // Each -c is its own Query message, so EXECUTE and FETCH arrive alone.
    let conninfo = env.ward.conninfo(ID, TARGET);
    let out = env.ward.psql_args(
        &conninfo,
        &[
            "-At",
            "-c",
            "select * from v_alias",
            "-c",
            "select v from v_alias v",
            "-c",
            "prepare q as select id, reverse(secret_code), lower(notes) from customers",
            "-c",
            "execute q",
            "-c",
            "begin",
            "-c",
            "declare k cursor for select id, reverse(secret_code) from customers",
            "-c",
            "fetch all from k",
            "-c",
            "commit",
        ],
    );
    assert!(out.status.success(), "{}", harness::describe(&out));
    let text = output_text(&out);
    // Reversed values are not detectable: check the reversals too.
    let reversed: Vec<String> = customers()
        .iter()
        .flat_map(|c| {
            [
                c.secret_code.chars().rev().collect::<String>(),
                c.notes.to_lowercase(),
            ]
        })
        .collect();
    assert_no_leaks("views, prepared statements and cursors", &text, &strict);
    assert_no_leaks("reversed and lowered column-rule values", &text, &reversed);
    let lines = stdout_lines(&out);
    assert!(lines.len() >= ROWS * 4, "every result came back: {text}");
    assert!(
        lines.iter().any(|l| l.starts_with("1|")),
        "ids stay readable: {text}"
    );
}

/// Drivers that describe the portal (libpq's PQexecParams, node-postgres, JDBC) or pipeline
/// Parse, Describe, Bind and Execute before reading any answer: the rows of an Execute sent
/// before its RowDescription arrived must still get the column rules.
#[test]
fn pipelined_extended_protocol_rows_get_column_rules() {
    let env = start("mask_pipelined", PII_RULES);
    let secrets: Vec<String> = customers().iter().map(|c| c.secret_code.clone()).collect();
    let cstr = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    };
    let parse = |sql: &str| {
        let mut b = cstr("");
        b.extend(cstr(sql));
        b.extend(0i16.to_be_bytes());
        pgwire::message(b'P', &b)
    };
    let bind = {
        let mut b = cstr("");
        b.extend(cstr(""));
        b.extend([0, 0, 0, 0, 0, 0]);
        pgwire::message(b'B', &b)
    };
    let describe = |kind: u8| {
        let mut b = vec![kind];
        b.extend(cstr(""));
        pgwire::message(b'D', &b)
    };
    let execute = {
        let mut b = cstr("");
        b.extend(0i32.to_be_bytes());
        pgwire::message(b'E', &b)
    };
    let sync = pgwire::message(b'S', &[]);
    let sql = "select id, secret_code, notes, email from customers order by id";
    runtime().block_on(async {
        let token = env.ward.token(ID);
        let mut s = pgwire::logged_in(env.ward.pg_addr(), ID, TARGET, &token).await;
        // Drain the login's ParameterStatus/BackendKeyData/ReadyForQuery.
        pgwire::simple_query(&mut s, "select 1").await;
        for batch in [
            [
                parse(sql),
                bind.clone(),
                describe(b'P'),
                execute.clone(),
                sync.clone(),
            ],
            [
                parse(sql),
                describe(b'S'),
                bind.clone(),
                execute.clone(),
                sync.clone(),
            ],
        ] {
            pgwire::send(&mut s, &batch.concat()).await;
            let mut rows = Vec::new();
            loop {
                let m = pgwire::read_message(&mut s, pgwire::IO_TIMEOUT)
                    .await
                    .expect("answer")
                    .expect("connection open");
                assert!(!m.is_error(), "{m}");
                if m.tag == b'D' {
                    rows.push(String::from_utf8_lossy(&m.body).into_owned());
                }
                if m.tag == b'Z' {
                    break;
                }
            }
            assert_eq!(rows.len(), ROWS);
            let text = rows.join("\n");
            assert_no_leaks("pipelined extended protocol", &text, &secrets);
            assert_no_leaks(
                "pipelined extended protocol",
                &text,
                &all_sensitive_strings(),
            );
            assert!(
                text.contains(MASKED_DOMAIN),
                "detectors still apply: {text}"
            );
        }
    });
}

#[test]
fn ward_mask_previews_the_rules_without_a_database() {
    let env = start("mask_cli", PII_RULES);
    let out = env.ward.cli_ok(&[
        "mask",
        "--target",
        TARGET,
        "write to jane.roe@example.com",
        "card 4111 1111 1111 1111",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["write to j*******@*******.com", "card **** **** **** 1111"],
        "{out}"
    );
    // A column rule masks whatever the column holds.
    let out = env.ward.cli_ok(&[
        "mask",
        "--target",
        TARGET,
        "--column",
        "public.customers.secret_code",
        "--explain",
        "zebra1quartz",
    ]);
    assert!(out.contains("rules in force: pii"), "{out}");
    assert!(out.contains("************"), "{out}");
    assert!(!out.contains("zebra1quartz"), "{out}");
    // An unknown target is named in the error.
    let out = env.ward.cli(&["mask", "--target", "nope", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no target \"nope\""),
        "{}",
        harness::describe(&out)
    );
}

/// A statement held for approval is shown to approvers, webhooks and the store masked.
#[test]
fn held_statements_are_masked_in_approval_requests() {
    let rules = format!(
        "{PII_RULES}rules:\n  - {{ name: approve-updates, statements: [update], action: review, timeout: 30s }}\n"
    );
    let env = start("mask_approvals", &rules);
    let ward = &env.ward;
    let conninfo = ward.conninfo(ID, TARGET);
    let held =
        std::thread::scope(|scope| {
            let client =
                scope.spawn(|| {
                    ward.psql_args(
                &conninfo,
                &["-c", "update customers set name = 'write to jane.roe@example.com' where id = 1"],
            )
                });
            let id = harness::wait_until(
                || {
                    let out = ward.cli(&["approvals", "list", "--format", "json"]);
                    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                    list["approvals"].as_array()?.iter().find_map(|a| {
                        (a["state"] == "pending").then(|| {
                            (
                                a["id"].as_str().unwrap().to_string(),
                                a["command"].as_str().unwrap().to_string(),
                            )
                        })
                    })
                },
                "the held update",
            );
            ward.cli_ok(&["deny", &id.0, "--reason", "checking masking"]);
            let out = client.join().unwrap();
            assert!(!out.status.success(), "the denied update fails");
            id.1
        });
    assert!(held.contains("update customers"), "{held}");
    assert!(!held.contains("jane.roe@example.com"), "{held}");
    assert!(held.contains("j*******@*******.com"), "{held}");
    let audit = audit_dump(ward);
    assert!(
        !audit.contains("jane.roe@example.com"),
        "the audit keeps it masked too"
    );
}
