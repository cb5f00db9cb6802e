//! Join tokens: formatting, parsing, refusals, and the secret comparison.
use protocol::token::{JoinToken, secrets_equal};
use protocol::{Fingerprint, ProtocolError};

fn fingerprint() -> Fingerprint {
    Fingerprint::of_certificate(b"not really a certificate")
}

#[test]
fn tokens_round_trip_with_and_without_address() {
    for address in [
        None,
        Some("coordinator.local:7000".to_string()),
        Some("[::1]:7000".into()),
    ] {
        let token = JoinToken {
            fingerprint: fingerprint(),
            secret: "abcdefghijklmnopqrstuvwxyz_-0123".into(),
            address,
        };
        let text = token.to_string();
        assert!(text.starts_with("shoal1."));
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
        assert!(
            !format!("{token:?}").contains("abcdefghijklmnop"),
            "Debug must redact the secret"
        );
    }
}

#[track_caller]
fn check_refused(text: &str, fragment: &str) {
    match text.parse::<JoinToken>() {
        Err(ProtocolError::MalformedToken { reason }) => {
            assert!(
                reason.contains(fragment),
                "{text:?}: reason {reason:?} lacks {fragment:?}"
            )
        }
        other => panic!("{text:?}: expected a malformed-token error, got {other:?}"),
    }
}

#[test]
fn malformed_tokens_say_what_is_wrong() {
    let fp = fingerprint().to_string();
    let secret = "A".repeat(22);
    check_refused("", "prefix");
    check_refused(&format!("shoal2.{fp}.{secret}"), "prefix");
    check_refused("shoal1", "fingerprint");
    check_refused(&format!("shoal1.{}.{secret}", &fp[..60]), "64 hex digits");
    check_refused(&format!("shoal1.{fp}"), "missing the secret");
    check_refused(&format!("shoal1.{fp}.short"), "at least 22");
    check_refused(&format!("shoal1.{fp}.{secret}!"), "URL-safe");
    check_refused(&format!("shoal1.{fp}.{secret}@"), "empty address");
}

#[test]
fn secrets_compare_exactly() {
    assert!(secrets_equal("abc", "abc"));
    assert!(!secrets_equal("abc", "abd"));
    assert!(!secrets_equal("abc", "abcd"));
    assert!(!secrets_equal("", "a"));
}
