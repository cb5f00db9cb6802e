//! The coordinator service end to end over a loopback socket with the HTTP
//! client: submit, restart with the same data directory, tokens on disk,
//! and the error when no coordinator answers.
use std::time::Duration;

use coordinator::client::Client;
use coordinator::scheduler::{Action, Outcome, SchedulerConfig, WorkerInfo};
use coordinator::spec::SpecFormat;
use coordinator::tokens::{self, TokenSource};
use coordinator::{Coordinator, CoordinatorConfig, CoordinatorError, JobId, JobState};

const TOKEN: &str = "service-test-token";

fn example(kind: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../examples/jobs/{kind}.toml")),
    )
    .unwrap()
}

fn config(directory: &std::path::Path) -> CoordinatorConfig {
    CoordinatorConfig {
        data_dir: directory.to_path_buf(),
        api_token: TOKEN.to_string(),
        scheduler: SchedulerConfig {
            heartbeat_timeout: Duration::from_secs(30),
        },
    }
}

/// Serves `coordinator` on a free loopback port; returns its URL.
async fn serve(coordinator: std::sync::Arc<Coordinator>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        coordinator::http::serve(listener, coordinator, std::future::pending())
            .await
            .unwrap();
    });
    (url, server)
}

#[tokio::test]
async fn jobs_survive_a_coordinator_restart() {
    let directory = tempfile::tempdir().unwrap();
    {
        let (coordinator, mut actions) = Coordinator::open(config(directory.path())).unwrap();
        let (url, server) = serve(coordinator.clone()).await;
        let client = Client::new(&url, Some(TOKEN.to_string())).unwrap();
        for kind in ["mlp", "gan", "vae"] {
            client
                .submit(&example(kind), SpecFormat::Toml)
                .await
                .unwrap();
        }
        // Two workers: job 1 (min 1) starts on the first; job 2 (min 2) waits
        // for two free workers and keeps job 1 from growing meanwhile.
        coordinator.register_worker(WorkerInfo::default()).unwrap();
        coordinator.register_worker(WorkerInfo::default()).unwrap();
        let action = actions.try_recv().unwrap();
        assert!(matches!(action, Action::FormRing { ref ring, .. } if ring.job == JobId(1)));
        coordinator
            .report_step(JobId(1), 1, &[("loss".to_string(), 2.5)].into())
            .unwrap();
        coordinator
            .store_checkpoint(JobId(1), 1, b"weights")
            .unwrap();
        client.cancel(JobId(3)).await.unwrap();
        let jobs = client.jobs().await.unwrap();
        let states: Vec<&str> = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["running", "queued", "cancelled"]);
        server.abort();
    }
    // A new coordinator on the same directory: the running job goes back to
    // the queue until workers come back; nothing is lost.
    let (coordinator, _actions) = Coordinator::open(config(directory.path())).unwrap();
    assert_eq!(coordinator.job(JobId(1)).unwrap().state, JobState::Queued);
    assert_eq!(coordinator.job(JobId(2)).unwrap().state, JobState::Queued);
    assert_eq!(
        coordinator.job(JobId(3)).unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(coordinator.job_metrics(JobId(1)).unwrap().len(), 1);
    let checkpoint = coordinator.latest_checkpoint(JobId(1)).unwrap().unwrap();
    assert_eq!(std::fs::read(&checkpoint.path).unwrap(), b"weights");
    let reasons: Vec<String> = coordinator
        .transitions(JobId(1))
        .unwrap()
        .into_iter()
        .map(|transition| transition.reason)
        .collect();
    assert_eq!(
        reasons.last().unwrap(),
        "coordinator restarted: waiting for workers"
    );
    // Workers come back: job 1 runs again, then completes, and job 2 starts.
    let worker = coordinator.register_worker(WorkerInfo::default()).unwrap();
    assert_eq!(coordinator.job(JobId(1)).unwrap().state, JobState::Running);
    coordinator.register_worker(WorkerInfo::default()).unwrap();
    coordinator
        .report_finished(JobId(1), Outcome::Completed)
        .unwrap();
    assert_eq!(
        coordinator.job(JobId(1)).unwrap().state,
        JobState::Completed
    );
    assert_eq!(coordinator.job(JobId(2)).unwrap().state, JobState::Running);
    assert!(coordinator.heartbeat(worker));
    // A failure carries its error into the job.
    coordinator
        .report_finished(
            JobId(2),
            Outcome::Failed("data/gaussian-ring.parquet: not a Parquet file".to_string()),
        )
        .unwrap();
    let failed = coordinator.job(JobId(2)).unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("data/gaussian-ring.parquet: not a Parquet file")
    );
}

