//! Workers joining the coordinator over real QUIC on loopback: registration
//! with the join token, assignment and ring membership, heartbeats, reports,
//! a wrong secret refused, and a disconnect re-forming the ring.
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use coordinator::quic::{WorkerEndpointConfig, serve_workers};
use coordinator::scheduler::SchedulerConfig;
use coordinator::{Coordinator, CoordinatorConfig, JobId, JobSpec, JobState, JobStore};
use protocol::message::{CoordinatorMessage, Heartbeat, MetricsReport, Register, WorkerMessage};
use protocol::transport::{
    Registration, TransportTuning, bind_endpoint, connect_and_register, server_config, write_frame,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn register(name: &str) -> Register {
    Register {
        secret: String::new(),
        name: name.to_string(),
        peer_address: format!("127.0.0.1:{}", 9000 + name.len()),
        peer_fingerprint: "ab".repeat(32),
        cores: 2,
        memory_bytes: 1 << 30,
    }
}

async fn next(registration: &mut Registration) -> CoordinatorMessage {
    tokio::time::timeout(TIMEOUT, registration.reader.next())
        .await
        .expect("a message in time")
        .unwrap()
        .expect("the stream is open")
        .message
}

/// A coordinator serving workers on loopback, and a client endpoint.
struct Served {
    coordinator: std::sync::Arc<Coordinator>,
    address: SocketAddr,
    token: protocol::JoinToken,
    client: quinn::Endpoint,
    tuning: TransportTuning,
    _directory: tempfile::TempDir,
}

fn serve(scheduler: SchedulerConfig) -> Served {
    let directory = tempfile::tempdir().unwrap();
    let identity = protocol::transport::Identity::load_or_create(directory.path()).unwrap();
    let token = protocol::transport::generate_join_token(&identity, None).unwrap();
    let (coordinator, actions) = Coordinator::with_store(
        JobStore::open_in_memory().unwrap(),
        CoordinatorConfig {
            data_dir: directory.path().to_path_buf(),
            api_token: "t".to_string(),
            scheduler,
        },
    )
    .unwrap();
    let tuning = TransportTuning::default();
    let server = bind_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        Some(server_config(&identity, &tuning).unwrap()),
        &tuning,
    )
    .unwrap();
    let address: SocketAddr = server.local_addr().unwrap();
    tokio::spawn(serve_workers(
        coordinator.clone(),
        server,
        WorkerEndpointConfig {
            secret: token.secret.clone(),
            heartbeat_interval: Duration::from_secs(1),
            handshake_timeout: TIMEOUT,
        },
        actions,
    ));
    let client = bind_endpoint("127.0.0.1:0".parse().unwrap(), None, &tuning).unwrap();

    Served {
        coordinator,
        address,
        token,
        client,
        tuning,
        _directory: directory,
    }
}

