use super::*;

const ALL: [fn() -> Detector; 10] = [
    || Detector::Email,
    || Detector::PaymentCard,
    || Detector::Iban,
    || Detector::UsSsn,
    || Detector::Phone,
    || Detector::Ipv4,
    || Detector::Ipv6,
    || Detector::Jwt,
    || Detector::AwsAccessKey,
    || Detector::PemPrivateKey,
];

fn masker(strategy: Strategy) -> Masker {
    Masker::new(MaskerConfig {
        detectors: ALL
            .iter()
            .map(|d| DetectorConfig::new(d(), strategy.clone()))
            .collect(),
        token_key: Some(b"test-key".to_vec()),
    })
    .unwrap()
}

/// Names of detectors found in `s`, with the matched text.
fn found(s: &str) -> Vec<(String, String)> {
    let m = masker(Strategy::Redact);
    m.find(s.as_bytes())
        .into_iter()
        .map(|x| (x.detector.to_owned(), s[x.start..x.end].to_owned()))
        .collect()
}

fn one(s: &str, det: &str, text: &str) {
    assert_eq!(
        found(s),
        vec![(det.to_owned(), text.to_owned())],
        "input: {s:?}"
    );
}

fn none(s: &str) {
    assert_eq!(found(s), vec![], "input: {s:?}");
    assert!(masker(Strategy::Redact).mask(s.as_bytes()).is_unchanged());
}

fn redact(s: &str) -> String {
    match masker(Strategy::Redact).mask(s.as_bytes()) {
        MaskResult::Masked(v) => String::from_utf8(v).unwrap(),
        other => panic!("expected Masked for {s:?}, got {other:?}"),
    }
}

#[test]
fn email() {
    one(
        "contact: john.doe+x@mail.example.com.",
        "email",
        "john.doe+x@mail.example.com",
    );
    one("<a@b.io>", "email", "a@b.io");
    none("@handle and user@localhost and x@y.1 and a@.com and foo@bar..com");
    none("git@ version 2.3");
}

#[test]
fn payment_card() {
    one(
        "card 4111 1111 1111 1111 exp",
        "payment_card",
        "4111 1111 1111 1111",
    );
    one("4111-1111-1111-1111", "payment_card", "4111-1111-1111-1111");
    one("pan=5555555555554444;", "payment_card", "5555555555554444");
    one("amex 378282246310005", "payment_card", "378282246310005");
    // Not Luhn-valid.
    none("card 4111 1111 1111 1112");
    none("4111111111111112");
    // Order ids: not a card network prefix / too long / glued to letters.
    none("order 1234567890123456 shipped");
    none("order 41111111111111111111111 shipped");
    none("ORD4111111111111111");
    // UUID-shaped digits.
    none("42345678-1234-5678-1234-567812345678");
    // Mixed separators are not a card.
    none("4111-1111 1111-1111");
}

#[test]
fn iban() {
    one(
        "pay to GB82 WEST 1234 5698 7654 32 today",
        "iban",
        "GB82 WEST 1234 5698 7654 32",
    );
    one("DE89370400440532013000", "iban", "DE89370400440532013000");
    // Bad checksum / unknown country / wrong length.
    none("DE89370400440532013001");
    none("ZZ89370400440532013000");
    none("DE8937040044053201300");
    none("ISO8601 and SHA256 and AB12");
}

#[test]
fn ssn() {
    one("ssn: 123-45-6789.", "us_ssn", "123-45-6789");
    for bad in [
        "000-12-3456",
        "666-12-3456",
        "912-34-5678",
        "123-00-4567",
        "123-45-0000",
        "123-45-67890",
        "1123-45-6789",
    ] {
        none(bad);
    }
}

#[test]
fn phone() {
    one("call +14155552671 now", "phone", "+14155552671");
    one("call (555) 123-4567 now", "phone", "(555) 123-4567");
    one("call 555-123-4567", "phone", "555-123-4567");
    one("call 555.123.4567", "phone", "555.123.4567");
    none("+1234567 too short, +1234567890123456 too long, a+12345678901");
    // UUIDs, dates, times, versions and ids must not look like phones.
    none("id 123e4567-e89b-12d3-a456-426614174000");
    none("550e8400-e29b-41d4-a716-446655440000");
    none("2024-01-15T10:30:00Z 2024-01-15 10:30:00.123");
    none("555-123-45678 555-1234-567 555-123.4567");
}

