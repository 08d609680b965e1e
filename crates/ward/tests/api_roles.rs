//! API roles and `ward identities list` through a real `ward serve`: IdP tokens signed by
//! the in-test issuer (harness::oidc::MintIssuer) with groups mapped to roles by
//! `api.roles`, real psql sessions, and the real `ward` binary as the client.

mod harness;

use harness::oidc::MintIssuer;
use harness::{
    AuthMethod, PgTarget, Postgres, Target, TokenSpec, Ward, WardOptions, http_request, wait_until,
};
use serde_json::{Value, json};

/// A target database the target user owns.
fn target(name: &str) -> PgTarget {
    Postgres::get().create_target(name, AuthMethod::ScramSha256)
}

/// A token of the in-test issuer for `user` in `groups`.
fn idp_token(issuer: &MintIssuer, user: &str, groups: &[&str]) -> String {
    let mut claims = issuer.claims(user);
    claims["groups"] = json!(groups);
    issuer.sign(&claims)
}

/// `METHOD path` on the admin API with `bearer`; status and parsed body.
fn call(ward: &Ward, method: &str, path: &str, bearer: &str) -> (u16, Value) {
    let (status, body) = http_request(ward.api_addr(), method, path, Some(bearer), None)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, json)
}

/// psql through ward with `password` as `user`; panics with psql's output on failure.
fn psql_ok(ward: &Ward, user: &str, target: &str, password: &str) {
    let conninfo = ward.conninfo_with(user, target, password, "require");
    let out = ward.psql_args(&conninfo, &["-w", "-At", "-c", "select 1"]);
    assert!(
        out.status.success(),
        "psql as {user}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_idp_auditor_lists_sessions_and_only_an_admin_group_may_lock() {
    let issuer = MintIssuer::start();
    let db = target("roles_orders");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .token("ci-nightly")
            .identity_yaml(&issuer.oidc_yaml(""))
            .extra_yaml("api:\n  roles: { auditor: [auditors], admin: [ward-admins] }\n"),
    );
    psql_ok(&ward, "ci-nightly", "orders", &ward.token("ci-nightly"));

    let auditor = idp_token(&issuer, "audra", &["auditors"]);
    let sessions = wait_until(
        || {
            let (status, body) = call(&ward, "GET", "/api/v1/sessions", &auditor);
            assert_eq!(status, 200, "{body}");
            let list = body["sessions"].as_array().cloned().unwrap_or_default();
            (!list.is_empty()).then_some(list)
        },
        "ci-nightly's session in the audit",
    );
    assert_eq!(sessions[0]["identity"], "ci-nightly");

    let (status, body) = call(
        &ward,
        "POST",
        "/api/v1/identities/ci-nightly/lock",
        &auditor,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "this needs role admin (groups: ward-admins); you are mint:audra in [auditors]"
    );

    // No role at all, and a forged token.
    let (status, body) = call(
        &ward,
        "GET",
        "/api/v1/sessions",
        &idp_token(&issuer, "mallory", &["dev"]),
    );
    assert_eq!(status, 403, "{body}");
    let forged = issuer.sign_with_other_key(&issuer.claims("audra"));
    let (status, body) = call(&ward, "GET", "/api/v1/sessions", &forged);
    assert_eq!(status, 401, "{body}");

    // An admin by group locks, and the audit names her.
    let admin = idp_token(&issuer, "dana", &["ward-admins"]);
    let (status, body) = call(&ward, "POST", "/api/v1/identities/ci-nightly/lock", &admin);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lock"]["by"], "mint:dana");
    // The event reaches the store from the journal a few milliseconds after the answer.
    let event = wait_until(
        || {
            let (status, body) = call(&ward, "GET", "/api/v1/controls/events", &auditor);
            assert_eq!(status, 200, "{body}");
            body["events"].as_array().and_then(|e| e.first().cloned())
        },
        "the lock in the control events",
    );
    assert_eq!(event["action"], "lock", "{event}");
    assert_eq!(event["by"], "mint:dana", "{event}");
    // The admin token still works: it lifts the lock.
    let (status, body) = ward.api("POST", "/api/v1/identities/ci-nightly/unlock", None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn identities_list_flags_long_lived_unused_expired_and_owners_who_left() {
    let issuer = MintIssuer::start();
    let db = target("roles_ids");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .token("ci-nightly")
            .token_spec(TokenSpec::new("ci-old").long_lived())
            .token_spec(TokenSpec::new("deploy-bot").owner("mint:alice", Some("platform")))
            .token_spec(
                TokenSpec::new("backup")
                    .long_lived()
                    .owner("mint:nobody", None),
            )
            .token_spec(TokenSpec::new("report").expires_at("2020-01-01T00:00:00Z"))
            .identity_yaml(&issuer.oidc_yaml("")),
    );
    psql_ok(&ward, "ci-nightly", "orders", &ward.token("ci-nightly"));
    // alice, deploy-bot's owner, logs in through her IdP without group platform.
    psql_ok(
        &ward,
        "anything",
        "orders",
        &idp_token(&issuer, "alice", &["dev"]),
    );

    let list = wait_until(
        || {
            let v: Value =
                serde_json::from_str(&ward.cli_ok(&["identities", "list", "--format", "json"]))
                    .expect("identities JSON");
            let seen = v["identities"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["name"] == "mint:alice"));
            seen.then_some(v)
        },
        "alice's session in the identities list",
    );
    let row = |name: &str| -> Value {
        list["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {name}: {list}"))
    };
    assert_eq!(row("ci-old")["flags"], json!(["long_lived", "unused"]));
    assert_eq!(
        row("deploy-bot")["flags"],
        json!(["owner_left_group", "unused"])
    );
    assert_eq!(
        row("deploy-bot")["service_tokens"][0]["owner_groups"],
        json!(["dev"])
    );
    assert_eq!(
        row("backup")["flags"],
        json!(["long_lived", "owner_unknown", "unused"])
    );
    assert_eq!(row("report")["flags"], json!(["expired", "unused"]));
    assert_eq!(row("ci-nightly")["flags"], json!([]));
    assert_eq!(row("ci-nightly")["sessions"], 1);
    let alice = row("mint:alice");
    assert_eq!(alice["sources"], json!(["oidc"]));
    assert_eq!(alice["groups"], json!(["dev"]));
    assert_eq!(alice["flags"], json!([]));

    // The table for people.
    let table = ward.cli_ok(&["identities", "list", "--unused-days", "7"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.starts_with("IDENTITY"), "{table}");
    for column in [
        "SOURCE",
        "GROUPS",
        "LAST USE (UTC)",
        "EXPIRES (UTC)",
        "OWNER",
        "FLAGS",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let bot = table
        .lines()
        .find(|l| l.starts_with("deploy-bot "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        bot.contains("mint:alice (platform)") && bot.contains("owner_left_group,unused"),
        "{table}"
    );
    assert!(table.contains("no session in the last 7 days"), "{table}");
    // A bad window is the API's clear error, not a panic.
    let out = ward.cli(&["identities", "list", "--unused-days", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unused_days"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
