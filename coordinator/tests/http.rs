//! The HTTP API from a client's side: in process (tower's `oneshot`) and
//! over a real loopback socket, including garbage on the port.
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use coordinator::scheduler::{SchedulerConfig, WorkerInfo};
use coordinator::{Coordinator, CoordinatorConfig, JobId, JobStore, http};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token";

fn example(kind: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../examples/jobs/{kind}.toml")),
    )
    .unwrap()
}

struct Api {
    coordinator: Arc<Coordinator>,
    _directory: tempfile::TempDir,
}

fn api() -> Api {
    let directory = tempfile::tempdir().unwrap();
    let (coordinator, _actions) = Coordinator::with_store(
        JobStore::open_in_memory().unwrap(),
        CoordinatorConfig {
            data_dir: directory.path().to_path_buf(),
            api_token: TOKEN.to_string(),
            scheduler: SchedulerConfig::default(),
        },
    )
    .unwrap();
    Api {
        coordinator,
        _directory: directory,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }

    #[track_caller]
    fn error(&self, status: StatusCode, expected: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let message = self.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(expected), "`{message}` lacks `{expected}`");
    }
}

impl Api {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = http::router(self.coordinator.clone())
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, Some(TOKEN), None, Body::empty())
            .await
    }

    async fn submit(&self, content_type: Option<&str>, body: impl Into<Body>) -> Answer {
        self.call(Method::POST, "/v1/jobs", Some(TOKEN), content_type, body)
            .await
    }
}

#[tokio::test]
async fn submit_list_get_cancel() {
    let api = api();
    let created = api.submit(Some("application/toml"), example("mlp")).await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.headers[header::LOCATION], "/v1/jobs/1");
    let job = created.json();
    assert_eq!(job["id"], 1);
    assert_eq!(job["state"], "queued");
    assert_eq!(job["model"], "mlp");

    // The same fields in JSON; no content type means TOML.
    let spec = coordinator::JobSpec::from_toml(&example("gru")).unwrap();
    let created = api
        .submit(
            Some("application/json; charset=utf-8"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["model"], "gru");
    assert_eq!(
        api.submit(None, example("vae")).await.status,
        StatusCode::CREATED
    );

    let list = api.get("/v1/jobs").await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<u64> = list.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);

    let detail = api.get("/v1/jobs/2").await.json();
    assert_eq!(detail["spec"]["model"]["kind"], "gru");
    assert_eq!(detail["transitions"][0]["to"], "queued");
    assert_eq!(detail["latest_checkpoint"], Value::Null);

    let cancelled = api
        .call(
            Method::POST,
            "/v1/jobs/2/cancel",
            Some(TOKEN),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json()["state"], "cancelled");
    api.call(
        Method::POST,
        "/v1/jobs/2/cancel",
        Some(TOKEN),
        None,
        Body::empty(),
    )
    .await
    .error(
        StatusCode::CONFLICT,
        "job 2 is cancelled: it cannot become cancelled",
    );
    let detail = api.get("/v1/jobs/2").await.json();
    let states: Vec<&str> = detail["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "cancelled"]);
}