#[test]
fn ipv4() {
    one("from 192.168.1.10:5432", "ipv4", "192.168.1.10");
    one("ip=8.8.8.8.", "ipv4", "8.8.8.8");
    none("version 1.2.3.4.5");
    none("256.1.1.1 1.2.3 01.2.3.4 v1.2.3.4 1.2.3.4a");
}

#[test]
fn ipv6() {
    one("peer [2001:db8::1]:443", "ipv6", "2001:db8::1");
    one(
        "fe80:0:0:0:202:b3ff:fe1e:8329 up",
        "ipv6",
        "fe80:0:0:0:202:b3ff:fe1e:8329",
    );
    one("mapped ::ffff:192.0.2.128 ok", "ipv6", "::ffff:192.0.2.128");
    none("at 10:30:00 key: value a::b:: dead:beef");
    none("std::net::Ipv6Addr");
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

#[test]
fn jwt() {
    let s = format!("Authorization: Bearer {JWT}\n");
    one(&s, "jwt", JWT);
    // Header without "alg", two segments only, not base64.
    none("eyJub3QiOiJqd3QifQ.eyJzdWIiOiIxIn0.abc");
    none("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0");
    none("eyJ!!!.a.b");
}

#[test]
fn aws() {
    one(
        "key=AKIAIOSFODNN7EXAMPLE\n",
        "aws_access_key",
        "AKIAIOSFODNN7EXAMPLE",
    );
    one(
        "ASIAY34FZKBOKMUTVV7A",
        "aws_access_key",
        "ASIAY34FZKBOKMUTVV7A",
    );
    none("AKIAIOSFODNN7EXAMPL AKIAIOSFODNN7EXAMPLEX xAKIAIOSFODNN7EXAMPLE AKIAiosfodnn7example");
}

#[test]
fn pem() {
    let key =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow+IBAAKCAQEA/x=\n-----END RSA PRIVATE KEY-----";
    let s = format!("cfg\n{key}\ntrailer");
    one(&s, "pem_private_key", key);
    // Truncated: masked to the end.
    let t = "x -----BEGIN PRIVATE KEY-----\nMIIE";
    one(t, "pem_private_key", &t[2..]);
    none("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
}

#[test]
fn custom_detector_with_validator() {
    let m = Masker::new(MaskerConfig {
        detectors: vec![
            DetectorConfig::new(
                Detector::Custom(CustomDetector {
                    name: "acct".into(),
                    pattern: r"\bACCT-\d{8}\b".into(),
                    validator: Validator::None,
                }),
                Strategy::Fixed("[acct]".into()),
            ),
            DetectorConfig::new(
                Detector::Custom(CustomDetector {
                    name: "luhn12".into(),
                    pattern: r"\b\d{12}\b".into(),
                    validator: Validator::Luhn,
                }),
                Strategy::Redact,
            ),
        ],
        token_key: None,
    })
    .unwrap();
    let out = m.mask(b"a ACCT-12345678 b 000000000018 c 000000000019");
    assert_eq!(
        out.as_bytes().unwrap(),
        b"a [acct] b ************ c 000000000019"
    );
    assert!(mod97_valid(b"GB82WEST12345698765432"));
}

#[test]
fn config_errors() {
    let bad = Detector::Custom(CustomDetector {
        name: "x".into(),
        pattern: "(".into(),
        validator: Validator::None,
    });
    let err = Masker::new(MaskerConfig {
        detectors: vec![DetectorConfig::new(bad, Strategy::Redact)],
        token_key: None,
    })
    .unwrap_err();
    assert!(matches!(err, MaskError::InvalidPattern { .. }), "{err}");
    let err = Masker::new(MaskerConfig {
        detectors: vec![DetectorConfig::new(Detector::Email, Strategy::Tokenize)],
        token_key: None,
    })
    .unwrap_err();
    assert!(matches!(err, MaskError::MissingTokenKey));
    let err = Masker::new(MaskerConfig {
        detectors: vec![
            DetectorConfig::new(Detector::Email, Strategy::Redact),
            DetectorConfig::new(Detector::Email, Strategy::Null),
        ],
        token_key: None,
    })
    .unwrap_err();
    assert!(matches!(err, MaskError::DuplicateDetector(_)));
}

#[test]
fn redact_formats() {
    assert_eq!(redact("4111-1111-1111-1111"), "****-****-****-1111");
    assert_eq!(
        redact("card 4111 1111 1111 1111."),
        "card **** **** **** 1111."
    );
    assert_eq!(redact("john@example.com"), "j***@*******.com");
    assert_eq!(redact("ssn 123-45-6789"), "ssn ***-**-****");
    assert_eq!(redact("(555) 123-4567"), "(***) ***-****");
    assert_eq!(redact("10.0.0.1:80"), "**.*.*.*:80");
}

#[test]
fn tokenize_is_deterministic_and_keyed() {
    let m = masker(Strategy::Tokenize);
    let a = m.mask(b"x john@example.com y");
    let b = m.mask(b"x john@example.com y");
    assert_eq!(a, b);
    let s = String::from_utf8(a.as_bytes().unwrap().to_vec()).unwrap();
    assert!(
        s.starts_with("x tok_") && s.ends_with(" y") && s.len() == "x tok_ y".len() + 16,
        "{s}"
    );
    let other = Masker::new(MaskerConfig {
        detectors: vec![DetectorConfig::new(Detector::Email, Strategy::Tokenize)],
        token_key: Some(b"other-key".to_vec()),
    })
    .unwrap();
    assert_ne!(other.mask(b"x john@example.com y"), b);
    assert_ne!(m.mask(b"x jane@example.com y"), b);
}

#[test]
fn hmac_rfc4231_case2() {
    let mac = strategy::HmacKey::new(b"Jefe").mac(b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Keys longer than the block size are hashed first (RFC 4231 case 6).
    let mac = strategy::HmacKey::new(&[0xaa; 131])
        .mac(b"Test Using Larger Than Block-Size Key - Hash Key First");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn null_and_fixed() {
    let m = masker(Strategy::Null);
    assert_eq!(m.mask(b"ssn 123-45-6789"), MaskResult::Null);
    assert!(m.mask(b"nothing here").is_unchanged());
    let m = masker(Strategy::Fixed("<redacted>".into()));
    assert_eq!(
        m.mask(b"to a@b.com!").as_bytes().unwrap(),
        b"to <redacted>!"
    );
}

#[test]
fn clean_input_is_unchanged_and_borrowed() {
    let m = masker(Strategy::Redact);
    let clean = b"2024-01-15T10:30:00Z INFO order 12345 shipped v1.2.3.4.5 qty=3 price=19.99 host=web-01 uuid=550e8400-e29b-41d4-a716-446655440000";
    match m.mask(clean) {
        MaskResult::Unchanged(s) => assert!(std::ptr::eq(s, clean.as_slice())),
        other => panic!("{other:?}"),
    }
    assert!(m.mask(b"").is_unchanged());
}

#[test]
fn overlapping_matches_mask_once() {
    // A JWT-like header segment also contains "AKIA"? Build an overlap:
    // email whose local part contains an AWS-key-looking run.
    let m = masker(Strategy::Fixed("X".into()));
    assert_eq!(
        m.mask(b"AKIAIOSFODNN7EXAMPLE@corp.com").as_bytes().unwrap(),
        b"X"
    );
    // Custom regex overlapping a built-in: earliest/longest wins, no double mask.
    let m = Masker::new(MaskerConfig {
        detectors: vec![
            DetectorConfig::new(Detector::Email, Strategy::Fixed("E".into())),
            DetectorConfig::new(
                Detector::Custom(CustomDetector {
                    name: "dom".into(),
                    pattern: r"example\.com".into(),
                    validator: Validator::None,
                }),
                Strategy::Fixed("D".into()),
            ),
        ],
        token_key: None,
    })
    .unwrap();
    assert_eq!(
        m.mask(b"a@example.com example.com").as_bytes().unwrap(),
        b"E D"
    );
}

#[test]
fn json_document_bypass() {
    let m = masker(Strategy::Redact);
    let out = m.mask(br#"{"email":"a@b.com","n":1}"#);
    assert_eq!(out.as_bytes().unwrap(), br#"{"email":"a@*.com","n":1}"#);
}

#[test]
fn non_utf8_is_scanned_as_bytes() {
    let m = masker(Strategy::Redact);
    let mut v = vec![0xff, 0xfe, b' '];
    v.extend_from_slice(b"123-45-6789 \xc3");
    assert_eq!(m.mask(&v).as_bytes().unwrap(), b"\xff\xfe ***-**-**** \xc3");
    // Multi-byte UTF-8 neighbours survive intact.
    let s = "é john@example.com ü";
    let out = String::from_utf8(m.mask(s.as_bytes()).as_bytes().unwrap().to_vec()).unwrap();
    assert_eq!(out, "é j***@*******.com ü");
}

#[test]
fn next_digit_matches_naive() {
    let data: Vec<u8> = (0u32..2000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    for start in 0..200 {
        let naive = data[start..]
            .iter()
            .position(u8::is_ascii_digit)
            .map(|p| p + start);
        assert_eq!(next_digit(&data, start), naive);
    }
    let text = b"abcdefghijklmnop/:;@ABC9";
    assert_eq!(next_digit(text, 0), Some(23));
}

#[test]
fn random_inputs_never_panic() {
    // Cheap fuzz: random strings over an alphabet of trigger/punctuation
    // bytes exercise every detector's bounds handling.
    let alphabet = b"0123456789AKISEyJ@.:-+() eE\n-----BEGIN PRIVATE KEY-----GBDE\xff\xc3";
    let masker = masker(Strategy::Redact);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..400 {
        let v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect();
        if let Some(out) = masker.mask(&v).as_bytes() {
            assert!(!out.is_empty() || v.is_empty());
        }
        let hits = masker.find(&v);
        assert!(
            hits.windows(2).all(|w| w[0].end <= w[1].start),
            "overlap in {v:?}"
        );
    }
}

#[test]
fn masker_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Masker>();
}

#[test]
fn mask_into_appends_only_when_masked() {
    let m = masker(Strategy::Redact);
    let mut out = b"keep:".to_vec();
    assert_eq!(
        m.mask_into(b"order 12345 shipped", &mut out),
        Outcome::Unchanged
    );
    assert_eq!(out, b"keep:");
    assert_eq!(
        m.mask_into(b"to john@example.com", &mut out),
        Outcome::Masked
    );
    assert_eq!(out, b"keep:to j***@*******.com");
    let m = masker(Strategy::Null);
    let mut out = Vec::new();
    assert_eq!(m.mask_into(b"ssn 123-45-6789", &mut out), Outcome::Null);
    assert!(out.is_empty());
    // Clean path does not allocate.
    assert_eq!(m.mask_into(b"nothing", &mut out), Outcome::Unchanged);
    assert_eq!(out.capacity(), 0);
}

#[test]
fn empty_masker_and_with_key() {
    let m = Masker::new(MaskerConfig::default()).unwrap();
    assert!(m.is_empty() && !m.has_detectors());
    assert!(masker(Strategy::Redact).has_detectors());
    let mut out = Vec::new();
    assert_eq!(
        m.mask_into(b"john@example.com", &mut out),
        Outcome::Unchanged
    );
    let k = Masker::with_key(Some(b"k".to_vec()));
    assert!(k.is_empty());
    assert_eq!(
        k.mask_whole_into(&Strategy::Tokenize, b"x", &mut out),
        Outcome::Masked
    );
    assert_eq!(out.len(), 4 + 16);
    assert!(out.starts_with(b"tok_"));
}

fn whole(m: &Masker, s: &Strategy, v: &str) -> (Outcome, String) {
    let mut out = Vec::new();
    let r = m.mask_whole_into(s, v.as_bytes(), &mut out);
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn mask_whole_redact_shapes() {
    let m = Masker::with_key(None);
    let r = |v: &str| {
        let (o, s) = whole(&m, &Strategy::Redact, v);
        assert_eq!(o, Outcome::Masked);
        s
    };
    assert_eq!(r("john.doe@example.com"), "j*******@*******.com");
    assert_eq!(r("4111 1111 1111 1111"), "**** **** **** 1111");
    assert_eq!(r("4111-1111-1111"), "****-****-1111");
    assert_eq!(r("Jane Doe, Berlin"), "**** ***, ******");
    assert_eq!(r("Zoë Müller"), "*** ******");
    assert_eq!(r("M/F"), "***");
    assert_eq!(r("+49"), "***");
    assert_eq!(r(""), "");
    // Not a whole-value email: falls back to generic redaction.
    assert_eq!(r("mail: a@b.com"), "****: *@*.***");
    // Invalid UTF-8 is starred per byte and output stays valid UTF-8.
    let mut out = Vec::new();
    m.mask_whole_into(&Strategy::Redact, b"ab \xff\xfe cd", &mut out);
    assert_eq!(out, b"** ** **");
}

#[test]
fn mask_whole_other_strategies() {
    let keyed = Masker::with_key(Some(b"test-key".to_vec()));
    let unkeyed = Masker::with_key(None);
    let (o, t1) = whole(&keyed, &Strategy::Tokenize, "secret");
    assert_eq!(o, Outcome::Masked);
    assert_eq!(whole(&keyed, &Strategy::Tokenize, "secret").1, t1);
    assert_ne!(whole(&keyed, &Strategy::Tokenize, "secret2").1, t1);
    // No key: fail closed.
    assert_eq!(
        whole(&unkeyed, &Strategy::Tokenize, "secret"),
        (Outcome::Null, String::new())
    );
    assert_eq!(
        whole(&keyed, &Strategy::Null, "secret"),
        (Outcome::Null, String::new())
    );
    assert_eq!(
        whole(&keyed, &Strategy::Fixed("[x]".into()), "secret"),
        (Outcome::Masked, "[x]".to_owned())
    );
}

#[test]
fn cards_grouped_by_dots_are_found_but_versions_and_dates_are_not() {
    one(
        "card 4111.1111.1111.1111 on file",
        "payment_card",
        "4111.1111.1111.1111",
    );
    none("release 2024.01.15 and build 20240115.1234.99");
}

/// Arbitrary bytes (random, and random mixes of the characters the parsers care about)
/// never panic any entry point: masking runs on data the gateway does not control.
#[test]
fn arbitrary_input_never_panics() {
    let m = masker(Strategy::Tokenize);
    let keys = JsonKeys::new(vec![
        ("pass*".to_string(), Strategy::Redact),
        ("n".to_string(), Strategy::Null),
    ]);
    let alphabet: &[u8] =
        b"{}[]\":,\\ \t\n\r0123456789abcdefAKIAeyJ.-@+=/_xN-----BEGIN \xc3\xa9\xff";
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let len = (next() % 120) as usize;
        let value: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if round % 2 == 0 {
                    (r & 0xff) as u8
                } else {
                    alphabet[(r as usize) % alphabet.len()]
                }
            })
            .collect();
        let mut out = Vec::new();
        let _ = m.mask_into(&value, &mut out);
        let _ = m.mask_whole_into(&Strategy::Redact, &value, &mut out);
        let _ = m.mask_whole_into(&Strategy::Tokenize, &value, &mut out);
        let _ = mask_json_into(&m, &keys, &value, &mut out);
        let _ = mask_copy_line_into(&m, &value, false, &mut out);
        let _ = mask_copy_line_into(&m, &value, true, &mut out);
        let _ = mask_encoded_into(&m, &value, &mut out);
        let _ = mask_bytea_hex_into(&m, &value, &mut out);
        let _ = mask_encoded_whole_into(&m, &Strategy::Redact, &value, &mut out);
    }
}

#[test]
fn international_phones_with_separators_and_spaced_ssns() {
    one("call +1-415-555-0101 now", "phone", "+1-415-555-0101");
    one("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958");
    one("call +1 (415) 555-0101", "phone", "+1 (415) 555-0101");
    one("ssn 123 45 6789.", "us_ssn", "123 45 6789");
    none("version +1.2 and +3-4 and score 123 45 678");
}
