//! A small HTTP client of the API, for the `shoal submit/jobs/job/cancel/
//! workers` commands and for tests. It speaks HTTP/1.1 over plain TCP with
//! hyper's connection-level client (already built for axum), one
//! connection per request.
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::{CoordinatorError, Result};
use crate::job::JobId;
use crate::spec::SpecFormat;

/// How long to wait for the coordinator to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    address: String,
    token: Option<String>,
}

impl Client {
    /// A client of the coordinator at `url` (`http://host:port` or
    /// `host:port`), sending `token` as the bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Client> {
        let trimmed = url.trim().trim_end_matches('/');
        if trimmed.starts_with("https://") {
            return Err(CoordinatorError::Client {
                message: format!(
                    "{url}: the coordinator serves plain HTTP; put TLS in front of it and use its http:// address here"
                ),
            });
        }
        let address = trimmed.strip_prefix("http://").unwrap_or(trimmed);
        if address.is_empty() || address.contains('/') {
            return Err(CoordinatorError::Client {
                message: format!("{url}: expected http://HOST:PORT"),
            });
        }
        Ok(Client {
            address: address.to_string(),
            token: token.filter(|token| !token.trim().is_empty()),
        })
    }

    /// The `host:port` it talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends one request; returns the status and the body, whatever the
    /// status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)> {
        let no_coordinator = |reason: String| CoordinatorError::NoCoordinator {
            address: self.address.clone(),
            reason,
        };
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| no_coordinator(format!("no answer in {CONNECT_TIMEOUT:?}")))?
        .map_err(|error| no_coordinator(error.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| no_coordinator(error.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.address);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| CoordinatorError::Client {
                message: format!("building a request for {path}: {error}"),
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| no_coordinator(format!("the request failed: {error}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| CoordinatorError::Client {
                message: format!("reading the answer to {path}: {error}"),
            })?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }

    /// Sends a request and decodes a JSON answer; an error status becomes
    /// [`CoordinatorError::Api`] with the server's message.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Value> {
        let (status, body) = self.request(method, path, content_type, body).await?;
        let value: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let message = value
                .as_ref()
                .and_then(|value| value["error"].as_str())
                .map_or_else(
                    || String::from_utf8_lossy(&body).into_owned(),
                    str::to_string,
                );
            return Err(CoordinatorError::Api {
                status: status.as_u16(),
                message,
            });
        }
        value.ok_or_else(|| CoordinatorError::Client {
            message: format!("the answer to {path} is not JSON"),
        })
    }

    /// `POST /v1/jobs`: submits a spec; returns the job.
    pub async fn submit(&self, spec: &str, format: SpecFormat) -> Result<Value> {
        let content_type = match format {
            SpecFormat::Toml => "application/toml",
            SpecFormat::Json => "application/json",
        };
        self.json(
            Method::POST,
            "/v1/jobs",
            Some(content_type),
            spec.as_bytes().to_vec(),
        )
        .await
    }

    /// `GET /v1/jobs`.
    pub async fn jobs(&self) -> Result<Value> {
        self.json(Method::GET, "/v1/jobs", None, Vec::new()).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: JobId) -> Result<Value> {
        self.json(Method::GET, &format!("/v1/jobs/{id}"), None, Vec::new())
            .await
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: JobId) -> Result<Value> {
        self.json(
            Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            None,
            Vec::new(),
        )
        .await
    }

    /// `GET /v1/jobs/{id}/metrics`.
    pub async fn metrics(&self, id: JobId) -> Result<Value> {
        self.json(
            Method::GET,
            &format!("/v1/jobs/{id}/metrics"),
            None,
            Vec::new(),
        )
        .await
    }

    /// `GET /v1/workers`.
    pub async fn workers(&self) -> Result<Value> {
        self.json(Method::GET, "/v1/workers", None, Vec::new())
            .await
    }

    /// `GET /v1/jobs/{id}/checkpoint`: the latest checkpoint's bytes.
    pub async fn checkpoint(&self, id: JobId) -> Result<Vec<u8>> {
        let path = format!("/v1/jobs/{id}/checkpoint");
        let (status, body) = self.request(Method::GET, &path, None, Vec::new()).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|value| value["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(CoordinatorError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(body.to_vec())
    }
}
