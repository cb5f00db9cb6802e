//! QUIC endpoint, server and client configuration.
//!
//! Tuned for bulk tensors (see STACK.md): large stream and connection flow
//! control windows, UDP payloads and the MTU discovery upper bound raised so
//! that loopback and jumbo-frame links carry large datagrams (the initial MTU
//! is left at quinn's default: raising it can hang the handshake), generic
//! segmentation offload off (large datagrams beat GSO batches on loopback),
//! large socket buffers, flow-control windows that fit in the receive buffer
//! the kernel grants, keep-alive and an idle timeout.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;

use super::identity::Identity;
use super::verify::PinnedCertificateVerifier;
use crate::{Fingerprint, ProtocolError};

/// Knobs of the QUIC transport.
#[derive(Debug, Clone)]
pub struct TransportTuning {
    /// Flow-control window of one stream, bytes (at most; see
    /// [`fitted_window`]).
    pub stream_window: u32,
    /// Flow-control window of one connection, bytes (at most; see
    /// [`fitted_window`]).
    pub connection_window: u32,
    /// Largest UDP payload the endpoint accepts and MTU discovery aims for.
    pub max_udp_payload: u16,
    /// Socket send and receive buffer size, bytes (the kernel may cap it).
    pub socket_buffer_bytes: usize,
    /// Interval of keep-alive packets.
    pub keep_alive: Duration,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for TransportTuning {
    fn default() -> Self {
        Self {
            stream_window: 16 << 20,
            connection_window: 32 << 20,
            max_udp_payload: 65_000,
            socket_buffer_bytes: 8 << 20,
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

fn configuration_error(error: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Configuration {
        reason: error.to_string(),
    }
}

/// The ring provider with AES-128-GCM preferred: QUIC encrypts every
/// packet of a tensor transfer, and AES-128 runs 10 rounds per block where
/// AES-256 runs 14 (on loopback the difference was within the noise of
/// `shoal bench allreduce`: BENCHMARKS.md, all-reduce). The other TLS 1.3
/// suites stay acceptable, after it.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// The flow-control window to announce when the socket's receive buffer
/// holds `granted_receive_buffer` bytes of the kernel's accounting: at most
/// `configured`, and at most half the buffer.
///
/// A window is what a peer may send before we read. Where it exceeds what
/// the socket can queue, a receiver that is briefly not scheduled (four
/// workers on two cores, or a busy host) makes the kernel drop datagrams,
/// and every drop costs a retransmission and a cut of the congestion
/// window (BENCHMARKS.md, "Measurements of session 8": 1,000-1,500 drops
/// per 4-worker `bench allreduce` run with 32 MiB windows and a 4 MiB
/// `net.core.rmem_max`, none with fitted windows). Linux
/// reports twice the bytes requested (payload plus bookkeeping); half of
/// the report leaves room for the bookkeeping of small datagrams and for
/// the other traffic of the socket (acknowledgements, the other ring
/// neighbour, control streams).
pub fn fitted_window(configured: u32, granted_receive_buffer: usize) -> u32 {
    let half = u32::try_from(granted_receive_buffer / 2).unwrap_or(u32::MAX);
    configured.min(half.max(MINIMUM_WINDOW))
}

/// What `getsockopt(SO_RCVBUF)` reports per byte set: Linux doubles the
/// request to budget for its bookkeeping.
const REPORTED_PER_REQUESTED_BYTE: usize = if cfg!(target_os = "linux") { 2 } else { 1 };

/// The smallest window [`fitted_window`] announces whatever the buffer: a
/// few full-size datagrams, so that a tiny buffer slows a transfer down
/// rather than stopping it.
pub const MINIMUM_WINDOW: u32 = 256 << 10;

/// What the kernel grants a UDP socket that asks for `requested` bytes of
/// receive buffer, as `getsockopt(SO_RCVBUF)` reports it (Linux caps the
/// request at `net.core.rmem_max` and reports twice the result), read off
/// a socket made for the purpose. `None` when no socket could be made.
pub fn granted_receive_buffer(requested: usize) -> Option<usize> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .ok()?;
    let _ = socket.set_recv_buffer_size(requested);
    socket.recv_buffer_size().ok()
}

fn transport_config(tuning: &TransportTuning) -> Result<quinn::TransportConfig, ProtocolError> {
    let granted =
        granted_receive_buffer(tuning.socket_buffer_bytes).unwrap_or(tuning.socket_buffer_bytes);
    let stream_window = fitted_window(tuning.stream_window, granted);
    let connection_window = fitted_window(tuning.connection_window, granted);
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(stream_window.into())
        .receive_window(connection_window.into())
        .send_window(u64::from(tuning.connection_window))
        .keep_alive_interval(Some(tuning.keep_alive))
        .max_idle_timeout(Some(
            tuning
                .idle_timeout
                .try_into()
                .map_err(configuration_error)?,
        ))
        .enable_segmentation_offload(false);
    let mut mtu_discovery = quinn::MtuDiscoveryConfig::default();
    mtu_discovery.upper_bound(tuning.max_udp_payload);
    transport.mtu_discovery_config(Some(mtu_discovery));
    Ok(transport)
}

/// Server configuration for the coordinator: any client may complete the
/// handshake; it then proves itself with the join token's secret.
pub fn server_config(
    identity: &Identity,
    tuning: &TransportTuning,
) -> Result<quinn::ServerConfig, ProtocolError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(configuration_error)?
        .with_no_client_auth()
        .with_single_cert(vec![identity.certificate()], identity.private_key())
        .map_err(configuration_error)?;
    tls.alpn_protocols = vec![super::ALPN.to_vec()];
    finish_server(tls, tuning)
}

/// Server configuration for a worker's ring endpoint: only clients whose
/// certificates have one of the `allowed_peers` fingerprints (learnt from the
/// coordinator's ring membership) complete the handshake.
pub fn peer_server_config(
    identity: &Identity,
    allowed_peers: Vec<Fingerprint>,
    tuning: &TransportTuning,
) -> Result<quinn::ServerConfig, ProtocolError> {
    let verifier = PinnedCertificateVerifier::new(allowed_peers, provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(configuration_error)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![identity.certificate()], identity.private_key())
        .map_err(configuration_error)?;
    tls.alpn_protocols = vec![super::ALPN.to_vec()];
    finish_server(tls, tuning)
}

fn finish_server(
    tls: rustls::ServerConfig,
    tuning: &TransportTuning,
) -> Result<quinn::ServerConfig, ProtocolError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(configuration_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(tuning)?));
    Ok(config)
}