#[tokio::test]
async fn the_client_reports_api_errors_and_missing_coordinators() {
    let directory = tempfile::tempdir().unwrap();
    let (coordinator, _actions) = Coordinator::open(config(directory.path())).unwrap();
    let (url, server) = serve(coordinator).await;

    let client = Client::new(&url, Some(TOKEN.to_string())).unwrap();
    let bad = example("mlp").replace("global_batch = 64", "global_batch = 100");
    match client.submit(&bad, SpecFormat::Toml).await {
        Err(CoordinatorError::Api {
            status: 400,
            message,
        }) => {
            assert!(message.contains("global_batch: 100 is not divisible by virtual_ranks = 8"));
        }
        other => panic!("{other:?}"),
    }
    match client.job(JobId(9)).await {
        Err(CoordinatorError::Api {
            status: 404,
            message,
        }) => assert_eq!(message, "unknown job 9"),
        other => panic!("{other:?}"),
    }
    let anonymous = Client::new(url.trim_start_matches("http://"), None).unwrap();
    match anonymous.jobs().await {
        Err(CoordinatorError::Api { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    let created = client
        .submit(&example("gcn"), SpecFormat::Toml)
        .await
        .unwrap();
    assert_eq!(created["id"], 1);
    assert_eq!(
        client.metrics(JobId(1)).await.unwrap()["steps"],
        serde_json::json!([])
    );
    assert!(
        client.workers().await.unwrap()["workers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    match client.checkpoint(JobId(1)).await {
        Err(CoordinatorError::Api {
            status: 404,
            message,
        }) => {
            assert!(message.contains("no checkpoint yet"));
        }
        other => panic!("{other:?}"),
    }
    server.abort();
    let _ = server.await;

    // Nothing listens there any more.
    let error = client.jobs().await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "no coordinator at {}: start one with `shoal coordinator --data-dir DIR`",
            url.trim_start_matches("http://")
        )),
        "{error}"
    );
    assert!(Client::new("https://example.org", None).is_err());
    assert!(Client::new("http://host:1/path", None).is_err());
}

#[test]
fn tokens_are_created_once_and_given_ones_win() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("api-token");
    let (first, source) = tokens::load_or_create(&path, None).unwrap();
    assert_eq!(source, TokenSource::Created);
    assert_eq!(first.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (again, source) = tokens::load_or_create(&path, None).unwrap();
    assert_eq!(
        (again.as_str(), source),
        (first.as_str(), TokenSource::File)
    );
    let (given, source) = tokens::load_or_create(&path, Some(" mine ")).unwrap();
    assert_eq!((given.as_str(), source), ("mine", TokenSource::Given));
    assert!(tokens::load_or_create(&path, Some("  ")).is_err());
    assert_ne!(tokens::generate_token().unwrap(), first);

    let empty = directory.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let error = tokens::load_or_create(&empty, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("empty"), "{error}");

    let token = tokens::ApiToken::new("abc");
    assert!(token.matches("abc"));
    for wrong in ["", "ab", "abd", "abcd", "ABC"] {
        assert!(!token.matches(wrong), "{wrong}");
    }
}

#[test]
fn join_tokens_pin_the_certificate() {
    let directory = tempfile::tempdir().unwrap();
    let identity = protocol::transport::Identity::load_or_create(directory.path()).unwrap();
    let path = directory.path().join("join-token");
    let (token, source) = tokens::load_or_create_join_token(
        &path,
        &identity,
        Some("10.0.0.1:7070".to_string()),
        None,
    )
    .unwrap();
    assert_eq!(source, TokenSource::Created);
    assert_eq!(token.fingerprint, identity.fingerprint());
    assert_eq!(token.address.as_deref(), Some("10.0.0.1:7070"));
    let (again, source) = tokens::load_or_create_join_token(&path, &identity, None, None).unwrap();
    assert_eq!((again, source), (token.clone(), TokenSource::File));

    // A token made for another certificate is refused, given or on disk.
    let other_directory = tempfile::tempdir().unwrap();
    let other = protocol::transport::Identity::load_or_create(other_directory.path()).unwrap();
    let error = tokens::load_or_create_join_token(&path, &other, None, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("pins certificate"), "{error}");
    let error = tokens::load_or_create_join_token(&path, &other, None, Some(&token.to_string()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("pins certificate"), "{error}");
    let error = tokens::load_or_create_join_token(&path, &identity, None, Some("nonsense"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a join token"), "{error}");
}