#[tokio::test]
async fn workers_join_train_report_and_leave() {
    let Served {
        coordinator,
        address,
        token,
        client,
        tuning,
        _directory,
    } = serve(SchedulerConfig::default());

    // A wrong secret is refused.
    let mut wrong = token.clone();
    wrong.secret = "A".repeat(43);
    let refused = connect_and_register(&client, address, &wrong, register("x"), &tuning, TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("wrong join token secret"), "{refused}");
    assert!(coordinator.workers().is_empty());

    let mut first = connect_and_register(
        &client,
        address,
        &token,
        register("first"),
        &tuning,
        TIMEOUT,
    )
    .await
    .unwrap();
    let mut second = connect_and_register(
        &client,
        address,
        &token,
        register("second"),
        &tuning,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_ne!(first.worker_id, second.worker_id);
    assert_eq!(first.heartbeat_interval_ms, 1000);
    let names: Vec<String> = coordinator
        .workers()
        .into_iter()
        .map(|w| w.info.name)
        .collect();
    assert_eq!(names, ["first", "second"]);

    // A job for both: each gets the assignment, then the ring.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs/gan.toml"),
    )
    .unwrap();
    let job = coordinator
        .submit(&JobSpec::from_toml(&text).unwrap())
        .unwrap();
    for worker in [&mut first, &mut second] {
        let CoordinatorMessage::AssignJob(assignment) = next(worker).await else {
            panic!("an assignment first");
        };
        assert_eq!(assignment.job_id, job.0);
        assert_eq!(assignment.start_step, 0);
        let spec = JobSpec::from_json(&assignment.spec).unwrap();
        assert_eq!(spec.model.kind, "gan");
        let CoordinatorMessage::RingMembership(ring) = next(worker).await else {
            panic!("then the ring");
        };
        assert_eq!(ring.virtual_ranks, 8);
        assert_eq!(ring.members.len(), 2);
        assert_eq!(ring.members[1].first_virtual_rank, 4);
        assert_eq!(ring.members[0].fingerprint, "ab".repeat(32));
    }

    // Heartbeats are acknowledged; metrics land in the store.
    write_frame(
        &mut first.send,
        &WorkerMessage::Heartbeat(Heartbeat {
            sequence: 7,
            job_id: Some(job.0),
            step: Some(1),
        }),
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        next(&mut first).await,
        CoordinatorMessage::HeartbeatAck { sequence: 7 }
    );
    write_frame(
        &mut first.send,
        &WorkerMessage::MetricsReport(MetricsReport {
            job_id: job.0,
            step: 1,
            values: vec![("d_loss".to_string(), 1.25), ("g_loss".to_string(), 0.75)],
        }),
        Bytes::new(),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while coordinator.job_metrics(job).unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        coordinator.job_metrics(job).unwrap()[0].values["g_loss"],
        0.75
    );

    // The second worker goes away: the job (min 2) waits with the first.
    second.connection.close(0u32.into(), b"bye");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while coordinator.job(job).unwrap().state != JobState::WaitingForWorkers {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loss was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(coordinator.workers().len(), 1);

    // A third worker joins: state from the first (the ring starts after the
    // last reported step); the job has no checkpoint, so none comes with
    // the assignment.
    let mut third = connect_and_register(
        &client,
        address,
        &token,
        register("third"),
        &tuning,
        TIMEOUT,
    )
    .await
    .unwrap();
    let CoordinatorMessage::AssignJob(assignment) = next(&mut third).await else {
        panic!("an assignment first");
    };
    assert_eq!(assignment.start_step, 0);
    let CoordinatorMessage::RingMembership(ring) = next(&mut third).await else {
        panic!("then the ring");
    };
    assert_eq!(ring.start_step, 2);
    assert_eq!(ring.state_source, Some(0));
    assert_eq!(ring.members[0].worker_id, first.worker_id);
    assert_eq!(ring.members[1].worker_id, third.worker_id);
    // The first worker was told to hold while the job waited below its
    // minimum, then hears of the new ring.
    let CoordinatorMessage::Hold { job_id, .. } = next(&mut first).await else {
        panic!("the first worker is told to hold");
    };
    assert_eq!(job_id, job.0);
    let CoordinatorMessage::RingMembership(same) = next(&mut first).await else {
        panic!("the first worker hears of the new ring");
    };
    assert_eq!(same, ring);
    assert_eq!(coordinator.job(job).unwrap().state, JobState::Running);

    // Cancelling tells the workers.
    coordinator.cancel(JobId(job.0)).unwrap();
    assert!(
        matches!(next(&mut first).await, CoordinatorMessage::Cancel { job_id, .. } if job_id == job.0)
    );
    assert!(
        matches!(next(&mut third).await, CoordinatorMessage::Cancel { job_id, .. } if job_id == job.0)
    );
}

#[tokio::test]
async fn any_frame_keeps_a_worker_alive_and_silence_declares_it_dead() {
    // A busy member 0 sends metrics and checkpoints ahead of its
    // heartbeats; while they keep coming it is alive.
    let heartbeat_timeout = Duration::from_millis(400);
    let Served {
        coordinator,
        address,
        token,
        client,
        tuning,
        _directory,
    } = serve(SchedulerConfig { heartbeat_timeout });
    let mut worker =
        connect_and_register(&client, address, &token, register("busy"), &tuning, TIMEOUT)
            .await
            .unwrap();
    for step in 0..24 {
        write_frame(
            &mut worker.send,
            &WorkerMessage::MetricsReport(MetricsReport {
                job_id: 99,
                step,
                values: vec![("loss".to_string(), 1.0)],
            }),
            Bytes::new(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        coordinator.tick().unwrap();
    }
    assert_eq!(
        coordinator.workers().len(),
        1,
        "alive after 1.2 s without a heartbeat"
    );
    tokio::time::sleep(heartbeat_timeout * 2).await;
    coordinator.tick().unwrap();
    assert!(
        coordinator.workers().is_empty(),
        "silent for twice the timeout"
    );
}
