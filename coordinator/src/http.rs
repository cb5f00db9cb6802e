//! The HTTP/JSON API (axum): jobs, workers, health, Prometheus metrics and
//! the OpenAPI document. Every route but `/healthz` and `/metrics` needs
//! `Authorization: Bearer <token>`; errors are JSON `{"error": "..."}`.
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::CoordinatorError;
use crate::job::{JobId, JobState};
use crate::scheduler::RingMember;
use crate::service::Coordinator;
use crate::spec::{JobSpec, SpecFormat};
use crate::store::{CheckpointRecord, JobRecord, Transition};

/// The state every handler shares.
pub type AppState = Arc<Coordinator>;

/// The API's router, ready to serve (`axum::serve(listener, router(state))`).
pub fn router(state: AppState) -> Router {
    let authenticated = Router::new()
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/metrics", get(job_metrics))
        .route("/v1/jobs/{id}/checkpoint", get(job_checkpoint))
        .route("/v1/workers", get(list_workers))
        .route("/v1/openapi.json", get(openapi))
        .route_layer(from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus_metrics))
        .merge(authenticated)
        .fallback(no_route)
        .layer(from_fn(catch_panic))
        .layer(from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

// ---- errors ----

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(error: CoordinatorError) -> ApiError {
        let status = match &error {
            CoordinatorError::SpecSyntax { .. } | CoordinatorError::InvalidSpec { .. } => {
                StatusCode::BAD_REQUEST
            }
            CoordinatorError::UnknownJob { .. } => StatusCode::NOT_FOUND,
            CoordinatorError::InvalidTransition { .. } => StatusCode::CONFLICT,
            _ => {
                tracing::error!(%error, "internal error answering an API request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, error.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---- middleware ----

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if state.api_token().matches(token.trim()) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong API token").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API token: send `Authorization: Bearer <token>` (the token is in DATA_DIR/api-token)",
        )
        .into_response(),
    }
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let metrics = state.metrics();
    metrics
        .api_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    metrics
        .api_request_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Middleware that turns a panic in the handler into a 500 answer, so one
/// bad request never takes the connection or the server down.
pub async fn catch_panic(request: Request, next: Next) -> Response {
    match CatchUnwind(Box::pin(next.run(request))).await {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!(%message, "an API handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request's handler panicked (the server keeps running)",
            )
            .into_response()
        }
    }
}

/// Polls a future, catching a panic of any poll.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(context))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

// ---- views ----

/// A job as the API shows it.
#[derive(Debug, Serialize)]
struct JobView {
    id: JobId,
    name: Option<String>,
    model: String,
    state: JobState,
    error: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    last_step: Option<u64>,
    ring_generation: Option<u64>,
    workers: Vec<RingMember>,
}

fn job_view(state: &Coordinator, job: &JobRecord) -> ApiResult<JobView> {
    let ring = state.ring(job.id);
    Ok(JobView {
        id: job.id,
        name: job.spec.name.clone(),
        model: job.spec.model.kind.clone(),
        state: job.state,
        error: job.error.clone(),
        created_at_ms: job.created_at_ms,
        updated_at_ms: job.updated_at_ms,
        last_step: state.last_step(job.id)?,
        ring_generation: ring.as_ref().map(|ring| ring.generation),
        workers: ring.map(|ring| ring.members).unwrap_or_default(),
    })
}

#[derive(Debug, Serialize)]
struct JobDetail {
    #[serde(flatten)]
    job: JobView,
    spec: JobSpec,
    transitions: Vec<Transition>,
    latest_checkpoint: Option<CheckpointRecord>,
}

fn parse_job_id(text: &str) -> ApiResult<JobId> {
    text.parse::<u64>()
        .map(JobId)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("unknown job {text}")))
}

// ---- handlers ----

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

async fn prometheus_metrics(State(state): State<AppState>) -> Response {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut buffer = Vec::new();
    if let Err(error) = encoder.encode(&state.metrics().registry.gather(), &mut buffer) {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buffer).into_response()
}

async fn no_route(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {} {} (see /v1/openapi.json)",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn submit_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let format = match media_type {
        "application/json" => SpecFormat::Json,
        "" | "application/toml" | "text/toml" | "text/plain" | "text/x-toml" => SpecFormat::Toml,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type `{other}`: send the job spec as application/toml or application/json"
                ),
            ));
        }
    };
    let text = std::str::from_utf8(&body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid job spec: the body is not UTF-8 ({error})"),
        )
    })?;
    let spec = JobSpec::parse(text, format).map_err(CoordinatorError::from)?;
    let id = state.submit(&spec)?;
    let view = job_view(&state, &state.job(id)?)?;
    let mut response = (StatusCode::CREATED, axum::Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn list_jobs(State(state): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let jobs = state.jobs()?;
    let views = jobs
        .iter()
        .map(|job| job_view(&state, job))
        .collect::<ApiResult<Vec<JobView>>>()?;
    Ok(axum::Json(json!({ "jobs": views })))
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobDetail>> {
    let id = parse_job_id(&id)?;
    let job = state.job(id)?;
    Ok(axum::Json(JobDetail {
        job: job_view(&state, &job)?,
        spec: job.spec.clone(),
        transitions: state.transitions(id)?,
        latest_checkpoint: state.latest_checkpoint(id)?,
    }))
}

async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobView>> {
    let id = parse_job_id(&id)?;
    let job = state.cancel(id)?;
    Ok(axum::Json(job_view(&state, &job)?))
}

async fn job_metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = parse_job_id(&id)?;
    let steps = state.job_metrics(id)?;
    Ok(axum::Json(json!({ "job": id, "steps": steps })))
}

async fn job_checkpoint(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_job_id(&id)?;
    let checkpoint = state.latest_checkpoint(id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("job {id} has no checkpoint yet"),
        )
    })?;
    let bytes = tokio::fs::read(&checkpoint.path).await.map_err(|error| {
        tracing::error!(path = %checkpoint.path, %error, "a recorded checkpoint cannot be read");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "job {id}'s checkpoint at step {} cannot be read: {error}",
                checkpoint.step
            ),
        )
    })?;
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let filename = format!(
        "attachment; filename=\"job-{id}-step-{}.safetensors\"",
        checkpoint.step
    );
    if let Ok(value) = HeaderValue::from_str(&filename) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&checkpoint.step.to_string()) {
        headers.insert("x-shoal-step", value);
    }
    if let Ok(value) = HeaderValue::from_str(&checkpoint.sha256) {
        headers.insert("x-shoal-sha256", value);
    }
    Ok(response)
}

async fn list_workers(State(state): State<AppState>) -> axum::Json<Value> {
    let now = state.uptime();
    let workers: Vec<Value> = state
        .workers()
        .into_iter()
        .map(|worker| {
            json!({
                "id": worker.id.0,
                "name": worker.info.name,
                "address": worker.info.address,
                "threads": worker.info.threads,
                "job": worker.job,
                "registered_ms_ago": now.saturating_sub(worker.registered_at).as_millis() as u64,
                "last_heartbeat_ms_ago": now.saturating_sub(worker.last_heartbeat).as_millis() as u64,
            })
        })
        .collect();
    axum::Json(json!({ "workers": workers }))
}

async fn openapi() -> axum::Json<Value> {
    axum::Json(crate::openapi::document())
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
