//! Secrets on disk: the API bearer token (created on first start under the
//! data directory) and its constant-time check.
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{CoordinatorError, Result};

/// A fresh random token: 32 bytes from the operating system, in hex.
pub fn generate_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| CoordinatorError::BadToken {
        what: "generation".to_string(),
        problem: format!("the operating system's random source failed: {error}"),
    })?;
    Ok(hex::encode(bytes))
}

/// How a token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Given on the command line or in the environment.
    Given,
    /// Read from its file.
    File,
    /// Generated now and written to its file.
    Created,
}

/// The token at `path`: `given` if set (not written anywhere), else the
/// file's content, else a new token written to the file (mode 0600).
pub fn load_or_create(path: &Path, given: Option<&str>) -> Result<(String, TokenSource)> {
    if let Some(token) = given {
        let token = token.trim();
        if token.is_empty() {
            return Err(CoordinatorError::BadToken {
                what: path.display().to_string(),
                problem: "the given token is empty".to_string(),
            });
        }
        return Ok((token.to_string(), TokenSource::Given));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                return Err(CoordinatorError::BadToken {
                    what: path.display().to_string(),
                    problem: "the file is empty (delete it to create a new token)".to_string(),
                });
            }
            Ok((token.to_string(), TokenSource::File))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let token = generate_token()?;
            write_secret(path, &token)?;
            Ok((token, TokenSource::Created))
        }
        Err(source) => Err(CoordinatorError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `secret` and a newline to a new file at `path`, readable by its
/// owner only.
pub fn write_secret(path: &Path, secret: &str) -> Result<()> {
    let io_error = |source| CoordinatorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(secret.as_bytes()).map_err(io_error)?;
    file.write_all(b"\n").map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// The API bearer token, compared in constant time.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// Wraps the secret.
    pub fn new(secret: &str) -> ApiToken {
        ApiToken {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token. Both sides are hashed first, so
    /// the comparison takes the same time whatever the length or the first
    /// differing byte.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let difference = self
            .digest
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0
    }
}

/// The join token at `path` for a coordinator whose certificate has
/// `fingerprint`: `given` if set (it must carry that fingerprint), else the
/// file's token (same check), else a new one (fresh secret, `address` if
/// workers should find the coordinator through the token) written to the
/// file. A token made for another certificate is refused: delete the file.
pub fn load_or_create_join_token(
    path: &Path,
    identity: &protocol::transport::Identity,
    address: Option<String>,
    given: Option<&str>,
) -> Result<(protocol::JoinToken, TokenSource)> {
    let bad = |problem: String| CoordinatorError::BadToken {
        what: path.display().to_string(),
        problem,
    };
    let check = |text: &str, source: TokenSource| {
        let token: protocol::JoinToken = text
            .trim()
            .parse()
            .map_err(|error| bad(format!("not a join token: {error}")))?;
        if token.fingerprint != identity.fingerprint() {
            return Err(bad(format!(
                "the join token pins certificate {}, but this coordinator's is {} (delete the join-token file to make a new token)",
                token.fingerprint,
                identity.fingerprint()
            )));
        }
        Ok((token, source))
    };
    if let Some(text) = given {
        return check(text, TokenSource::Given);
    }
    match std::fs::read_to_string(path) {
        Ok(text) => check(&text, TokenSource::File),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let token = protocol::transport::generate_join_token(identity, address)
                .map_err(|error| bad(error.to_string()))?;
            write_secret(path, &token.to_string())?;
            Ok((token, TokenSource::Created))
        }
        Err(source) => Err(CoordinatorError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}