/// Client configuration that accepts only a server whose certificate has the
/// fingerprint `server`, presenting `own` as client certificate if given
/// (ring connections between workers do; connections to the coordinator do not).
pub fn client_config(
    server: Fingerprint,
    own: Option<&Identity>,
    tuning: &TransportTuning,
) -> Result<quinn::ClientConfig, ProtocolError> {
    let verifier = PinnedCertificateVerifier::new(vec![server], provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(configuration_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut tls = match own {
        Some(identity) => builder
            .with_client_auth_cert(vec![identity.certificate()], identity.private_key())
            .map_err(configuration_error)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![super::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(configuration_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(tuning)?));
    Ok(config)
}

/// Binds a QUIC endpoint on `address` (port 0 for any), as a server too if
/// `server` is given. Must be called inside a tokio runtime.
pub fn bind_endpoint(
    address: SocketAddr,
    server: Option<quinn::ServerConfig>,
    tuning: &TransportTuning,
) -> Result<quinn::Endpoint, ProtocolError> {
    let bind_error = |source: std::io::Error| ProtocolError::Bind {
        address: address.to_string(),
        source,
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_error)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max; the
    // flow-control windows are fitted to what it grants (`fitted_window`).
    let _ = socket.set_recv_buffer_size(tuning.socket_buffer_bytes);
    let _ = socket.set_send_buffer_size(tuning.socket_buffer_bytes);
    if let Ok(granted) = socket.recv_buffer_size()
        && granted < REPORTED_PER_REQUESTED_BYTE.saturating_mul(tuning.socket_buffer_bytes)
    {
        tracing::info!(
            requested = tuning.socket_buffer_bytes,
            granted = granted / REPORTED_PER_REQUESTED_BYTE,
            "the kernel capped the UDP receive buffer (net.core.rmem_max): \
             the flow-control windows shrink to fit it"
        );
    }
    socket.bind(&address.into()).map_err(bind_error)?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(tuning.max_udp_payload)
        .map_err(configuration_error)?;
    let runtime = quinn::default_runtime().ok_or_else(|| ProtocolError::Configuration {
        reason: "no async runtime: bind_endpoint must run inside tokio".into(),
    })?;
    quinn::Endpoint::new(endpoint_config, server, socket.into(), runtime).map_err(bind_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fit_in_half_the_granted_buffer() {
        // (configured, granted, announced)
        let cases = [
            (32 << 20, 8 << 20, 4 << 20),
            (16 << 20, 8 << 20, 4 << 20),
            (2 << 20, 8 << 20, 2 << 20),
            (32 << 20, 425_984, 256 << 10),
            (32 << 20, 0, MINIMUM_WINDOW),
            (100 << 10, 0, 100 << 10),
            (u32::MAX, usize::MAX, u32::MAX),
        ];
        for (configured, granted, announced) in cases {
            assert_eq!(
                fitted_window(configured, granted),
                announced,
                "configured {configured}, granted {granted}"
            );
        }
    }

    #[test]
    fn the_kernel_reports_a_receive_buffer() {
        let granted = granted_receive_buffer(1 << 20).expect("a UDP socket");
        assert!(granted > 0, "granted {granted}");
    }
}
