//! The async driver of the ring collectives over QUIC.
//!
//! Each worker keeps one unidirectional stream to the next member of the ring
//! and one from the previous member. An all-reduce is data-driven: every
//! piece of the buffer travels as a [`PeerMessage::Chunk`] frame whose header
//! names it, so a worker starts the sums it owns the start of, then handles
//! pieces as they arrive (add its virtual ranks, pass the partial or final sum
//! on). Sending and receiving run concurrently; every wait is bounded by
//! [`CollectiveConfig::timeout`]. The additions follow
//! [`super::schedule`]'s documented order exactly.
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::message::{ChunkHeader, CollectivePhase, PeerHello, PeerMessage, StateHeader};
use protocol::tensor::{add_f32_le_bytes, f32_from_le_bytes, f32_to_le_bytes};
use protocol::transport::{
    self, FrameReader, Identity, TransportTuning, client_config, peer_server_config, write_frame,
};
use protocol::{Fingerprint, Frame, ProtocolError};

use super::CollectiveError;
use super::schedule::{ChunkRole, Piece, RingLayout, chain_start, chunk_role, pieces};

/// Knobs of the collectives.
#[derive(Debug, Clone)]
pub struct CollectiveConfig {
    /// Values per bucket: the unit cut into V chunks. Part of the summation
    /// order, so fixed per job like V.
    pub bucket_elements: usize,
    /// Largest number of values sent as one frame (pipelining granularity).
    pub piece_elements: usize,
    /// Longest wait for any neighbour to send or accept data, and for the ring
    /// to form.
    pub timeout: Duration,
    /// How an all-reduce moves its values (never what it computes).
    pub algorithm: AllReduceAlgorithm,
}

impl Default for CollectiveConfig {
    fn default() -> Self {
        Self {
            bucket_elements: 4 << 20,
            piece_elements: 256 << 10,
            timeout: Duration::from_secs(10),
            algorithm: AllReduceAlgorithm::Auto,
        }
    }
}

/// How an all-reduce moves values around the ring, in the spirit of NCCL's
/// choice between its algorithms. Every algorithm adds in the order of
/// [`super::schedule`], so the sums are bit-identical whichever runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllReduceAlgorithm {
    /// [`Self::Gather`] where its busiest link carries at most
    /// [`GATHER_MAX_LINK_BYTES`], and at most [`GATHER_BYTES_PER_SAVED_HOP`]
    /// more per saved hop than the ring's links; [`Self::Ring`] otherwise.
    #[default]
    Auto,
    /// Reduce-scatter then all-gather: 2(W-1) hops, each link carries
    /// 2(W-1)/W of the buffer. The bandwidth-optimal choice for large
    /// buffers.
    Ring,
    /// Each virtual rank's own values travel around the ring (W-1 hops) and
    /// every worker adds all virtual ranks itself: half the ring's hops, but
    /// the link into a worker carries every virtual rank it does not host.
    /// The latency-optimal choice for small buffers.
    Gather,
}

/// The extra link bytes [`AllReduceAlgorithm::Auto`] accepts for one hop
/// fewer: about a loopback QUIC hop's latency (60-100 us) times its
/// bandwidth (1 GB/s).
pub const GATHER_BYTES_PER_SAVED_HOP: u64 = 64 << 10;

/// The most bytes [`AllReduceAlgorithm::Auto`] lets the gather put on one
/// link: with two workers both algorithms carry the whole buffer per link,
/// yet the gather was slower from 8 MiB on (BENCHMARKS.md).
pub const GATHER_MAX_LINK_BYTES: u64 = 1 << 20;

impl AllReduceAlgorithm {
    /// The algorithm (never `Auto`) for a buffer of `len` values on `layout`.
    pub fn resolve(self, layout: &RingLayout, len: usize) -> Self {
        if self != Self::Auto {
            return self;
        }
        let workers = layout.workers() as u64;
        let bytes = (len * std::mem::size_of::<f32>()) as u64;
        let fewest_hosted = (0..layout.workers())
            .map(|worker| layout.hosted(worker).len())
            .min()
            .unwrap_or(0);
        let gather_link = (layout.virtual_ranks() - fewest_hosted) as u64 * bytes;
        let ring_link = (2 * workers.saturating_sub(1) * bytes).div_ceil(workers.max(1));
        let saved_hops = workers.saturating_sub(1);
        if gather_link <= GATHER_MAX_LINK_BYTES
            && gather_link <= ring_link + saved_hops * GATHER_BYTES_PER_SAVED_HOP
        {
            Self::Gather
        } else {
            Self::Ring
        }
    }
}

