//! Verifier tests against an in-test IdP: a tiny HTTP server on 127.0.0.1 that serves a
//! discovery document and a JWKS built from the test-only keys in tests/fixtures, and counts
//! the requests it gets. Tokens are signed here with the matching private keys.

use chrono::{DateTime, Duration, TimeZone, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use ward_core::Config;
use ward_oidc::{TokenError, Verifier, looks_like_jwt};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A public JWK from the fixtures with a key id (and optionally an `alg`).
fn jwk(name: &str, kid: &str, alg: Option<&str>) -> Value {
    let mut key: Value = serde_json::from_slice(&fixture(&format!("{name}.jwk.json"))).unwrap();
    key["kid"] = json!(kid);
    key["use"] = json!("sig");
    if let Some(alg) = alg {
        key["alg"] = json!(alg);
    }
    key
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Signs `claims` with the fixture private key `name`.
fn sign(alg: Algorithm, name: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = fixture(&format!("{name}.key.pem"));
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let header = Header {
        alg,
        kid: kid.map(str::to_string),
        ..Header::default()
    };
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The fixed "now" of the tests; every time is relative to it.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
}

fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// What the in-test IdP answers.
#[derive(Clone)]
struct IdpState {
    jwks: Arc<Mutex<String>>,
    /// The `issuer` the discovery document claims (normally the real one).
    discovery_issuer: Arc<Mutex<Option<String>>>,
    /// Answer every request with 503.
    failing: Arc<Mutex<bool>>,
    /// A Cache-Control header for JWKS responses.
    cache_control: Arc<Mutex<Option<String>>>,
    jwks_hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
}

struct Idp {
    addr: SocketAddr,
    state: IdpState,
    task: JoinHandle<()>,
}

impl Idp {
    async fn start(keys: &[Value]) -> Idp {
        let state = IdpState {
            jwks: Arc::new(Mutex::new(jwks(keys))),
            discovery_issuer: Arc::new(Mutex::new(None)),
            failing: Arc::new(Mutex::new(false)),
            cache_control: Arc::new(Mutex::new(None)),
            jwks_hits: Arc::new(AtomicUsize::new(0)),
            discovery_hits: Arc::new(AtomicUsize::new(0)),
        };
        Idp::serve("127.0.0.1:0".parse().unwrap(), state).await
    }

    async fn serve(addr: SocketAddr, state: IdpState) -> Idp {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                let issuer = issuer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&buf);
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut extra = String::new();
                    let (status, body) = if *s.failing.lock().unwrap() {
                        ("503 Service Unavailable", "{}".to_string())
                    } else {
                        match path.as_str() {
                            "/.well-known/openid-configuration" => {
                                s.discovery_hits.fetch_add(1, Ordering::SeqCst);
                                let claimed = s
                                    .discovery_issuer
                                    .lock()
                                    .unwrap()
                                    .clone()
                                    .unwrap_or_else(|| issuer.clone());
                                let doc = json!({"issuer": claimed, "jwks_uri": format!("{issuer}/jwks")});
                                ("200 OK", doc.to_string())
                            }
                            "/jwks" => {
                                s.jwks_hits.fetch_add(1, Ordering::SeqCst);
                                if let Some(cc) = &*s.cache_control.lock().unwrap() {
                                    extra = format!("Cache-Control: {cc}\r\n");
                                }
                                ("200 OK", s.jwks.lock().unwrap().clone())
                            }
                            _ => ("404 Not Found", "{}".to_string()),
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Idp { addr, state, task }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_keys(&self, keys: &[Value]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Stops answering: the port is closed (connection refused).
    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The usual three keys: RSA `r1`, EC `e1`, Ed25519 `d1`.
fn usual_keys() -> Vec<Value> {
    vec![
        jwk("rsa", "r1", Some("RS256")),
        jwk("ec-p256", "e1", None),
        jwk("ed25519", "d1", None),
    ]
}

/// A verifier for one OIDC issuer, from YAML as an operator would write it (so it is also
/// validated like real config). `extra` is appended to the issuer's mapping.
fn oidc_verifier(issuer: &str, extra: &str) -> Verifier {
    let yaml = format!(
        "identity:\n  oidc:\n    - issuer: {issuer}\n      audiences: [ward, other-app]\n{extra}"
    );
    let config = Config::from_yaml(&yaml, Path::new(".")).unwrap();
    Verifier::new(&config.identity.oidc, &config.identity.workload)
}

const MAPPING: &str = "      groups_claim: realm_access.roles\n      name_prefix: \"oidc:\"\n      groups_prefix: \"idp:\"\n      static_groups: [staff]\n";

fn alice(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": ["some-api", "ward"],
        "sub": "f3b1-alice",
        "preferred_username": "alice",
        "realm_access": {"roles": ["dba", "dev"]},
        "iat": secs(t0()),
        "exp": secs(t0() + Duration::hours(1)),
        "jti": "tok-1",
    })
}

#[tokio::test]
async fn accepts_rs256_es256_and_eddsa_with_groups_mapped() {
    let idp = Idp::start(&usual_keys()).await;
    let v = oidc_verifier(&idp.issuer(), MAPPING);
    let claims = alice(&idp.issuer());
    for (alg, key, kid) in [
        (Algorithm::RS256, "rsa", "r1"),
        (Algorithm::ES256, "ec-p256", "e1"),
        (Algorithm::EdDSA, "ed25519", "d1"),
    ] {
        let token = sign(alg, key, Some(kid), &claims);
        assert!(looks_like_jwt(&token));
        let ok = v
            .verify(&token, t0())
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(&*ok.identity.name, "oidc:alice");
        assert_eq!(ok.identity.source, "oidc");
        assert_eq!(ok.identity.groups, ["idp:dba", "idp:dev", "staff"]);
        assert_eq!(ok.identity.expires, Some(t0() + Duration::hours(1)));
        assert!(ok.identity.attributes.is_empty());
        assert_eq!(ok.issuer, idp.issuer());
        assert_eq!(ok.subject, "f3b1-alice");
        assert_eq!(ok.audience, "ward");
        assert_eq!(ok.expires, t0() + Duration::hours(1));
        assert_eq!(ok.token_id.as_deref(), Some("tok-1"));
    }
    assert_eq!(idp.jwks_hits(), 1, "one fetch serves all three tokens");
    assert_eq!(idp.state.discovery_hits.load(Ordering::SeqCst), 1);

    // A token without kid is tried against every key that fits its algorithm.
    let token = sign(Algorithm::ES256, "ec-p256", None, &claims);
    assert_eq!(
        &*v.verify(&token, t0()).await.unwrap().identity.name,
        "oidc:alice"
    );
    // The default groups claim, a plain-string group, no prefixes.
    let v = oidc_verifier(&idp.issuer(), "");
    let mut c = claims.clone();
    c["groups"] = json!("admins");
    let ok = v
        .verify(&sign(Algorithm::RS256, "rsa", Some("r1"), &c), t0())
        .await
        .unwrap();
    assert_eq!(
        (&*ok.identity.name, ok.identity.groups.as_slice()),
        ("alice", &["admins".to_string()][..])
    );
}

/// Asserts the refusal and that its message does not contain the token or its signature.
async fn refused(v: &Verifier, token: &str, now: DateTime<Utc>) -> TokenError {
    let err = v
        .verify(token, now)
        .await
        .expect_err("the token should be refused");
    let text = err.to_string();
    let signature = token.rsplit('.').next().unwrap();
    assert!(!text.contains(token), "{text}");
    assert!(signature.len() < 8 || !text.contains(signature), "{text}");
    err
}

#[tokio::test]
async fn refuses_none_and_hmac_before_looking_at_keys() {
    let idp = Idp::start(&usual_keys()).await;
    let v = oidc_verifier(&idp.issuer(), "");
    let claims = alice(&idp.issuer());

    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    assert!(
        looks_like_jwt(&none),
        "unsigned tokens still go to the verifier"
    );
    let err = refused(&v, &none, t0()).await;
    assert_eq!(err, TokenError::AlgorithmRefused("none".into()));
    assert_eq!(err.code(), "alg_none");
    let none_caps = format!("{}.{}.", b64(&json!({"alg": "NONE"})), b64(&claims));
    assert_eq!(refused(&v, &none_caps, t0()).await.code(), "alg_none");

    // The classic key confusion: HS256 with the issuer's RSA public key (PEM) as the secret.
    let header = Header {
        alg: Algorithm::HS256,
        kid: Some("r1".into()),
        ..Header::default()
    };
    let confused = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(&fixture("rsa.pub.pem")),
    )
    .unwrap();
    let err = refused(&v, &confused, t0()).await;
    assert_eq!(err, TokenError::AlgorithmRefused("HS256".into()));
    assert_eq!(err.code(), "alg_hmac");
    assert!(err.to_string().contains("never accepted"), "{err}");
    // The same with the JWK's modulus-based DER would fare no better: HS* never gets a key.
    assert_eq!(idp.jwks_hits(), 0, "refused before any key was fetched");
}

#[tokio::test]
async fn refuses_each_broken_claim_with_its_own_error() {
    let idp = Idp::start(&usual_keys()).await;
    let v = oidc_verifier(&idp.issuer(), MAPPING);
    let good = alice(&idp.issuer());
    let rs = |c: &Value| sign(Algorithm::RS256, "rsa", Some("r1"), c);
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    assert!(v.verify(&rs(&good), t0()).await.is_ok());

    let err = refused(&v, &rs(&with("iss", json!("https://evil.example"))), t0()).await;
    assert_eq!(
        err,
        TokenError::UnknownIssuer("https://evil.example".into())
    );
    assert_eq!(err.code(), "unknown_issuer");
    let err = refused(
        &v,
        &rs(&with("iss", json!(format!("{}/", idp.issuer())))),
        t0(),
    )
    .await;
    assert_eq!(err.code(), "unknown_issuer", "issuers match exactly");

    let err = refused(&v, &rs(&with("aud", json!("someone-else"))), t0()).await;
    assert_eq!(
        err,
        TokenError::WrongAudience {
            got: "\"someone-else\"".into(),
            expected: "ward, other-app".into()
        }
    );
    assert_eq!(err.code(), "wrong_audience");
    assert_eq!(
        refused(&v, &rs(&without("aud")), t0()).await.code(),
        "missing_claim"
    );

    // Expired beyond the 60s skew is refused; within it, accepted.
    let exp = t0() - Duration::seconds(61);
    let err = refused(&v, &rs(&with("exp", json!(secs(exp)))), t0()).await;
    assert_eq!(err, TokenError::Expired { at: exp });
    assert_eq!(err.code(), "expired");
    assert!(
        v.verify(&rs(&with("exp", json!(secs(t0()) - 30))), t0())
            .await
            .is_ok()
    );
    assert_eq!(
        refused(&v, &rs(&without("exp")), t0()).await,
        TokenError::MissingClaim("exp".into())
    );

    let nbf = t0() + Duration::minutes(10);
    let err = refused(&v, &rs(&with("nbf", json!(secs(nbf)))), t0()).await;
    assert_eq!(err, TokenError::NotYetValid { from: nbf });
    assert_eq!(err.code(), "not_yet_valid");
    assert!(
        v.verify(&rs(&with("nbf", json!(secs(t0()) + 30))), t0())
            .await
            .is_ok()
    );

    let iat = t0() + Duration::minutes(5);
    let err = refused(&v, &rs(&with("iat", json!(secs(iat)))), t0()).await;
    assert_eq!(err, TokenError::IssuedInFuture { at: iat });
    assert_eq!(err.code(), "issued_in_future");

    let err = refused(&v, &rs(&without("preferred_username")), t0()).await;
    assert_eq!(err, TokenError::MissingClaim("preferred_username".into()));
    assert_eq!(err.to_string(), "token has no preferred_username claim");
    assert_eq!(
        refused(&v, &rs(&without("sub")), t0()).await.code(),
        "missing_claim"
    );
    let err = refused(
        &v,
        &rs(&with("realm_access", json!({"roles": [1, 2]}))),
        t0(),
    )
    .await;
    assert_eq!(err.code(), "bad_claim");

    // Signed by another key under the issuer's kid; then a payload altered after signing.
    let err = refused(
        &v,
        &sign(Algorithm::RS256, "rsa-other", Some("r1"), &good),
        t0(),
    )
    .await;
    assert_eq!(err, TokenError::BadSignature);
    assert_eq!(err.code(), "bad_signature");
    let token = rs(&good);
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(&with("preferred_username", json!("admin")));
    parts[1] = &forged;
    assert_eq!(
        refused(&v, &parts.join("."), t0()).await,
        TokenError::BadSignature
    );

    // An EC signature presented under the RSA key's kid: the key cannot verify ES256.
    let err = refused(
        &v,
        &sign(Algorithm::ES256, "ec-p256", Some("r1"), &good),
        t0(),
    )
    .await;
    assert_eq!(err.code(), "key_alg_mismatch", "{err}");
    // The RSA key declares alg RS256, so a PS256 token under it is refused as well.
    let v_ps = oidc_verifier(&idp.issuer(), "      algorithms: [RS256, PS256]\n");
    let err = refused(
        &v_ps,
        &sign(Algorithm::PS256, "rsa", Some("r1"), &good),
        t0(),
    )
    .await;
    assert_eq!(err.code(), "key_alg_mismatch", "{err}");

    // An algorithm the issuer is not configured for.
    let v_rs = oidc_verifier(&idp.issuer(), "      algorithms: [RS256]\n");
    let err = refused(
        &v_rs,
        &sign(Algorithm::ES256, "ec-p256", Some("e1"), &good),
        t0(),
    )
    .await;
    assert_eq!(
        err,
        TokenError::AlgorithmNotAllowed {
            alg: "ES256".into(),
            issuer: idp.issuer()
        }
    );

    // A kid the issuer never published (the first fetch was moments ago: no refetch).
    let hits = idp.jwks_hits();
    let err = refused(
        &v,
        &sign(Algorithm::RS256, "rsa-other", Some("nope"), &good),
        t0(),
    )
    .await;
    assert_eq!(
        err,
        TokenError::UnknownKeyId {
            kid: "nope".into(),
            issuer: idp.issuer()
        }
    );
    assert_eq!(err.code(), "unknown_kid");
    assert_eq!(idp.jwks_hits(), hits);

    assert_eq!(refused(&v, "not.a.jwt", t0()).await.code(), "malformed");
}

#[tokio::test]
async fn rotation_refetches_once_per_interval_for_unknown_kids() {
    let idp = Idp::start(&[jwk("rsa", "r1", None)]).await;
    let v = oidc_verifier(&idp.issuer(), "");
    let claims = alice(&idp.issuer());
    assert!(
        v.verify(&sign(Algorithm::RS256, "rsa", Some("r1"), &claims), t0())
            .await
            .is_ok()
    );
    assert_eq!(idp.jwks_hits(), 1);

    // The IdP rotates to a new key; a token signed with it arrives a minute later.
    idp.set_keys(&[jwk("rsa-other", "r2", None)]);
    let later = t0() + Duration::seconds(60);
    let rotated = sign(Algorithm::RS256, "rsa-other", Some("r2"), &claims);
    let ok = v.verify(&rotated, later).await.unwrap();
    assert_eq!(&*ok.identity.name, "alice");
    assert_eq!(idp.jwks_hits(), 2, "the unknown kid caused one refetch");

    // Another unknown kid within 30s of that fetch: refused without asking the IdP.
    let junk = sign(Algorithm::RS256, "rsa", Some("r3"), &claims);
    let soon = later + Duration::seconds(5);
    assert_eq!(refused(&v, &junk, soon).await.code(), "unknown_kid");
    assert_eq!(refused(&v, &junk, soon).await.code(), "unknown_kid");
    assert_eq!(idp.jwks_hits(), 2, "rate-limited");
    // The old key is gone from the new set.
    let old = sign(Algorithm::RS256, "rsa", Some("r1"), &claims);
    assert_eq!(refused(&v, &old, soon).await.code(), "unknown_kid");
    assert_eq!(idp.jwks_hits(), 2);
    // After the interval, one more refetch is allowed (and the kid is still unknown).
    assert_eq!(
        refused(&v, &junk, later + Duration::seconds(31))
            .await
            .code(),
        "unknown_kid"
    );
    assert_eq!(idp.jwks_hits(), 3);
}

#[tokio::test]
async fn keys_due_for_refresh_are_refetched_in_the_background() {
    let idp = Idp::start(&[jwk("rsa", "r1", None)]).await;
    let v = oidc_verifier(&idp.issuer(), "");
    let claims = alice(&idp.issuer());
    let r1 = sign(Algorithm::RS256, "rsa", Some("r1"), &claims);
    assert!(v.verify(&r1, t0()).await.is_ok());
    assert!(
        v.verify_cached(&r1, t0()).unwrap().is_ok(),
        "cached: no fetch needed"
    );

    idp.set_keys(&[jwk("rsa", "r1", None), jwk("rsa-other", "r2", None)]);
    let due = t0() + Duration::minutes(6);
    // Answered from the cache at once; the refresh runs in a spawned task.
    assert!(v.verify_cached(&r1, due).unwrap().is_ok());
    for _ in 0..100 {
        if idp.jwks_hits() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(idp.jwks_hits(), 2, "the background refresh fetched once");
    // Give the refresh task a moment to store its result, then the new key is known.
    let r2 = sign(Algorithm::RS256, "rsa-other", Some("r2"), &claims);
    let mut found = None;
    for _ in 0..100 {
        found = v.verify_cached(&r2, due + Duration::seconds(1));
        if matches!(found, Some(Ok(_))) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(matches!(found, Some(Ok(_))), "{found:?}");
    assert_eq!(idp.jwks_hits(), 2, "no further fetch");
}

/// Lets a background refresh against a closed port finish (connection refused is immediate).
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_shorter_cache_control_max_age_brings_the_refresh_forward() {
    let idp = Idp::start(&[jwk("rsa", "r1", None)]).await;
    *idp.state.cache_control.lock().unwrap() = Some("public, max-age=60".into());
    let v = oidc_verifier(&idp.issuer(), "");
    let token = sign(Algorithm::RS256, "rsa", Some("r1"), &alice(&idp.issuer()));
    assert!(v.verify(&token, t0()).await.is_ok());
    // Before max-age: no refresh.
    assert!(v.verify(&token, t0() + Duration::seconds(59)).await.is_ok());
    settle().await;
    assert_eq!(idp.jwks_hits(), 1);
    // After max-age (60s, well before jwks_refresh = 5m): refreshed in the background.
    assert!(v.verify(&token, t0() + Duration::seconds(61)).await.is_ok());
    for _ in 0..100 {
        if idp.jwks_hits() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn an_unreachable_idp_is_survived_until_max_stale() {
    let idp = Idp::start(&usual_keys()).await;
    let addr = idp.addr;
    let state = idp.state.clone();
    let v = oidc_verifier(&idp.issuer(), "");
    let mut claims = alice(&idp.issuer());
    claims["exp"] = json!(secs(t0() + Duration::days(3)));
    let token = sign(Algorithm::RS256, "rsa", Some("r1"), &claims);
    assert!(v.verify(&token, t0()).await.is_ok());

    idp.stop();
    drop(idp);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Refresh is due, the IdP is down: the cached keys still serve (and the refresh that
    // was started in the background fails; give it a moment so it does not overlap the
    // checks below, which use later clocks).
    assert!(v.verify(&token, t0() + Duration::minutes(10)).await.is_ok());
    settle().await;
    assert!(v.verify(&token, t0() + Duration::hours(23)).await.is_ok());
    settle().await;
    // Past jwks_max_stale (24h) after the last successful fetch: refused.
    let err = refused(&v, &token, t0() + Duration::hours(25)).await;
    assert_eq!(err.code(), "keys_unavailable");
    let text = err.to_string();
    assert!(
        text.contains("are stale: the IdP has been unreachable since")
            && text.contains(&format!("keys last fetched at {}", t0().to_rfc3339())),
        "{text}"
    );
    // verify_cached refuses too, without waiting for a fetch.
    let again = t0() + Duration::hours(25) + Duration::seconds(1);
    assert!(matches!(
        v.verify_cached(&token, again),
        Some(Err(TokenError::KeysUnavailable { .. }))
    ));

    // The IdP comes back on the same address: the next allowed fetch restores service.
    let idp = Idp::serve(addr, state).await;
    let back = t0() + Duration::hours(25) + Duration::seconds(31);
    assert!(v.verify(&token, back).await.is_ok());
    drop(idp);
}

#[tokio::test]
async fn an_idp_never_reached_is_retried_at_most_every_interval() {
    let idp = Idp::start(&usual_keys()).await;
    *idp.state.failing.lock().unwrap() = true;
    let v = oidc_verifier(&idp.issuer(), "");
    let token = sign(Algorithm::RS256, "rsa", Some("r1"), &alice(&idp.issuer()));
    assert!(
        v.verify_cached(&token, t0()).is_none(),
        "needs a fetch first"
    );
    let err = refused(&v, &token, t0()).await;
    assert_eq!(err.code(), "keys_unavailable");
    assert!(
        err.to_string().contains("could not be fetched") && err.to_string().contains("503"),
        "{err}"
    );
    let err = refused(&v, &token, t0() + Duration::seconds(10)).await;
    assert_eq!(err.code(), "keys_unavailable");
    assert_eq!(
        idp.state.discovery_hits.load(Ordering::SeqCst) + idp.jwks_hits(),
        0,
        "503s are not counted as hits"
    );
    *idp.state.failing.lock().unwrap() = false;
    assert_eq!(
        refused(&v, &token, t0() + Duration::seconds(20))
            .await
            .code(),
        "keys_unavailable"
    );
    assert_eq!(idp.jwks_hits(), 0, "still within the retry interval");
    assert!(v.verify(&token, t0() + Duration::seconds(31)).await.is_ok());
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn discovery_must_describe_the_configured_issuer() {
    let idp = Idp::start(&usual_keys()).await;
    *idp.state.discovery_issuer.lock().unwrap() = Some("https://other.example".into());
    let v = oidc_verifier(&idp.issuer(), "");
    let token = sign(Algorithm::RS256, "rsa", Some("r1"), &alice(&idp.issuer()));
    let err = refused(&v, &token, t0()).await;
    assert!(
        err.to_string()
            .contains("describes issuer \"https://other.example\""),
        "{err}"
    );
    assert_eq!(idp.jwks_hits(), 0);

    // With jwks_url, discovery is skipped altogether.
    let v = oidc_verifier(
        &idp.issuer(),
        &format!("      jwks_url: {}/jwks\n", idp.issuer()),
    );
    assert!(v.verify(&token, t0()).await.is_ok());
    assert_eq!(
        idp.state.discovery_hits.load(Ordering::SeqCst),
        1,
        "only the failed one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_uses_share_one_fetch() {
    let idp = Idp::start(&usual_keys()).await;
    let v = Arc::new(oidc_verifier(&idp.issuer(), ""));
    let token = sign(Algorithm::RS256, "rsa", Some("r1"), &alice(&idp.issuer()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (v, token) = (Arc::clone(&v), token.clone());
        tasks.spawn(async move { v.verify(&token, t0()).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(result.unwrap().is_ok());
    }
    assert_eq!(idp.jwks_hits(), 1);
    assert_eq!(idp.state.discovery_hits.load(Ordering::SeqCst), 1);
}

fn workload_verifier(issuer: &str) -> Verifier {
    let yaml = format!(
        r#"
identity:
  workload:
    - issuer: {issuer}
      audiences: [https://ward.example.com]
      identity: "ci:github:{{repository}}:{{workflow}}"
      attributes: [ref, run_id, job.sha]
      groups: [ci]
      groups_claim: teams
"#
    );
    let config = Config::from_yaml(&yaml, Path::new(".")).unwrap();
    Verifier::new(&config.identity.oidc, &config.identity.workload)
}

#[tokio::test]
async fn workload_tokens_become_template_identities_with_attributes() {
    let idp = Idp::start(&usual_keys()).await;
    let v = workload_verifier(&idp.issuer());
    let claims = json!({
        "iss": idp.issuer(),
        "aud": "https://ward.example.com",
        "sub": "repo:acme/api:ref:refs/heads/main",
        "repository": "acme/api",
        "workflow": "nightly",
        "ref": "refs/heads/main",
        "run_id": "42",
        "teams": ["backend"],
        "exp": secs(t0() + Duration::minutes(10)),
        "iat": secs(t0()),
    });
    let token = sign(Algorithm::RS256, "rsa", Some("r1"), &claims);
    let ok = v.verify(&token, t0()).await.unwrap();
    assert_eq!(&*ok.identity.name, "ci:github:acme/api:nightly");
    assert_eq!(ok.identity.source, "workload");
    assert_eq!(ok.identity.groups, ["ci", "backend"]);
    assert_eq!(
        ok.identity.attributes,
        [
            ("ref".to_string(), "refs/heads/main".to_string()),
            ("run_id".to_string(), "42".to_string())
        ],
        "absent attributes (job.sha) are left out"
    );
    assert_eq!(ok.subject, "repo:acme/api:ref:refs/heads/main");

    // Claim values cannot smuggle characters into the name.
    let mut odd = claims.clone();
    odd["workflow"] = json!("nightly build; DROP *");
    let ok = v
        .verify(&sign(Algorithm::RS256, "rsa", Some("r1"), &odd), t0())
        .await
        .unwrap();
    assert_eq!(
        &*ok.identity.name,
        "ci:github:acme/api:nightly_build__DROP__"
    );
    // A claim the template needs is missing: refused.
    let mut missing = claims.clone();
    missing.as_object_mut().unwrap().remove("workflow");
    let err = refused(
        &v,
        &sign(Algorithm::RS256, "rsa", Some("r1"), &missing),
        t0(),
    )
    .await;
    assert_eq!(err, TokenError::MissingClaim("workflow".into()));
    // Workload issuers check the audience like any other.
    let mut wrong = claims.clone();
    wrong["aud"] = json!("sts.amazonaws.com");
    let err = refused(&v, &sign(Algorithm::RS256, "rsa", Some("r1"), &wrong), t0()).await;
    assert_eq!(err.code(), "wrong_audience");
}

#[test]
fn every_error_has_a_stable_code() {
    let at = t0();
    let cases = [
        (TokenError::Malformed("x".into()), "malformed"),
        (TokenError::AlgorithmRefused("none".into()), "alg_none"),
        (TokenError::AlgorithmRefused("HS512".into()), "alg_hmac"),
        (
            TokenError::AlgorithmNotAllowed {
                alg: "ES384".into(),
                issuer: "i".into(),
            },
            "alg_not_allowed",
        ),
        (TokenError::UnknownIssuer("i".into()), "unknown_issuer"),
        (
            TokenError::WrongAudience {
                got: "a".into(),
                expected: "b".into(),
            },
            "wrong_audience",
        ),
        (TokenError::Expired { at }, "expired"),
        (TokenError::NotYetValid { from: at }, "not_yet_valid"),
        (TokenError::IssuedInFuture { at }, "issued_in_future"),
        (
            TokenError::UnknownKeyId {
                kid: "k".into(),
                issuer: "i".into(),
            },
            "unknown_kid",
        ),
        (TokenError::BadSignature, "bad_signature"),
        (TokenError::MissingClaim("sub".into()), "missing_claim"),
        (
            TokenError::BadClaim {
                claim: "groups".into(),
                why: "w".into(),
            },
            "bad_claim",
        ),
        (
            TokenError::KeysUnavailable {
                issuer: "i".into(),
                why: "w".into(),
            },
            "keys_unavailable",
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
    }
}
