//! The registration handshake: the worker opens a bidirectional stream and
//! sends [`WorkerMessage::Register`] with the join token's secret; the
//! coordinator compares it in constant time and answers `Registered` or
//! `Refused` (then closes that connection with [`super::CLOSE_REFUSED`]).
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::config::{TransportTuning, client_config};
use super::stream::{FrameReader, close_for_protocol_error, write_frame};
use crate::message::{CoordinatorMessage, Register, WorkerMessage};
use crate::token::secrets_equal;
use crate::{JoinToken, ProtocolError};

/// Longest wait for a refused worker to read its refusal.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// A worker's side of an accepted registration.
#[derive(Debug)]
pub struct Registration {
    /// Connection to the coordinator.
    pub connection: quinn::Connection,
    /// Control stream towards the coordinator.
    pub send: quinn::SendStream,
    /// Control stream from the coordinator.
    pub reader: FrameReader<CoordinatorMessage>,
    /// Identifier the coordinator gave this worker.
    pub worker_id: u64,
    /// Heartbeat interval asked by the coordinator, milliseconds.
    pub heartbeat_interval_ms: u64,
}

/// The coordinator's side of an accepted registration.
#[derive(Debug)]
pub struct RegisteredWorker {
    /// Connection to the worker.
    pub connection: quinn::Connection,
    /// Control stream towards the worker.
    pub send: quinn::SendStream,
    /// Control stream from the worker.
    pub reader: FrameReader<WorkerMessage>,
    /// What the worker said about itself (the secret is cleared).
    pub register: Register,
}

async fn within<T>(
    timeout: Duration,
    what: &'static str,
    future: impl Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| ProtocolError::Timeout {
            what,
            after_ms: timeout.as_millis() as u64,
        })?
}

/// Connects to the coordinator at `address` (pinning the token's fingerprint)
/// and registers. A wrong secret gives [`ProtocolError::Refused`]; a server
/// with another certificate gives [`ProtocolError::Connect`].
pub async fn connect_and_register(
    endpoint: &quinn::Endpoint,
    address: SocketAddr,
    token: &JoinToken,
    mut register: Register,
    tuning: &TransportTuning,
    timeout: Duration,
) -> Result<Registration, ProtocolError> {
    register.secret = token.secret.clone();
    let config = client_config(token.fingerprint, None, tuning)?;
    let connect_error = |reason: String| ProtocolError::Connect {
        address: address.to_string(),
        reason,
    };
    let connection = within(timeout, "the coordinator's handshake", async {
        endpoint
            .connect_with(config, address, super::SERVER_NAME)
            .map_err(|error| connect_error(error.to_string()))?
            .await
            .map_err(|error| {
                let reason = error.to_string();
                if reason.contains("FingerprintMismatch") {
                    connect_error(format!(
                        "the server's certificate is not the one pinned by the join token ({reason})"
                    ))
                } else {
                    connect_error(reason)
                }
            })
    })
    .await?;
    let refused = |error: ProtocolError| match &error {
        ProtocolError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == super::CLOSE_REFUSED.into() =>
        {
            ProtocolError::Refused {
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        ProtocolError::Write(quinn::WriteError::ConnectionLost(lost))
        | ProtocolError::Read(quinn::ReadError::ConnectionLost(lost)) => match lost {
            quinn::ConnectionError::ApplicationClosed(close)
                if close.error_code == super::CLOSE_REFUSED.into() =>
            {
                ProtocolError::Refused {
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                }
            }
            _ => error,
        },
        _ => error,
    };
    let answer = within(timeout, "the coordinator's answer to register", async {
        let (mut send, recv) = connection.open_bi().await?;
        write_frame(&mut send, &WorkerMessage::Register(register), Bytes::new()).await?;
        let mut reader = FrameReader::<CoordinatorMessage>::new(recv);
        let frame = reader.expect("the answer to register").await?;
        Ok((send, reader, frame.message))
    })
    .await
    .map_err(refused)?;
    let (send, reader, message) = answer;
    match message {
        CoordinatorMessage::Registered {
            worker_id,
            heartbeat_interval_ms,
        } => Ok(Registration {
            connection,
            send,
            reader,
            worker_id,
            heartbeat_interval_ms,
        }),
        CoordinatorMessage::Refused { reason } => {
            connection.close(super::CLOSE_NORMAL.into(), b"refused");
            Err(ProtocolError::Refused { reason })
        }
        other => Err(ProtocolError::UnexpectedMessage {
            expected: "Registered or Refused",
            got: format!("{other:?}"),
        }),
    }
}

/// Completes the handshake of an incoming connection and checks its
/// registration against `secret`. On a wrong secret or a protocol error the
/// connection is closed with a logged reason and the error returned; the
/// endpoint keeps serving other connections.
pub async fn accept_registration(
    incoming: quinn::Incoming,
    secret: &str,
    worker_id: u64,
    heartbeat_interval_ms: u64,
    timeout: Duration,
) -> Result<RegisteredWorker, ProtocolError> {
    let peer = incoming.remote_address();
    let connection = within(timeout, "a worker's handshake", async {
        incoming.await.map_err(|error| ProtocolError::Connect {
            address: peer.to_string(),
            reason: error.to_string(),
        })
    })
    .await?;
    let first = within(timeout, "a worker's register message", async {
        let (send, recv) = connection.accept_bi().await?;
        let mut reader = FrameReader::<WorkerMessage>::new(recv);
        let frame = reader.expect("register").await?;
        Ok((send, reader, frame.message))
    })
    .await;
    let (mut send, reader, message) = match first {
        Ok(first) => first,
        Err(error) => {
            close_for_protocol_error(&connection, &error);
            return Err(error);
        }
    };
    let mut register = match message {
        WorkerMessage::Register(register) => register,
        other => {
            let error = ProtocolError::UnexpectedMessage {
                expected: "Register",
                got: format!("{other:?}"),
            };
            close_for_protocol_error(&connection, &error);
            return Err(error);
        }
    };
    if !secrets_equal(&register.secret, secret) {
        let reason = "wrong join token secret".to_string();
        tracing::warn!(%peer, name = %register.name, "refused a worker: {reason}");
        let _ = write_frame(
            &mut send,
            &CoordinatorMessage::Refused {
                reason: reason.clone(),
            },
            Bytes::new(),
        )
        .await;
        // Let the worker read the refusal before closing (bounded wait: a
        // worker that never reads does not hold the connection open).
        let _ = send.finish();
        let _ = tokio::time::timeout(timeout.min(REFUSAL_LINGER), send.stopped()).await;
        connection.close(super::CLOSE_REFUSED.into(), reason.as_bytes());
        return Err(ProtocolError::Refused { reason });
    }
    register.secret.clear();
    write_frame(
        &mut send,
        &CoordinatorMessage::Registered {
            worker_id,
            heartbeat_interval_ms,
        },
        Bytes::new(),
    )
    .await?;
    Ok(RegisteredWorker {
        connection,
        send,
        reader,
        register,
    })
}
