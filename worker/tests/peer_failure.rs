//! A peer that stalls, or whose process is killed mid-transfer, makes the
//! collective fail with an error on every other member within the timeout,
//! never a hang. Runs without the libtest harness: the same executable is
//! re-invoked as the child worker process (`SHOAL_RING_CHILD=1`).
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protocol::Fingerprint;
use protocol::transport::TransportTuning;
use worker::collective::{AllReduceAlgorithm, CollectiveError, Ring};

const CHILD_VARIABLE: &str = "SHOAL_RING_CHILD";
const TIMEOUT: Duration = Duration::from_millis(1500);
/// A failure must show within the timeout plus this much (generous: a loaded
/// CI machine); the point is "an error, not a hang".
const SLACK: Duration = Duration::from_secs(15);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    if std::env::var_os(CHILD_VARIABLE).is_some() {
        child();
        return;
    }
    for (name, test) in [
        (
            "a_stalled_peer_fails_the_collective_on_everyone",
            stalled_peer as fn(),
        ),
        (
            "a_stalled_peer_fails_the_gather_on_everyone",
            stalled_peer_small_buffer as fn(),
        ),
        (
            "a_killed_peer_process_fails_the_collective_on_everyone",
            killed_peer as fn(),
        ),
    ] {
        let started = Instant::now();
        test();
        println!(
            "test {name} ... ok ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    // Closing line in the form CI reads (a failing scenario panics before it).
    println!("3 passed, 0 failed");
}

/// Runs all-reduces until one fails; returns the error and how many succeeded.
async fn reduce_until_failure(
    mut ring: Ring,
    len: usize,
    first_done: tokio::sync::mpsc::UnboundedSender<()>,
) -> (CollectiveError, usize, Instant) {
    let mut completed = 0;
    loop {
        let mut buffers: Vec<Vec<f32>> = ring
            .hosted()
            .map(|rank| common::gradient(rank, len))
            .collect();
        match ring.all_reduce(&mut buffers).await {
            Ok(()) => {
                completed += 1;
                let _ = first_done.send(());
            }
            Err(error) => return (error, completed, Instant::now()),
        }
    }
}

fn stalled_peer() {
    // 24 MiB per virtual rank: more than the flow-control windows (the
    // ring algorithm).
    stalled_peer_with(6 << 20);
}

fn stalled_peer_small_buffer() {
    // 4 KiB: the gather, where everyone sends at once and then only waits.
    let len = 1 << 10;
    let layout = worker::collective::RingLayout::new(&[1, 2, 1]);
    assert_eq!(
        AllReduceAlgorithm::Auto.resolve(&layout, len),
        AllReduceAlgorithm::Gather
    );
    stalled_peer_with(len);
}

fn stalled_peer_with(len: usize) {
    runtime().block_on(async {
        let mut rings = common::form_ring(&[1, 2, 1], common::config(TIMEOUT)).await;
        // Member 2 takes part in forming the ring, then neither reads nor sends.
        let stalled = rings.pop().unwrap();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for mut ring in rings {
            tasks.push(tokio::spawn(async move {
                let mut buffers: Vec<Vec<f32>> = ring
                    .hosted()
                    .map(|rank| common::gradient(rank, len))
                    .collect();
                ring.all_reduce(&mut buffers).await
            }));
        }
        for (member, task) in tasks.into_iter().enumerate() {
            let result = tokio::time::timeout(TIMEOUT + SLACK, task)
                .await
                .unwrap_or_else(|_| panic!("member {member} hangs behind a stalled peer"))
                .unwrap();
            let error = result.expect_err("a collective with a stalled peer must fail");
            eprintln!(
                "member {member} failed after {:?}: {error}",
                started.elapsed()
            );
        }
        drop(stalled);
    });
}

fn killed_peer() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_VARIABLE, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child_out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    child_out.read_line(&mut line).unwrap();
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("READY"), "child said {line:?}");
    let child_address: std::net::SocketAddr = words.next().unwrap().parse().unwrap();
    let child_fingerprint: Fingerprint = words.next().unwrap().parse().unwrap();

    runtime().block_on(async {
        let nodes = [common::node(), common::node()];
        let mut addresses: Vec<_> = nodes
            .iter()
            .map(|n| (n.endpoint.local_addr().unwrap(), n.identity.fingerprint()))
            .collect();
        addresses.push((child_address, child_fingerprint));
        let counts = [2, 1, 1];
        let mut stdin = child.stdin.take().unwrap();
        let members: Vec<String> = addresses
            .iter()
            .zip(counts)
            .map(|((address, fingerprint), count)| format!("{address} {fingerprint} {count}"))
            .collect();
        writeln!(stdin, "{}", members.join(";")).unwrap();
        drop(stdin);

        let len = 2 << 20;
        let (first_done, mut first_done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (me, node) in nodes.into_iter().enumerate() {
            let spec = common::spec(&addresses, &counts, me);
            let first_done = first_done.clone();
            tasks.push(tokio::spawn(async move {
                let ring = Ring::connect(&node.endpoint, &node.identity, &spec, common::config(TIMEOUT), &TransportTuning::default())
                    .await
                    .unwrap();
                reduce_until_failure(ring, len, first_done).await
            }));
        }
        // Both survivors completed a collective with the child: kill it during the next ones.
        first_done_rx.recv().await.unwrap();
        first_done_rx.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        child.kill().unwrap();
        let killed = Instant::now();
        child.wait().unwrap();
        for (member, task) in tasks.into_iter().enumerate() {
            let (error, completed, failed_at) = tokio::time::timeout(TIMEOUT + SLACK, task)
                .await
                .unwrap_or_else(|_| panic!("member {member} hangs behind a killed peer"))
                .unwrap();
            assert!(completed >= 1);
            eprintln!(
                "member {member} failed {:?} after the kill, after {completed} collectives: {error}",
                failed_at.saturating_duration_since(killed)
            );
        }
    });
}

/// The child worker: prints its ring endpoint, reads the ring from stdin, and
/// all-reduces until killed.
fn child() {
    runtime().block_on(async {
        let node = common::node();
        println!(
            "READY {} {}",
            node.endpoint.local_addr().unwrap(),
            node.identity.fingerprint()
        );
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        let mut addresses = Vec::new();
        let mut counts = Vec::new();
        for member in line.trim().split(';') {
            let words: Vec<&str> = member.split_whitespace().collect();
            addresses.push((
                words[0].parse().unwrap(),
                words[1].parse::<Fingerprint>().unwrap(),
            ));
            counts.push(words[2].parse::<usize>().unwrap());
        }
        let spec = common::spec(&addresses, &counts, addresses.len() - 1);
        let ring = Ring::connect(
            &node.endpoint,
            &node.identity,
            &spec,
            common::config(TIMEOUT),
            &TransportTuning::default(),
        )
        .await
        .unwrap();
        let (sender, _receiver) = tokio::sync::mpsc::unbounded_channel();
        let (error, completed, _) = reduce_until_failure(ring, 2 << 20, sender).await;
        eprintln!("child: failed after {completed} collectives: {error}");
        std::process::exit(1);
    });
}