/// What one all-reduce moved and how long each of its buckets took on this
/// worker (for the metrics; see [`Ring::last_all_reduce`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllReduceStats {
    /// Workers in the ring.
    pub workers: usize,
    /// The buckets of the buffer, in buffer order.
    pub buckets: Vec<BucketStats>,
}

/// One bucket of an all-reduce.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketStats {
    /// Bytes of the bucket (f32 values x 4).
    pub bytes: u64,
    /// Time from the start of the all-reduce until the bucket's sum was
    /// complete on this worker.
    pub elapsed: Duration,
}

impl BucketStats {
    /// Bus bandwidth in bytes per second, as NCCL's tests define it: the
    /// bucket's bytes times 2(n-1)/n over its time, n the workers of the
    /// ring (what each link carried; 0 for one worker, whose collectives
    /// never touch the network).
    pub fn bus_bandwidth(&self, workers: usize) -> f64 {
        if workers < 2 {
            return 0.0;
        }
        let factor = 2.0 * (workers - 1) as f64 / workers as f64;
        self.bytes as f64 * factor / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Bytes of each bucket of a `len`-value buffer.
fn bucket_bytes(len: usize, bucket_elements: usize) -> Vec<u64> {
    (0..len.div_ceil(bucket_elements))
        .map(|bucket| {
            let start = bucket * bucket_elements;
            (bucket_elements.min(len - start) * std::mem::size_of::<f32>()) as u64
        })
        .collect()
}

/// Where one member of a ring listens and what it hosts.
#[derive(Debug, Clone)]
pub struct RingMemberAddress {
    /// Address of its ring endpoint.
    pub address: SocketAddr,
    /// Fingerprint of its ring certificate.
    pub fingerprint: Fingerprint,
    /// Number of consecutive virtual ranks it hosts.
    pub virtual_rank_count: usize,
}

/// Everything needed to form a ring (normally from the coordinator's
/// `RingMembership` message).
#[derive(Debug, Clone)]
pub struct RingSpec {
    /// Job concerned.
    pub job_id: u64,
    /// Ring generation: streams from other generations are refused.
    pub generation: u64,
    /// Members in ring order.
    pub members: Vec<RingMemberAddress>,
    /// This worker's index in `members`.
    pub my_index: usize,
}

struct Links {
    next_connection: quinn::Connection,
    to_next: quinn::SendStream,
    previous_connection: quinn::Connection,
    from_previous: FrameReader<PeerMessage>,
}

/// A formed ring: the streams to the neighbours and the collective state.
pub struct Ring {
    layout: RingLayout,
    me: usize,
    config: CollectiveConfig,
    sequence: u64,
    links: Option<Links>,
    poisoned: Option<String>,
    last_all_reduce: AllReduceStats,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Ring")
            .field("layout", &self.layout)
            .field("me", &self.me)
            .field("sequence", &self.sequence)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn setup_error(reason: impl std::fmt::Display) -> CollectiveError {
    CollectiveError::Setup {
        reason: reason.to_string(),
    }
}

impl Ring {
    /// Forms the ring: sets `endpoint`'s server configuration to accept only
    /// the previous member's certificate, connects to the next member
    /// (pinning its certificate, retrying until it listens) and waits for the
    /// previous member's stream, all within `config.timeout`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        identity: &Identity,
        spec: &RingSpec,
        config: CollectiveConfig,
        tuning: &TransportTuning,
    ) -> Result<Self, CollectiveError> {
        let counts: Vec<usize> = spec.members.iter().map(|m| m.virtual_rank_count).collect();
        let layout = RingLayout::new(&counts);
        let workers = layout.workers();
        let me = spec.my_index;
        if workers == 1 {
            return Ok(Self::local(layout, config));
        }
        let next = (me + 1) % workers;
        let previous = (me + workers - 1) % workers;
        endpoint.set_server_config(Some(
            peer_server_config(identity, vec![spec.members[previous].fingerprint], tuning)
                .map_err(setup_error)?,
        ));
        let hello = PeerMessage::Hello(PeerHello {
            job_id: spec.job_id,
            generation: spec.generation,
            member_index: me as u32,
        });
        let started = Instant::now();
        let timeout = config.timeout;
        let connect = async {
            let member = &spec.members[next];
            let client =
                client_config(member.fingerprint, Some(identity), tuning).map_err(setup_error)?;
            let connection = loop {
                let attempt = endpoint
                    .connect_with(client.clone(), member.address, transport::SERVER_NAME)
                    .map_err(setup_error)?
                    .await;
                match attempt {
                    Ok(connection) => break connection,
                    Err(error) if started.elapsed() < timeout => {
                        tracing::debug!(%error, member = next, "ring connect failed, retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(error) => {
                        return Err(setup_error(format!(
                            "cannot connect to member {next} at {}: {error}",
                            member.address
                        )));
                    }
                }
            };
            let mut send = connection.open_uni().await.map_err(setup_error)?;
            write_frame(&mut send, &hello, Bytes::new())
                .await
                .map_err(setup_error)?;
            Ok::<_, CollectiveError>((connection, send))
        };
        let accept = async {
            loop {
                let incoming = endpoint
                    .accept()
                    .await
                    .ok_or_else(|| setup_error("the ring endpoint was closed"))?;
                match accept_previous(incoming, spec, previous).await {
                    Ok(accepted) => return Ok::<_, CollectiveError>(accepted),
                    Err(error) => tracing::warn!(%error, "rejected a ring connection"),
                }
            }
        };
        let joined = tokio::time::timeout(timeout, async { tokio::try_join!(connect, accept) })
            .await
            .map_err(|_| CollectiveError::Timeout {
                what: "the ring to form",
                member: previous,
                after_ms: timeout.as_millis() as u64,
            })??;
        let ((next_connection, to_next), (previous_connection, from_previous)) = joined;
        Ok(Self {
            layout,
            me,
            config,
            sequence: 0,
            links: Some(Links {
                next_connection,
                to_next,
                previous_connection,
                from_previous,
            }),
            poisoned: None,
            last_all_reduce: AllReduceStats::default(),
        })
    }

    /// A ring of one worker hosting every virtual rank: collectives are
    /// memory operations.
    pub fn local(layout: RingLayout, config: CollectiveConfig) -> Self {
        assert_eq!(layout.workers(), 1, "a local ring has exactly one worker");
        Self {
            layout,
            me: 0,
            config,
            sequence: 0,
            links: None,
            poisoned: None,
            last_all_reduce: AllReduceStats::default(),
        }
    }

    /// How the virtual ranks are spread over the ring.
    pub fn layout(&self) -> &RingLayout {
        &self.layout
    }

    /// This worker's index in the ring.
    pub fn member_index(&self) -> usize {
        self.me
    }

    /// Virtual ranks hosted by this worker.
    pub fn hosted(&self) -> Range<usize> {
        self.layout.hosted(self.me)
    }

    /// The buckets of the last all-reduce that completed: their sizes and
    /// when each was complete here.
    pub fn last_all_reduce(&self) -> &AllReduceStats {
        &self.last_all_reduce
    }

    /// Sums the gradients of all virtual ranks of the ring, element by element,
    /// in the order of [`super::schedule`]. `gradients[i]` is the buffer of
    /// hosted virtual rank `hosted().start + i`. On success the sum is in
    /// `gradients[0]` (bit-identical on every worker, whatever the number of
    /// workers); the other buffers are used as scratch and hold unspecified
    /// values. On error the ring is unusable and must be re-formed.
    ///
    /// # Panics
    /// If the number of buffers is not the number of hosted virtual ranks, or
    /// the buffers differ in length (programming errors).
    pub async fn all_reduce(&mut self, gradients: &mut [Vec<f32>]) -> Result<(), CollectiveError> {
        self.check_usable()?;
        let hosted = self.hosted();
        assert_eq!(
            gradients.len(),
            hosted.len(),
            "all_reduce needs one buffer per hosted virtual rank"
        );
        let len = gradients[0].len();
        assert!(
            gradients.iter().all(|gradient| gradient.len() == len),
            "all_reduce buffers differ in length"
        );
        self.sequence += 1;
        let started = Instant::now();
        let bytes = bucket_bytes(len, self.config.bucket_elements);
        let Some(links) = self.links.as_mut() else {
            let done = local_all_reduce(gradients, &self.config, started);
            self.last_all_reduce = stats(1, &bytes, &done, started);
            return Ok(());
        };
        let result = match self.config.algorithm.resolve(&self.layout, len) {
            AllReduceAlgorithm::Gather => {
                gather_all_reduce(
                    links,
                    &self.layout,
                    self.me,
                    &self.config,
                    self.sequence,
                    gradients,
                    started,
                )
                .await
            }
            _ => {
                distributed_all_reduce(
                    links,
                    &self.layout,
                    self.me,
                    &self.config,
                    self.sequence,
                    gradients,
                    started,
                )
                .await
            }
        };
        let workers = self.layout.workers();
        let result = result.map(|done| {
            self.last_all_reduce = stats(workers, &bytes, &done, started);
        });
        self.settle(result)
    }

    /// Copies `data` from member `root` to every other member (the state sent
    /// to a joining worker, for example). On non-root members `data` is
    /// replaced.
    pub async fn broadcast(
        &mut self,
        root: usize,
        data: &mut Vec<u8>,
    ) -> Result<(), CollectiveError> {
        self.check_usable()?;
        self.sequence += 1;
        let workers = self.layout.workers();
        assert!(root < workers, "broadcast root {root} is not a member");
        let Some(links) = self.links.as_mut() else {
            return Ok(());
        };
        let result = distributed_broadcast(
            links,
            self.me,
            workers,
            root,
            &self.config,
            self.sequence,
            data,
        )
        .await;
        self.settle(result)
    }

    /// Returns once every member has entered the barrier.
    pub async fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.check_usable()?;
        self.sequence += 1;
        let workers = self.layout.workers();
        let Some(links) = self.links.as_mut() else {
            return Ok(());
        };
        let result =
            distributed_barrier(links, self.me, workers, &self.config, self.sequence).await;
        self.settle(result)
    }

    /// Leaves the ring cleanly: finishes the stream to the next member and
    /// waits (within the timeout) until it has everything, waits for the
    /// previous member to finish its stream, then closes both connections.
    /// Dropping a ring instead closes its connections at once, discarding
    /// data not yet delivered, which the neighbours see as a failure.
    pub async fn shutdown(mut self) {
        let Some(mut links) = self.links.take() else {
            return;
        };
        let timeout = self.config.timeout;
        if self.poisoned.is_none() {
            let delivered = async {
                let _ = links.to_next.finish();
                let _ = links.to_next.stopped().await;
            };
            let drained = async { while let Ok(Some(_)) = links.from_previous.next().await {} };
            let _ = tokio::time::timeout(timeout, async { tokio::join!(delivered, drained) }).await;
        }
        links
            .next_connection
            .close(transport::CLOSE_NORMAL.into(), b"ring closed");
        links
            .previous_connection
            .close(transport::CLOSE_NORMAL.into(), b"ring closed");
    }

    fn check_usable(&self) -> Result<(), CollectiveError> {
        match &self.poisoned {
            Some(reason) => Err(CollectiveError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// After a failure: remember it and close both connections at once, so
    /// that the neighbours fail now rather than at their own timeouts.
    fn settle(&mut self, result: Result<(), CollectiveError>) -> Result<(), CollectiveError> {
        if let Err(error) = &result {
            tracing::warn!(%error, member = self.me, "collective failed; closing the ring");
            let reason = error.to_string();
            let reason = &reason.as_bytes()[..reason.len().min(512)];
            if let Some(links) = &self.links {
                let code = transport::CLOSE_COLLECTIVE_FAILED.into();
                links.next_connection.close(code, reason);
                links.previous_connection.close(code, reason);
            }
            self.poisoned = Some(error.to_string());
        }
        result
    }
}

async fn accept_previous(
    incoming: quinn::Incoming,
    spec: &RingSpec,
    previous: usize,
) -> Result<(quinn::Connection, FrameReader<PeerMessage>), ProtocolError> {
    let connection = incoming.await?;
    let check = async {
        let recv = connection.accept_uni().await?;
        let mut reader = FrameReader::<PeerMessage>::new(recv);
        let frame = reader.expect("a ring hello").await?;
        match frame.message {
            PeerMessage::Hello(hello)
                if hello.job_id == spec.job_id
                    && hello.generation == spec.generation
                    && hello.member_index as usize == previous =>
            {
                Ok(reader)
            }
            other => Err(ProtocolError::UnexpectedMessage {
                expected: "a hello from the previous ring member",
                got: format!("{other:?}"),
            }),
        }
    };
    match check.await {
        Ok(reader) => Ok((connection, reader)),
        Err(error) => {
            transport::close_for_protocol_error(&connection, &error);
            Err(error)
        }
    }
}

/// `gradients[target][range] += gradients[source][range]`, element by element.
fn add_slot(gradients: &mut [Vec<f32>], target: usize, source: usize, range: Range<usize>) {
    assert_ne!(target, source, "a virtual rank is never added to itself");
    let (target, source) = if target < source {
        let (low, high) = gradients.split_at_mut(source);
        (&mut low[target], &high[0])
    } else {
        let (low, high) = gradients.split_at_mut(target);
        (&mut high[0], &low[source])
    };
    for (sum, value) in target[range.clone()].iter_mut().zip(&source[range]) {
        *sum += *value;
    }
}

/// The statistics of an all-reduce whose buckets were complete at `done`
/// (`None`: at the end).
fn stats(
    workers: usize,
    bytes: &[u64],
    done: &[Option<Duration>],
    started: Instant,
) -> AllReduceStats {
    let end = started.elapsed();
    AllReduceStats {
        workers,
        buckets: bytes
            .iter()
            .enumerate()
            .map(|(bucket, &bytes)| BucketStats {
                bytes,
                elapsed: done.get(bucket).copied().flatten().unwrap_or(end),
            })
            .collect(),
    }
}

/// One worker hosting every virtual rank: the whole chain of each chunk is
/// local, summed in the slot of its starting rank, then copied to slot 0.
/// Returns when each bucket was complete (after `started`).
fn local_all_reduce(
    gradients: &mut [Vec<f32>],
    config: &CollectiveConfig,
    started: Instant,
) -> Vec<Option<Duration>> {
    let virtual_ranks = gradients.len();
    let len = gradients[0].len();
    let mut done = vec![None; len.div_ceil(config.bucket_elements)];
    for piece in pieces(
        len,
        config.bucket_elements,
        config.piece_elements,
        virtual_ranks,
    ) {
        let start = chain_start(virtual_ranks, piece.chunk);
        for step in 1..virtual_ranks {
            add_slot(
                gradients,
                start,
                (start + step) % virtual_ranks,
                piece.range.clone(),
            );
        }
        if start != 0 {
            let (low, high) = gradients.split_at_mut(start);
            low[0][piece.range.clone()].copy_from_slice(&high[0][piece.range.clone()]);
        }
        // Pieces come in buffer order: a bucket's last piece completes it.
        done[piece.range.start / config.bucket_elements] = Some(started.elapsed());
    }
    done
}

fn timed_out(what: &'static str, member: usize, timeout: Duration) -> CollectiveError {
    CollectiveError::Timeout {
        what,
        member,
        after_ms: timeout.as_millis() as u64,
    }
}

async fn send_frame(
    send: &mut quinn::SendStream,
    message: &PeerMessage,
    payload: Bytes,
    member: usize,
    timeout: Duration,
) -> Result<(), CollectiveError> {
    tokio::time::timeout(timeout, write_frame(send, message, payload))
        .await
        .map_err(|_| timed_out("the next member to accept data", member, timeout))?
        .map_err(|source| CollectiveError::Transport { member, source })
}

async fn receive_frame(
    reader: &mut FrameReader<PeerMessage>,
    member: usize,
    timeout: Duration,
) -> Result<Frame<PeerMessage>, CollectiveError> {
    tokio::time::timeout(timeout, reader.next())
        .await
        .map_err(|_| timed_out("data from the previous member", member, timeout))?
        .map_err(|source| CollectiveError::Transport { member, source })?
        .ok_or(CollectiveError::PeerClosed { member })
}

/// When each bucket of an all-reduce was complete on this worker: a bucket is
/// complete once every one of its pieces is.
struct BucketProgress {
    bucket_elements: usize,
    incomplete: Vec<usize>,
    done: Vec<Option<Duration>>,
    started: Instant,
}

impl BucketProgress {
    /// `pending[i]`: whether piece `i` still awaits something here.
    fn new(
        pieces: &[Piece],
        pending: impl Fn(usize) -> bool,
        len: usize,
        bucket_elements: usize,
        started: Instant,
    ) -> Self {
        let mut incomplete = vec![0usize; len.div_ceil(bucket_elements)];
        for (index, piece) in pieces.iter().enumerate() {
            if pending(index) {
                incomplete[piece.range.start / bucket_elements] += 1;
            }
        }
        let done = incomplete
            .iter()
            .map(|&count| (count == 0).then(|| started.elapsed()))
            .collect();
        Self {
            bucket_elements,
            incomplete,
            done,
            started,
        }
    }

    fn piece_complete(&mut self, piece: &Piece) {
        let bucket = piece.range.start / self.bucket_elements;
        self.incomplete[bucket] -= 1;
        if self.incomplete[bucket] == 0 {
            self.done[bucket] = Some(self.started.elapsed());
        }
    }
}

/// The piece a received chunk header names, or why it names none.
fn received_piece(pieces: &[Piece], chunk: &ChunkHeader, len: usize) -> Result<usize, String> {
    let index = pieces
        .binary_search_by_key(&chunk.element_offset, |piece| piece.range.start as u64)
        .map_err(|_| {
            format!(
                "no piece starts at element {} of a {len}-value buffer",
                chunk.element_offset
            )
        })?;
    let expected = pieces[index].range.len();
    if chunk.element_count as usize != expected {
        return Err(format!(
            "piece at element {} has {} values, expected {expected}",
            chunk.element_offset, chunk.element_count
        ));
    }
    Ok(index)
}

/// Frames queued for the next member, in order.
type Outgoing = tokio::sync::mpsc::UnboundedSender<(ChunkHeader, Bytes)>;

/// Runs `receive` (which queues frames for the next member on the sender
/// it is given, and drops it when done) concurrently with the writer of
/// those frames; fails as soon as either does.
async fn with_frame_writer<T, R>(
    to_next: &mut quinn::SendStream,
    next: usize,
    timeout: Duration,
    receive: impl FnOnce(Outgoing) -> R,
) -> Result<T, CollectiveError>
where
    R: Future<Output = Result<T, CollectiveError>>,
{
    let (outgoing, mut incoming) = tokio::sync::mpsc::unbounded_channel::<(ChunkHeader, Bytes)>();
    let writer = async {
        while let Some((header, payload)) = incoming.recv().await {
            send_frame(to_next, &PeerMessage::Chunk(header), payload, next, timeout).await?;
        }
        Ok::<(), CollectiveError>(())
    };
    let ((), received) = tokio::try_join!(writer, receive(outgoing))?;
    Ok(received)
}

/// Receives the next frame and checks that it is a chunk of collective
/// `sequence`.
async fn receive_chunk(
    from_previous: &mut FrameReader<PeerMessage>,
    previous: usize,
    sequence: u64,
    timeout: Duration,
) -> Result<(ChunkHeader, Bytes), CollectiveError> {
    let frame = receive_frame(from_previous, previous, timeout).await?;
    let PeerMessage::Chunk(chunk) = frame.message else {
        return Err(CollectiveError::UnexpectedFrame {
            member: previous,
            reason: format!(
                "expected a chunk of collective {sequence}, got {:?}",
                frame.message
            ),
        });
    };
    if chunk.collective != sequence {
        return Err(CollectiveError::UnexpectedFrame {
            member: previous,
            reason: format!(
                "chunk of collective {} during collective {sequence}",
                chunk.collective
            ),
        });
    }
    Ok((chunk, frame.payload))
}

fn chunk_header(sequence: u64, phase: CollectivePhase, range: &Range<usize>) -> ChunkHeader {
    ChunkHeader {
        collective: sequence,
        phase,
        element_offset: range.start as u64,
        element_count: range.len() as u32,
    }
}

/// The ring algorithm: reduce-scatter then all-gather, data-driven.
async fn distributed_all_reduce(
    links: &mut Links,
    layout: &RingLayout,
    me: usize,
    config: &CollectiveConfig,
    sequence: u64,
    gradients: &mut [Vec<f32>],
    started: Instant,
) -> Result<Vec<Option<Duration>>, CollectiveError> {
    let workers = layout.workers();
    let virtual_ranks = layout.virtual_ranks();
    let next = (me + 1) % workers;
    let previous = (me + workers - 1) % workers;
    let first_hosted = layout.hosted(me).start;
    let timeout = config.timeout;
    let len = gradients[0].len();
    let pieces = pieces(
        len,
        config.bucket_elements,
        config.piece_elements,
        virtual_ranks,
    );
    let roles: Vec<ChunkRole> = (0..virtual_ranks)
        .map(|chunk| chunk_role(layout, me, chunk))
        .collect();
    let mut awaiting_partial: Vec<bool> = pieces
        .iter()
        .map(|piece| roles[piece.chunk].entering.is_some())
        .collect();
    let mut awaiting_final: Vec<bool> = pieces
        .iter()
        .map(|piece| !roles[piece.chunk].owns)
        .collect();
    let mut remaining = awaiting_partial.iter().filter(|&&a| a).count()
        + awaiting_final.iter().filter(|&&a| a).count();
    let mut progress = BucketProgress::new(
        &pieces,
        |index| awaiting_partial[index] || awaiting_final[index],
        len,
        config.bucket_elements,
        started,
    );
    let Links {
        to_next,
        from_previous,
        ..
    } = links;
    let receive = move |outgoing: Outgoing| async move {
        let queue = |phase: CollectivePhase, range: &Range<usize>, payload: Bytes| {
            // The writer lives as long as this future unless it failed, in
            // which case try_join returns its error first.
            let _ = outgoing.send((chunk_header(sequence, phase, range), payload));
        };
        for piece in &pieces {
            if let Some(ranks) = &roles[piece.chunk].start {
                let slot = ranks.start - first_hosted;
                for rank in ranks.start + 1..ranks.end {
                    add_slot(gradients, slot, rank - first_hosted, piece.range.clone());
                }
                let payload = f32_to_le_bytes(&gradients[slot][piece.range.clone()]);
                queue(CollectivePhase::ReduceScatter, &piece.range, payload.into());
            }
        }
        let unexpected = |reason: String| CollectiveError::UnexpectedFrame {
            member: previous,
            reason,
        };
        let payload_error = |source: ProtocolError| CollectiveError::Transport {
            member: previous,
            source,
        };
        while remaining > 0 {
            let (chunk, payload) =
                receive_chunk(from_previous, previous, sequence, timeout).await?;
            let index = received_piece(&pieces, &chunk, len).map_err(unexpected)?;
            let piece = &pieces[index];
            let role = &roles[piece.chunk];
            let range = piece.range.clone();
            match chunk.phase {
                CollectivePhase::ReduceScatter => {
                    if !std::mem::take(&mut awaiting_partial[index]) {
                        return Err(unexpected(format!(
                            "unexpected partial sum at element {}",
                            chunk.element_offset
                        )));
                    }
                    let entering = role
                        .entering
                        .clone()
                        .expect("a piece awaiting a partial sum has an entering segment");
                    add_f32_le_bytes(&payload, &mut gradients[0][range.clone()])
                        .map_err(payload_error)?;
                    for rank in entering.start + 1..entering.end {
                        add_slot(gradients, 0, rank - first_hosted, range.clone());
                    }
                    let phase = if role.owns {
                        CollectivePhase::AllGather
                    } else {
                        CollectivePhase::ReduceScatter
                    };
                    let sum = f32_to_le_bytes(&gradients[0][range.clone()]);
                    queue(phase, &range, sum.into());
                }
                CollectivePhase::AllGather => {
                    if !std::mem::take(&mut awaiting_final[index]) {
                        return Err(unexpected(format!(
                            "unexpected final sum at element {}",
                            chunk.element_offset
                        )));
                    }
                    f32_from_le_bytes(&payload, &mut gradients[0][range.clone()])
                        .map_err(payload_error)?;
                    if role.forward_final {
                        queue(CollectivePhase::AllGather, &range, payload);
                    }
                }
                CollectivePhase::RawValues { .. } => {
                    return Err(unexpected(format!(
                        "raw values at element {} during a ring all-reduce",
                        chunk.element_offset
                    )));
                }
            }
            remaining -= 1;
            if !awaiting_partial[index] && !awaiting_final[index] {
                progress.piece_complete(piece);
            }
        }
        Ok::<_, CollectiveError>(progress.done)
    };
    with_frame_writer(to_next, next, timeout, receive).await
}

/// The gather algorithm: every worker sends its virtual ranks' own values
/// to the next member, each member passes on what the next one does not
/// host, and every worker adds all V virtual ranks itself in the documented
/// order, piece by piece as the last of a piece's values arrives.
async fn gather_all_reduce(
    links: &mut Links,
    layout: &RingLayout,
    me: usize,
    config: &CollectiveConfig,
    sequence: u64,
    gradients: &mut [Vec<f32>],
    started: Instant,
) -> Result<Vec<Option<Duration>>, CollectiveError> {
    let workers = layout.workers();
    let virtual_ranks = layout.virtual_ranks();
    let next = (me + 1) % workers;
    let previous = (me + workers - 1) % workers;
    let hosted = layout.hosted(me);
    let hosted_by_next = layout.hosted(next);
    let timeout = config.timeout;
    let len = gradients[0].len();
    let pieces = pieces(
        len,
        config.bucket_elements,
        config.piece_elements,
        virtual_ranks,
    );
    // The values of the virtual ranks hosted elsewhere, filled as they come.
    let mut others: Vec<Vec<f32>> = (0..virtual_ranks)
        .map(|rank| {
            if hosted.contains(&rank) {
                Vec::new()
            } else {
                vec![0.0; len]
            }
        })
        .collect();
    let mut arrived = vec![vec![false; virtual_ranks]; pieces.len()];
    let mut missing = vec![virtual_ranks - hosted.len(); pieces.len()];
    let mut remaining = pieces.len() * (virtual_ranks - hosted.len());
    let mut progress = BucketProgress::new(&pieces, |_| true, len, config.bucket_elements, started);
    let longest_piece = pieces.iter().map(|piece| piece.range.len()).max();
    let mut sum = vec![0.0f32; longest_piece.unwrap_or(0)];
    let Links {
        to_next,
        from_previous,
        ..
    } = links;
    let receive = move |outgoing: Outgoing| async move {
        for piece in &pieces {
            for rank in hosted.clone() {
                let values = f32_to_le_bytes(&gradients[rank - hosted.start][piece.range.clone()]);
                let phase = CollectivePhase::RawValues {
                    virtual_rank: rank as u32,
                };
                // The writer lives as long as this future unless it failed, in
                // which case try_join returns its error first.
                let _ = outgoing.send((chunk_header(sequence, phase, &piece.range), values.into()));
            }
        }
        let unexpected = |reason: String| CollectiveError::UnexpectedFrame {
            member: previous,
            reason,
        };
        while remaining > 0 {
            let (chunk, payload) =
                receive_chunk(from_previous, previous, sequence, timeout).await?;
            let index = received_piece(&pieces, &chunk, len).map_err(unexpected)?;
            let CollectivePhase::RawValues { virtual_rank } = chunk.phase else {
                return Err(unexpected(format!(
                    "{:?} at element {} during a gather all-reduce",
                    chunk.phase, chunk.element_offset
                )));
            };
            let rank = virtual_rank as usize;
            if rank >= virtual_ranks || hosted.contains(&rank) || arrived[index][rank] {
                return Err(unexpected(format!(
                    "unexpected values of virtual rank {rank} at element {}",
                    chunk.element_offset
                )));
            }
            arrived[index][rank] = true;
            let piece = &pieces[index];
            f32_from_le_bytes(&payload, &mut others[rank][piece.range.clone()]).map_err(
                |source| CollectiveError::Transport {
                    member: previous,
                    source,
                },
            )?;
            if !hosted_by_next.contains(&rank) {
                let _ = outgoing.send((chunk, payload));
            }
            remaining -= 1;
            missing[index] -= 1;
            if missing[index] == 0 {
                let range = piece.range.clone();
                let values_of = |rank: usize| -> &[f32] {
                    if hosted.contains(&rank) {
                        &gradients[rank - hosted.start][range.clone()]
                    } else {
                        &others[rank][range.clone()]
                    }
                };
                let start = chain_start(virtual_ranks, piece.chunk);
                let sum = &mut sum[..range.len()];
                sum.copy_from_slice(values_of(start));
                for step in 1..virtual_ranks {
                    let values = values_of((start + step) % virtual_ranks);
                    for (total, value) in sum.iter_mut().zip(values) {
                        *total += *value;
                    }
                }
                gradients[0][range].copy_from_slice(sum);
                progress.piece_complete(piece);
            }
        }
        drop(outgoing);
        Ok::<_, CollectiveError>(progress.done)
    };
    with_frame_writer(to_next, next, timeout, receive).await
}

/// Largest broadcast piece, bytes.
const BROADCAST_PIECE_BYTES: usize = 1 << 20;

async fn distributed_broadcast(
    links: &mut Links,
    me: usize,
    workers: usize,
    root: usize,
    config: &CollectiveConfig,
    sequence: u64,
    data: &mut Vec<u8>,
) -> Result<(), CollectiveError> {
    let next = (me + 1) % workers;
    let previous = (me + workers - 1) % workers;
    let timeout = config.timeout;
    if me == root {
        let total = data.len();
        let mut offset = 0;
        loop {
            let count = BROADCAST_PIECE_BYTES.min(total - offset);
            let header = PeerMessage::State(StateHeader {
                collective: sequence,
                total_bytes: total as u64,
                byte_offset: offset as u64,
                byte_count: count as u32,
            });
            let payload = Bytes::copy_from_slice(&data[offset..offset + count]);
            send_frame(&mut links.to_next, &header, payload, next, timeout).await?;
            offset += count;
            if offset >= total {
                return Ok(());
            }
        }
    }
    data.clear();
    let forward = next != root;
    loop {
        let frame = receive_frame(&mut links.from_previous, previous, timeout).await?;
        let PeerMessage::State(state) = &frame.message else {
            return Err(CollectiveError::UnexpectedFrame {
                member: previous,
                reason: format!("expected a broadcast piece, got {:?}", frame.message),
            });
        };
        if state.collective != sequence
            || state.byte_offset != data.len() as u64
            || state.byte_count as usize != frame.payload.len()
            || state.byte_offset + u64::from(state.byte_count) > state.total_bytes
        {
            return Err(CollectiveError::UnexpectedFrame {
                member: previous,
                reason: format!(
                    "broadcast piece {state:?} does not follow the {} bytes received in collective {sequence}",
                    data.len()
                ),
            });
        }
        data.extend_from_slice(&frame.payload);
        let done = data.len() as u64 == state.total_bytes;
        if forward {
            let message = frame.message.clone();
            send_frame(&mut links.to_next, &message, frame.payload, next, timeout).await?;
        }
        if done {
            return Ok(());
        }
    }
}

async fn distributed_barrier(
    links: &mut Links,
    me: usize,
    workers: usize,
    config: &CollectiveConfig,
    sequence: u64,
) -> Result<(), CollectiveError> {
    let next = (me + 1) % workers;
    let previous = (me + workers - 1) % workers;
    let timeout = config.timeout;
    for round in 0..2u8 {
        let token = PeerMessage::Barrier { sequence, round };
        if me == 0 {
            send_frame(&mut links.to_next, &token, Bytes::new(), next, timeout).await?;
        }
        let frame = receive_frame(&mut links.from_previous, previous, timeout).await?;
        if frame.message != token {
            return Err(CollectiveError::UnexpectedFrame {
                member: previous,
                reason: format!("expected {token:?}, got {:?}", frame.message),
            });
        }
        if me != 0 {
            send_frame(&mut links.to_next, &token, Bytes::new(), next, timeout).await?;
        }
    }
    Ok(())
}
