//! The process harness of the benchmarks that run a ring of worker
//! processes on this machine (`bench allreduce`, `bench train`).
//!
//! The parent re-invokes the current executable once per member with a
//! hidden worker subcommand. Each worker binds a loopback QUIC endpoint and
//! prints `READY <address> <fingerprint>`; the parent sends every worker the
//! member list on stdin (`address fingerprint;...`), the workers form the
//! ring, measure, and worker 0 prints `RESULT <json>`, which the parent
//! returns.
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use protocol::Fingerprint;
use protocol::transport::{Identity, TransportTuning, bind_endpoint};
use worker::collective::{
    AllReduceAlgorithm, CollectiveConfig, Ring, RingLayout, RingMemberAddress, RingSpec,
};

/// The `--algorithm` of the ring benchmarks (see [`AllReduceAlgorithm`]).
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default)]
pub(crate) enum AlgorithmArg {
    /// The gather for small buffers, the ring otherwise.
    #[default]
    Auto,
    /// Reduce-scatter then all-gather.
    Ring,
    /// Every worker adds every virtual rank's values itself.
    Gather,
}

impl From<AlgorithmArg> for AllReduceAlgorithm {
    fn from(algorithm: AlgorithmArg) -> Self {
        match algorithm {
            AlgorithmArg::Auto => Self::Auto,
            AlgorithmArg::Ring => Self::Ring,
            AlgorithmArg::Gather => Self::Gather,
        }
    }
}

/// mimalloc's option for the worker processes, set unless the environment
/// already names it: with its default purge delay, mimalloc
/// handed freed pages back to the kernel while quinn allocated a fresh
/// buffer for every received datagram, and on transparent huge pages the
/// refaults cost a 4-worker all-reduce 1.6 million page faults and a third
/// of its busbw in some runs (BENCHMARKS.md, "Measurements of session 10").
/// The images set the same (deploy/docker/Dockerfile).
const ALLOCATOR_ENVIRONMENT: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "-1");

/// Starts `workers` processes of this executable with `arguments(index)`,
/// introduces them to each other, waits for all of them and returns the
/// JSON that worker 0 printed after `RESULT `.
pub(crate) fn run_ring_processes(
    workers: usize,
    arguments: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<serde_json::Value> {
    let executable = std::env::current_exe().context("locating the shoal executable")?;
    let mut children = Vec::new();
    for index in 0..workers {
        let mut command = Command::new(&executable);
        command
            .args(arguments(index))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let (name, value) = ALLOCATOR_ENVIRONMENT;
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
        children.push(command.spawn().context("starting a benchmark worker")?);
    }
    let mut readers = Vec::new();
    let mut members = Vec::new();
    for child in &mut children {
        let mut reader = BufReader::new(child.stdout.take().context("worker stdout")?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != 3 || words[0] != "READY" {
            bail!("a benchmark worker said {line:?} instead of READY <address> <fingerprint>");
        }
        members.push(format!("{} {}", words[1], words[2]));
        readers.push(reader);
    }
    for child in &mut children {
        let mut stdin = child.stdin.take().context("worker stdin")?;
        writeln!(stdin, "{}", members.join(";"))?;
    }
    let mut result = String::new();
    readers[0].read_line(&mut result)?;
    for child in &mut children {
        let status = child.wait()?;
        if !status.success() {
            bail!("a benchmark worker failed: {status}");
        }
    }
    let json = result
        .strip_prefix("RESULT ")
        .with_context(|| format!("worker 0 printed {result:?}"))?;
    Ok(serde_json::from_str(json)?)
}

/// The arguments of worker `index` of `shoal bench PARENT`: the hidden
/// `bench WORKER --index INDEX` subcommand followed by the parent's own
/// arguments, forwarded verbatim (the worker's arguments flatten the
/// parent's, so both parse them the same way).
pub(crate) fn worker_arguments(parent: &str, worker: &str, index: usize) -> Vec<String> {
    let own: Vec<String> = std::env::args().collect();
    let start = own
        .windows(2)
        .position(|pair| pair[0] == "bench" && pair[1] == parent)
        .map_or(own.len(), |position| position + 2);
    ["bench", worker, "--index", &index.to_string()]
        .map(String::from)
        .into_iter()
        .chain(own[start..].iter().cloned())
        .collect()
}

/// The worker side: binds an endpoint, prints `READY`, reads the member
/// list and forms the ring as member `index` of `workers`, hosting
/// `virtual_ranks` spread evenly. The endpoint must outlive the ring.
pub(crate) async fn join_ring(
    index: usize,
    workers: usize,
    virtual_ranks: usize,
    config: CollectiveConfig,
) -> anyhow::Result<(Ring, quinn::Endpoint)> {
    let tuning = TransportTuning::default();
    let identity = Identity::generate()?;
    let endpoint = bind_endpoint("127.0.0.1:0".parse()?, None, &tuning)?;
    println!(
        "READY {} {}",
        endpoint.local_addr()?,
        identity.fingerprint()
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let layout = RingLayout::even(virtual_ranks, workers);
    let mut members = Vec::new();
    for (member, text) in line.trim().split(';').enumerate() {
        let words: Vec<&str> = text.split_whitespace().collect();
        anyhow::ensure!(words.len() == 2, "bad member line {text:?}");
        members.push(RingMemberAddress {
            address: words[0].parse()?,
            fingerprint: words[1].parse::<Fingerprint>()?,
            virtual_rank_count: layout.hosted(member).len(),
        });
    }
    let spec = RingSpec {
        job_id: 0,
        generation: 0,
        members,
        my_index: index,
    };
    let ring = Ring::connect(&endpoint, &identity, &spec, config, &tuning).await?;
    Ok((ring, endpoint))
}

/// Waits (a second at most) until the endpoint's closed connections have
/// told their peers. A process that exits straight after
/// [`Ring::shutdown`] may never send its close frames: a neighbour still
/// waiting for an acknowledgement then waits out the idle timeout, which
/// held about one benchmark run in two for 10 s (session 8).
pub(crate) async fn wait_for_closes(endpoint: &quinn::Endpoint) {
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Prints worker 0's result line for [`run_ring_processes`].
pub(crate) fn print_result(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("RESULT {}", serde_json::to_string(value)?);
    std::io::stdout().flush()?;
    Ok(())
}

/// Median of `values` (sorted in place; 0 when empty).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