#[tokio::test]
async fn invalid_specs_are_400_with_the_message() {
    let api = api();
    let cases: Vec<(Option<&str>, String, &str)> = vec![
        (
            Some("application/toml"),
            example("mlp").replace("global_batch = 64", "global_batch = 100"),
            "global_batch: 100 is not divisible by virtual_ranks = 8",
        ),
        (
            Some("application/toml"),
            example("mlp").replace("kind = \"mlp\"", "kind = \"resnet\""),
            "model.kind: unknown model `resnet`",
        ),
        (
            Some("application/toml"),
            "global_batch = [".to_string(),
            "line 1",
        ),
        (
            Some("application/json"),
            "{\"model\": 3".to_string(),
            "JSON",
        ),
        (
            Some("application/json"),
            "[1, 2]".to_string(),
            "invalid type",
        ),
        (Some("application/json"), String::new(), "EOF"),
    ];
    for (content_type, body, expected) in cases {
        api.submit(content_type, body)
            .await
            .error(StatusCode::BAD_REQUEST, expected);
    }
    api.submit(Some("application/toml"), vec![0xff, 0xfe, 0x00])
        .await
        .error(StatusCode::BAD_REQUEST, "not UTF-8");
    api.submit(Some("image/png"), example("mlp"))
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "image/png");
    assert!(
        api.get("/v1/jobs").await.json()["jobs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn every_route_but_health_and_metrics_needs_the_token() {
    let api = api();
    let routes = [
        (Method::POST, "/v1/jobs"),
        (Method::GET, "/v1/jobs"),
        (Method::GET, "/v1/jobs/1"),
        (Method::POST, "/v1/jobs/1/cancel"),
        (Method::GET, "/v1/jobs/1/metrics"),
        (Method::GET, "/v1/jobs/1/checkpoint"),
        (Method::GET, "/v1/workers"),
        (Method::GET, "/v1/openapi.json"),
    ];
    for (method, uri) in routes {
        let missing = api
            .call(method.clone(), uri, None, None, Body::empty())
            .await;
        missing.error(StatusCode::UNAUTHORIZED, "missing API token");
        assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer");
        api.call(method.clone(), uri, Some("wrong"), None, Body::empty())
            .await
            .error(StatusCode::UNAUTHORIZED, "wrong API token");
        api.call(
            method.clone(),
            uri,
            Some(&format!("{TOKEN}x")),
            None,
            Body::empty(),
        )
        .await
        .error(StatusCode::UNAUTHORIZED, "wrong API token");
        api.call(method.clone(), uri, Some(""), None, Body::empty())
            .await
            .error(StatusCode::UNAUTHORIZED, "wrong API token");
    }
    // Not a bearer scheme.
    let request = Request::get("/v1/jobs")
        .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = http::router(api.coordinator.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let health = api
        .call(Method::GET, "/healthz", None, None, Body::empty())
        .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let metrics = api
        .call(Method::GET, "/metrics", None, None, Body::empty())
        .await;
    assert_eq!(metrics.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_jobs_and_routes_are_404() {
    let api = api();
    for uri in [
        "/v1/jobs/7",
        "/v1/jobs/7/metrics",
        "/v1/jobs/7/checkpoint",
        "/v1/jobs/not-a-number",
        "/v1/jobs/-1",
        "/v1/jobs/99999999999999999999999",
    ] {
        api.get(uri)
            .await
            .error(StatusCode::NOT_FOUND, "unknown job");
    }
    api.call(
        Method::POST,
        "/v1/jobs/7/cancel",
        Some(TOKEN),
        None,
        Body::empty(),
    )
    .await
    .error(StatusCode::NOT_FOUND, "unknown job 7");
    api.get("/v2/nothing")
        .await
        .error(StatusCode::NOT_FOUND, "no route GET /v2/nothing");
    assert_eq!(
        api.submit(None, example("mlp")).await.status,
        StatusCode::CREATED
    );
    api.get("/v1/jobs/1/checkpoint")
        .await
        .error(StatusCode::NOT_FOUND, "job 1 has no checkpoint yet");
}

#[tokio::test]
async fn metrics_history_and_checkpoint_download() {
    let api = api();
    assert_eq!(
        api.submit(None, example("mlp")).await.status,
        StatusCode::CREATED
    );
    let job = JobId(1);
    for step in 1..=3u64 {
        let values = [("loss".to_string(), 1.0 / step as f64)]
            .into_iter()
            .collect();
        api.coordinator.report_step(job, step, &values).unwrap();
    }
    let metrics = api.get("/v1/jobs/1/metrics").await.json();
    assert_eq!(metrics["job"], 1);
    let steps = metrics["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["step"], 2);
    assert_eq!(steps[1]["values"]["loss"], 0.5);
    assert_eq!(api.get("/v1/jobs/1").await.json()["last_step"], 3);

    // keep = 3 in the example: the fourth checkpoint deletes the first file.
    let mut records = Vec::new();
    for step in [10u64, 20, 30, 40] {
        let bytes = format!("checkpoint bytes at step {step}").into_bytes();
        records.push(api.coordinator.store_checkpoint(job, step, &bytes).unwrap());
    }
    assert!(!std::path::Path::new(&records[0].path).exists());
    assert!(std::path::Path::new(&records[1].path).exists());
    let download = api.get("/v1/jobs/1/checkpoint").await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.body, b"checkpoint bytes at step 40");
    assert_eq!(download.headers["x-shoal-step"], "40");
    assert_eq!(
        download.headers["x-shoal-sha256"],
        records[3].sha256.as_str()
    );
    use sha2::Digest;
    assert_eq!(
        records[3].sha256,
        hex::encode(sha2::Sha256::digest(b"checkpoint bytes at step 40"))
    );
    assert_eq!(records[3].bytes, 27);
    let detail = api.get("/v1/jobs/1").await.json();
    assert_eq!(detail["latest_checkpoint"]["step"], 40);
    let text = String::from_utf8(
        api.call(Method::GET, "/metrics", None, None, Body::empty())
            .await
            .body,
    )
    .unwrap();
    for expected in [
        "shoal_job_step{job_id=\"1\"} 3",
        "shoal_checkpoints_written_total{job_id=\"1\"} 4",
        "shoal_checkpoint_write_seconds_count{job_id=\"1\"} 4",
        "shoal_checkpoint_step{job_id=\"1\"} 40",
        "shoal_checkpoint_bytes{job_id=\"1\"} 27",
    ] {
        assert!(text.contains(expected), "no `{expected}` in\n{text}");
    }

    // A recorded checkpoint whose file vanished is a clear 500, not a crash.
    std::fs::remove_file(&records[3].path).unwrap();
    api.get("/v1/jobs/1/checkpoint")
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR, "cannot be read");
}

#[tokio::test]
async fn workers_and_prometheus_metrics() {
    let api = api();
    let workers = api.get("/v1/workers").await.json();
    assert!(workers["workers"].as_array().unwrap().is_empty());
    let worker = api
        .coordinator
        .register_worker(WorkerInfo {
            name: "node-a".to_string(),
            address: "10.0.0.2:7000".to_string(),
            threads: 2,
            ..WorkerInfo::default()
        })
        .unwrap();
    assert_eq!(
        api.submit(None, example("mlp")).await.status,
        StatusCode::CREATED
    );
    let workers = api.get("/v1/workers").await.json();
    assert_eq!(workers["workers"][0]["id"], worker.0);
    assert_eq!(workers["workers"][0]["address"], "10.0.0.2:7000");
    assert_eq!(workers["workers"][0]["name"], "node-a");
    assert_eq!(workers["workers"][0]["job"], 1);
    let job = api.get("/v1/jobs/1").await.json();
    assert_eq!(job["state"], "running");
    assert_eq!(job["workers"][0]["worker"], worker.0);
    assert_eq!(job["workers"][0]["virtual_ranks"]["end"], 8);

    api.get("/v1/jobs/5").await;
    api.call(Method::GET, "/v1/jobs", None, None, Body::empty())
        .await;
    let text = String::from_utf8(
        api.call(Method::GET, "/metrics", None, None, Body::empty())
            .await
            .body,
    )
    .unwrap();
    for expected in [
        "shoal_jobs{state=\"running\"} 1",
        "shoal_jobs{state=\"queued\"} 0",
        "shoal_workers_alive 1",
        "shoal_api_requests_total{route=\"/v1/jobs\",status=\"201\"} 1",
        "shoal_api_requests_total{route=\"/v1/jobs/{id}\",status=\"404\"} 1",
        "shoal_api_requests_total{route=\"/v1/jobs\",status=\"401\"} 1",
    ] {
        assert!(text.contains(expected), "no `{expected}` in\n{text}");
    }

    // Cancelled: its ring is released; transitions, the ring formed and its
    // reasons, registrations and request times are counted.
    let cancelled = api
        .call(
            Method::POST,
            "/v1/jobs/1/cancel",
            Some(TOKEN),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    let text = String::from_utf8(
        api.call(Method::GET, "/metrics", None, None, Body::empty())
            .await
            .body,
    )
    .unwrap();
    for expected in [
        "shoal_jobs_submitted_total 1",
        "shoal_workers_registered_total 1",
        "shoal_workers_lost_total 0",
        "shoal_job_transitions_total{from=\"queued\",to=\"running\"} 1",
        "shoal_job_transitions_total{from=\"running\",to=\"cancelled\"} 1",
        // every allowed transition exists, at zero until it happens
        "shoal_job_transitions_total{from=\"queued\",to=\"failed\"} 0",
        "shoal_job_transitions_total{from=\"waiting_for_workers\",to=\"running\"} 0",
        "shoal_ring_formations_total{job_id=\"1\",reason=\"start\"} 1",
        "shoal_ring_formations_total{job_id=\"1\",reason=\"worker_lost\"} 0",
        "shoal_ring_formations_total{job_id=\"1\",reason=\"worker_joined\"} 0",
        "shoal_ring_generation{job_id=\"1\"}",
        "shoal_ring_members{job_id=\"1\"} 0",
        "shoal_api_request_duration_seconds_count{route=\"/v1/jobs/{id}/cancel\"} 1",
    ] {
        assert!(text.contains(expected), "no `{expected}` in\n{text}");
    }
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let api = api();
    let document = api.get("/v1/openapi.json").await.json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path) in coordinator::openapi::ROUTES {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        // and the router serves it (anything but the fallback's 404 / 405)
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let answer = api
            .call(
                method,
                &path.replace("{id}", "1"),
                Some(TOKEN),
                None,
                Body::empty(),
            )
            .await;
        assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        if answer.status == StatusCode::NOT_FOUND {
            assert!(
                !answer.json()["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("no route")
            );
        }
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_goes_on() {
    let router = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
        .route("/fine", axum::routing::get(|| async { "fine" }))
        .layer(axum::middleware::from_fn(http::catch_panic));
    let response = router
        .clone()
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("panicked"));
    let response = router
        .oneshot(Request::get("/fine").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn over_a_socket_with_garbage_on_the_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = api();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server =
        tokio::spawn(axum::serve(listener, http::router(api.coordinator.clone())).into_future());

    // Garbage of several shapes: random bytes, a truncated request, an
    // absurd header, then a connection closed at once.
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut random = vec![0u8; 4096];
    for byte in &mut random {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let garbage: Vec<Vec<u8>> = vec![
        random,
        b"POST /v1/jobs HTTP/1.1\r\nContent-Length: 100000\r\n\r\nshort".to_vec(),
        long_header.into_bytes(),
        b"\r\n\r\n\r\n".to_vec(),
        Vec::new(),
    ];
    for bytes in garbage {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut answer),
        )
        .await;
    }

    // The server still answers, with and without the token.
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("{\"jobs\":[]}"), "{answer}");

    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!server.is_finished());
    server.abort();
}
