//! Certificates and keys: generated with rcgen, stored as DER files.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Fingerprint, JoinToken, ProtocolError};

/// File name of the certificate in a data directory.
pub const CERTIFICATE_FILE: &str = "quic-cert.der";
/// File name of the private key in a data directory.
pub const KEY_FILE: &str = "quic-key.der";

/// A self-signed certificate with its key and fingerprint.
pub struct Identity {
    certificate: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh self-signed certificate (ECDSA P-256) for the name `shoal`.
    pub fn generate() -> Result<Self, ProtocolError> {
        let certified = rcgen::generate_simple_self_signed(vec![super::SERVER_NAME.to_string()])
            .map_err(|error| ProtocolError::CertificateGeneration {
                reason: error.to_string(),
            })?;
        Ok(Self::from_der(
            certified.cert.der().to_vec(),
            certified.signing_key.serialize_der(),
        ))
    }

    /// Builds an identity from a DER certificate and a PKCS#8 DER key.
    pub fn from_der(certificate: Vec<u8>, key_pkcs8: Vec<u8>) -> Self {
        let fingerprint = Fingerprint::of_certificate(&certificate);
        Self {
            certificate: CertificateDer::from(certificate),
            key_pkcs8,
            fingerprint,
        }
    }

    /// Loads the identity kept in `directory`, or creates and stores one there
    /// (the key file readable by its owner only). Refuses a directory holding
    /// only one of the two files rather than overwriting it.
    pub fn load_or_create(directory: &Path) -> Result<Self, ProtocolError> {
        let certificate_path = directory.join(CERTIFICATE_FILE);
        let key_path = directory.join(KEY_FILE);
        let store_error = |path: &Path, reason: String| ProtocolError::CertificateStore {
            path: path.to_path_buf(),
            reason,
        };
        match (certificate_path.exists(), key_path.exists()) {
            (true, true) => {
                let certificate = fs::read(&certificate_path)
                    .map_err(|error| store_error(&certificate_path, error.to_string()))?;
                let key = fs::read(&key_path)
                    .map_err(|error| store_error(&key_path, error.to_string()))?;
                let identity = Self::from_der(certificate, key);
                identity
                    .check_key()
                    .map_err(|reason| store_error(&key_path, reason))?;
                Ok(identity)
            }
            (false, false) => {
                fs::create_dir_all(directory)
                    .map_err(|error| store_error(directory, error.to_string()))?;
                let identity = Self::generate()?;
                write_private(&key_path, &identity.key_pkcs8)?;
                write_private(&certificate_path, &identity.certificate)?;
                tracing::info!(
                    fingerprint = %identity.fingerprint,
                    directory = %directory.display(),
                    "created a QUIC certificate"
                );
                Ok(identity)
            }
            (true, false) => Err(store_error(
                &key_path,
                "the certificate exists but its key is missing".into(),
            )),
            (false, true) => Err(store_error(
                &certificate_path,
                "the key exists but its certificate is missing".into(),
            )),
        }
    }

    fn check_key(&self) -> Result<(), String> {
        rustls::crypto::ring::sign::any_supported_type(&self.private_key())
            .map(|_| ())
            .map_err(|error| format!("not a usable private key: {error}"))
    }

    /// SHA-256 fingerprint of the certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The certificate, DER.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.certificate.clone()
    }

    /// The private key, PKCS#8 DER.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ProtocolError> {
    let error = |reason: String| ProtocolError::CertificateStore {
        path: path.to_path_buf(),
        reason,
    };
    let temporary: PathBuf = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary).map_err(|e| error(e.to_string()))?;
    file.write_all(bytes).map_err(|e| error(e.to_string()))?;
    file.sync_all().map_err(|e| error(e.to_string()))?;
    fs::rename(&temporary, path).map_err(|e| error(e.to_string()))?;
    Ok(())
}

/// A join token for a coordinator with `identity`, with a fresh 256-bit
/// secret from the crypto provider's random source.
pub fn generate_join_token(
    identity: &Identity,
    address: Option<String>,
) -> Result<JoinToken, ProtocolError> {
    let mut secret = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut secret)
        .map_err(|_| ProtocolError::Configuration {
            reason: "the system random source failed".into(),
        })?;
    Ok(JoinToken {
        fingerprint: identity.fingerprint(),
        secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        address,
    })
}
