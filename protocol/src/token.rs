//! Certificate fingerprints and the join token (pure: parsing, formatting and
//! a constant-time secret comparison; generation lives in [`crate::transport`]).
//!
//! A join token reads `shoal1.<fingerprint>.<secret>` or
//! `shoal1.<fingerprint>.<secret>@<host:port>`: the SHA-256 fingerprint of the
//! coordinator's certificate in lower-case hex (64 digits), then the secret in
//! URL-safe base64 (at least 22 characters, 128 bits), then optionally the
//! coordinator's address. Workers pin the certificate by the fingerprint (in
//! the spirit of `kubeadm join --discovery-token-ca-cert-hash`) and prove they
//! may join with the secret.
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::ProtocolError;

/// Prefix naming the token format.
const TOKEN_PREFIX: &str = "shoal1";
/// Shortest secret accepted, in base64 characters (128 bits).
pub const MIN_SECRET_CHARS: usize = 22;

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = ProtocolError;

    fn from_str(text: &str) -> Result<Self, ProtocolError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|error| ProtocolError::MalformedToken {
            reason: format!("fingerprint {text:?} is not 64 hex digits: {error}"),
        })?;
        Ok(Self(bytes))
    }
}

/// What a worker needs to join a coordinator.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Fingerprint of the coordinator's certificate.
    pub fingerprint: Fingerprint,
    /// Shared secret proving the worker may join.
    pub secret: String,
    /// Coordinator address (`host:port`), if carried by the token.
    pub address: Option<String>,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("JoinToken")
            .field("fingerprint", &self.fingerprint)
            .field("secret", &"<redacted>")
            .field("address", &self.address)
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{TOKEN_PREFIX}.{}.{}",
            self.fingerprint, self.secret
        )?;
        if let Some(address) = &self.address {
            write!(formatter, "@{address}")?;
        }
        Ok(())
    }
}

impl FromStr for JoinToken {
    type Err = ProtocolError;

    fn from_str(text: &str) -> Result<Self, ProtocolError> {
        let malformed = |reason: String| ProtocolError::MalformedToken { reason };
        let text = text.trim();
        let (body, address) = match text.split_once('@') {
            Some((body, address)) if !address.is_empty() => (body, Some(address.to_string())),
            Some(_) => return Err(malformed("empty address after '@'".into())),
            None => (text, None),
        };
        let mut parts = body.splitn(3, '.');
        let prefix = parts.next().unwrap_or_default();
        if prefix != TOKEN_PREFIX {
            return Err(malformed(format!(
                "expected the prefix {TOKEN_PREFIX:?}, found {prefix:?}"
            )));
        }
        let fingerprint: Fingerprint = parts
            .next()
            .ok_or_else(|| malformed("missing the certificate fingerprint".into()))?
            .parse()?;
        let secret = parts
            .next()
            .ok_or_else(|| malformed("missing the secret".into()))?;
        if secret.len() < MIN_SECRET_CHARS {
            return Err(malformed(format!(
                "secret has {} characters, at least {MIN_SECRET_CHARS} are required",
                secret.len()
            )));
        }
        if let Some(bad) = secret
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(malformed(format!(
                "secret contains {bad:?}, only URL-safe base64 is allowed"
            )));
        }
        Ok(Self {
            fingerprint,
            secret: secret.to_string(),
            address,
        })
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn secrets_equal(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    if given.len() != expected.len() {
        return false;
    }
    let difference = given
        .iter()
        .zip(expected)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b));
    std::hint::black_box(difference) == 0
}
