//! The QUIC transport over loopback: certificate store, registration with the
//! join token, pinning, and a live endpoint that keeps serving well-behaved
//! workers while garbage arrives (UDP noise, bad frames on an authenticated
//! stream, wrong tokens).
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use protocol::message::{CoordinatorMessage, Heartbeat, Register, WorkerMessage};
use protocol::transport::{
    self, Identity, TransportTuning, accept_registration, bind_endpoint, close_for_protocol_error,
    connect_and_register, generate_join_token, server_config, write_frame,
};
use protocol::{JoinToken, ProtocolError};

const TIMEOUT: Duration = Duration::from_secs(5);

fn register() -> Register {
    Register {
        secret: String::new(),
        name: "test-worker".into(),
        peer_address: "127.0.0.1:1".into(),
        peer_fingerprint: "00".repeat(32),
        cores: 2,
        memory_bytes: 1 << 30,
    }
}

/// A minimal coordinator: registers workers, answers heartbeats, closes a
/// connection that breaks the protocol, and goes on serving.
fn spawn_server(identity: &Identity, secret: String) -> (quinn::Endpoint, SocketAddr) {
    let tuning = TransportTuning::default();
    let config = server_config(identity, &tuning).unwrap();
    let endpoint = bind_endpoint("127.0.0.1:0".parse().unwrap(), Some(config), &tuning).unwrap();
    let address = endpoint.local_addr().unwrap();
    let server = endpoint.clone();
    tokio::spawn(async move {
        let mut next_id = 1;
        while let Some(incoming) = server.accept().await {
            let secret = secret.clone();
            next_id += 1;
            let worker_id = next_id;
            tokio::spawn(async move {
                let Ok(mut worker) =
                    accept_registration(incoming, &secret, worker_id, 1000, TIMEOUT).await
                else {
                    return;
                };
                loop {
                    match worker.reader.next().await {
                        Ok(Some(frame)) => {
                            if let WorkerMessage::Heartbeat(heartbeat) = frame.message {
                                let ack = CoordinatorMessage::HeartbeatAck {
                                    sequence: heartbeat.sequence,
                                };
                                if write_frame(&mut worker.send, &ack, Bytes::new())
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                        Ok(None) => return,
                        Err(error) => {
                            close_for_protocol_error(&worker.connection, &error);
                            return;
                        }
                    }
                }
            });
        }
    });
    (endpoint, address)
}

fn client_endpoint() -> quinn::Endpoint {
    bind_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        None,
        &TransportTuning::default(),
    )
    .unwrap()
}

/// Registers with `token` and checks that a heartbeat is acknowledged.
async fn register_and_heartbeat(
    address: SocketAddr,
    token: &JoinToken,
) -> Result<u64, ProtocolError> {
    let endpoint = client_endpoint();
    let mut registration = connect_and_register(
        &endpoint,
        address,
        token,
        register(),
        &TransportTuning::default(),
        TIMEOUT,
    )
    .await?;
    let heartbeat = WorkerMessage::Heartbeat(Heartbeat {
        sequence: 41,
        job_id: None,
        step: None,
    });
    write_frame(&mut registration.send, &heartbeat, Bytes::new()).await?;
    let frame = registration.reader.expect("a heartbeat ack").await?;
    assert_eq!(
        frame.message,
        CoordinatorMessage::HeartbeatAck { sequence: 41 }
    );
    Ok(registration.worker_id)
}

#[test]
fn the_certificate_is_created_once_and_kept() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("coordinator");
    let first = Identity::load_or_create(&data).unwrap();
    let second = Identity::load_or_create(&data).unwrap();
    assert_eq!(first.fingerprint(), second.fingerprint());
    std::fs::remove_file(data.join(transport::identity::KEY_FILE)).unwrap();
    match Identity::load_or_create(&data) {
        Err(ProtocolError::CertificateStore { path, reason }) => {
            assert!(path.ends_with(transport::identity::KEY_FILE));
            assert!(reason.contains("key is missing"), "{reason}");
        }
        other => panic!("expected a certificate-store error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_refused_and_the_server_keeps_serving() {
    let identity = Identity::generate().unwrap();
    let token = generate_join_token(&identity, None).unwrap();
    let (_server, address) = spawn_server(&identity, token.secret.clone());

    assert!(register_and_heartbeat(address, &token).await.is_ok());

    let mut wrong_secret = token.clone();
    wrong_secret.secret = "x".repeat(43);
    match register_and_heartbeat(address, &wrong_secret).await {
        Err(ProtocolError::Refused { reason }) => {
            assert!(reason.contains("wrong join token"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A token pinning another certificate: the worker refuses the server.
    let mut wrong_fingerprint = token.clone();
    wrong_fingerprint.fingerprint = Identity::generate().unwrap().fingerprint();
    match register_and_heartbeat(address, &wrong_fingerprint).await {
        Err(ProtocolError::Connect { reason, .. }) => {
            assert!(reason.contains("pinned by the join token"), "{reason}")
        }
        other => panic!("expected a pinning failure, got {other:?}"),
    }

    assert!(register_and_heartbeat(address, &token).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_does_not_stop_the_endpoint() {
    let identity = Identity::generate().unwrap();
    let token = generate_join_token(&identity, None).unwrap();
    let (_server, address) = spawn_server(&identity, token.secret.clone());

    // UDP noise at the QUIC port, deterministic pseudo-random bytes.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    for round in 0..200 {
        let len = 1 + (round * 37) % 1400;
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        socket.send_to(&datagram, address).unwrap();
    }
    assert!(register_and_heartbeat(address, &token).await.is_ok());

    // Garbage frames on an authenticated stream: the server closes that
    // connection with a protocol-error code and a reason.
    for garbage in [
        vec![0xff; 64],                                   // oversized length prefix
        vec![10, 0, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0], // unknown version
        vec![7, 0, 0, 0, 1, 0, 1, 0, 0, 0, 250],          // undecodable message
    ] {
        let endpoint = client_endpoint();
        let mut registration = connect_and_register(
            &endpoint,
            address,
            &token,
            register(),
            &TransportTuning::default(),
            TIMEOUT,
        )
        .await
        .unwrap();
        registration.send.write_all(&garbage).await.unwrap();
        let closed = tokio::time::timeout(TIMEOUT, registration.connection.closed())
            .await
            .unwrap();
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, transport::CLOSE_PROTOCOL_ERROR.into());
                assert!(!close.reason.is_empty());
            }
            other => panic!("expected an application close, got {other:?}"),
        }
    }
    assert!(register_and_heartbeat(address, &token).await.is_ok());
}
