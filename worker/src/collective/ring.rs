//! The async driver of the ring collectives over QUIC.
//!
//! Each worker keeps one unidirectional stream to the next member of the ring
//! and one from the previous member. An all-reduce is data-driven: every
//! piece of the buffer travels as a [`PeerMessage::Chunk`] frame whose header
//! names its collective and its place, and [`super::reduction`]'s state
//! machine says what each frame causes (add this worker's virtual ranks,
//! pass a partial or final sum on). Several all-reduces can be in flight at
//! once ([`Ring::all_reduce_buckets`]). Sending and receiving run
//! concurrently; every wait is bounded by [`CollectiveConfig::timeout`]. The
//! additions follow [`super::schedule`]'s documented order exactly.
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::message::{ChunkHeader, PeerHello, PeerMessage, StateHeader};
use protocol::tensor::PayloadPool;
use protocol::transport::{
    self, FrameReader, Identity, TransportTuning, client_config, peer_server_config, write_frame,
};
use protocol::{Fingerprint, Frame, Payload, ProtocolError};

use tokio::sync::mpsc;

use super::CollectiveError;
use super::reduction::{Outgoing, Reduced, Reduction, add_slot};
use super::schedule::{RingLayout, chain_start, pieces};

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
    /// Most buffers of [`Ring::all_reduce_buckets`] moving at once (the
    /// job's `gradient_buckets_in_flight`; at least 1). Never changes the
    /// sums.
    pub buckets_in_flight: usize,
}

impl Default for CollectiveConfig {
    fn default() -> Self {
        Self {
            bucket_elements: 4 << 20,
            piece_elements: 256 << 10,
            timeout: Duration::from_secs(10),
            algorithm: AllReduceAlgorithm::Auto,
            buckets_in_flight: protocol::spec::DEFAULT_GRADIENT_BUCKETS_IN_FLIGHT,
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

/// One buffer's sum from [`Ring::all_reduce_buckets`].
#[derive(Debug, Clone)]
pub struct ReducedBucket {
    /// The sum over every virtual rank (identical on every worker).
    pub sum: Vec<f32>,
    /// Its bytes and the time from its start to its completion here.
    pub stats: BucketStats,
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
    /// Buffers of the payloads sent to the next member, reused from one
    /// all-reduce to the next.
    payloads: PayloadPool,
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
                payloads: PayloadPool::new(),
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
    /// workers and the [`AllReduceAlgorithm`]); the other buffers are used as
    /// scratch and hold unspecified values. On error the ring is unusable and
    /// must be re-formed, and the buffers are left empty.
    ///
    /// # Panics
    /// If the number of buffers is not the number of hosted virtual ranks, or
    /// the buffers differ in length (programming errors).
    pub async fn all_reduce(&mut self, gradients: &mut [Vec<f32>]) -> Result<(), CollectiveError> {
        let (sender, mut ready) = mpsc::unbounded_channel();
        let _ = sender.send(gradients.iter_mut().map(std::mem::take).collect());
        drop(sender);
        let (reduced, _) = self
            .reduce_stream(1, &mut ready, 1)
            .await?
            .pop()
            .expect("one reduction per buffer");
        let bytes = bucket_bytes(reduced.gradients[0].len(), self.config.bucket_elements);
        self.last_all_reduce = AllReduceStats {
            workers: self.layout.workers(),
            buckets: bytes
                .iter()
                .zip(&reduced.done)
                .map(|(&bytes, &elapsed)| BucketStats { bytes, elapsed })
                .collect(),
        };
        for (slot, values) in gradients.iter_mut().zip(reduced.gradients) {
            *slot = values;
        }
        Ok(())
    }

    /// All-reduces `count` buffers that come from `ready` one after the
    /// other (as [`Self::all_reduce`] would, each its own collective, the
    /// item being one buffer per hosted virtual rank), with up to
    /// [`CollectiveConfig::buckets_in_flight`] of them moving at once: a
    /// buffer starts as soon as it is ready and fewer than that are
    /// unfinished. Every worker must hand over the same buffer lengths in the
    /// same order, with the same configuration. Returns the sums in order,
    /// each with its bytes and the time from its start to its completion
    /// here.
    ///
    /// # Errors
    /// As [`Self::all_reduce`], and [`CollectiveError::Abandoned`] when
    /// `ready` closes before `count` buffers came (the ring is then unusable
    /// too: its neighbours wait for the rest).
    ///
    /// # Panics
    /// If a buffer set does not hold one buffer per hosted virtual rank of
    /// one length.
    pub async fn all_reduce_buckets(
        &mut self,
        count: usize,
        ready: &mut mpsc::UnboundedReceiver<Vec<Vec<f32>>>,
    ) -> Result<Vec<ReducedBucket>, CollectiveError> {
        let in_flight = self.config.buckets_in_flight;
        let reduced = self.reduce_stream(count, ready, in_flight).await?;
        let buckets: Vec<ReducedBucket> = reduced
            .into_iter()
            .map(|(mut reduced, elapsed)| {
                let sum = reduced.gradients.swap_remove(0);
                let bytes = (sum.len() * std::mem::size_of::<f32>()) as u64;
                ReducedBucket {
                    sum,
                    stats: BucketStats { bytes, elapsed },
                }
            })
            .collect();
        self.last_all_reduce = AllReduceStats {
            workers: self.layout.workers(),
            buckets: buckets.iter().map(|bucket| bucket.stats).collect(),
        };
        Ok(buckets)
    }

    /// The shared part of [`Self::all_reduce`] and
    /// [`Self::all_reduce_buckets`]: one collective sequence number per
    /// buffer, the local or distributed driver, and the failure handling.
    async fn reduce_stream(
        &mut self,
        count: usize,
        ready: &mut mpsc::UnboundedReceiver<Vec<Vec<f32>>>,
        in_flight: usize,
    ) -> Result<Vec<(Reduced, Duration)>, CollectiveError> {
        self.check_usable()?;
        let first_sequence = self.sequence + 1;
        self.sequence += count as u64;
        let hosted = self.hosted().len();
        let Some(links) = self.links.as_mut() else {
            let mut reduced = Vec::with_capacity(count);
            for handed_over in 0..count {
                let mut gradients = ready.recv().await.ok_or(CollectiveError::Abandoned {
                    handed_over,
                    expected: count,
                })?;
                check_buffers(&gradients, hosted);
                let started = Instant::now();
                let done = local_all_reduce(&mut gradients, &self.config, started);
                reduced.push((Reduced { gradients, done }, started.elapsed()));
            }
            return Ok(reduced);
        };
        let result = drive(
            links,
            &self.layout,
            self.me,
            &self.config,
            first_sequence,
            count,
            ready,
            in_flight.max(1),
        )
        .await;
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
    fn settle<T>(&mut self, result: Result<T, CollectiveError>) -> Result<T, CollectiveError> {
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

/// One worker hosting every virtual rank: the whole chain of each chunk is
/// local, summed in the slot of its starting rank, then copied to slot 0.
/// Returns when each bucket was complete (after `started`).
fn local_all_reduce(
    gradients: &mut [Vec<f32>],
    config: &CollectiveConfig,
    started: Instant,
) -> Vec<Duration> {
    let virtual_ranks = gradients.len();
    let len = gradients[0].len();
    let mut done = vec![Duration::ZERO; len.div_ceil(config.bucket_elements)];
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
        done[piece.range.start / config.bucket_elements] = started.elapsed();
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
    payload: impl Into<Payload>,
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

/// Checks that a buffer set holds one buffer per hosted virtual rank, all of
/// one length.
#[track_caller]
fn check_buffers(gradients: &[Vec<f32>], hosted: usize) {
    assert_eq!(
        gradients.len(),
        hosted,
        "all_reduce needs one buffer per hosted virtual rank"
    );
    let len = gradients[0].len();
    assert!(
        gradients.iter().all(|gradient| gradient.len() == len),
        "all_reduce buffers differ in length"
    );
}

/// Runs `count` reductions over the ring, collectives `first_sequence..`,
/// starting each as its buffers come from `ready` while fewer than
/// `in_flight` are unfinished. Frames go out through one writer in the
/// order the reductions produce them; frames that come in are dispatched by
/// their collective number, and those of a collective this worker has not
/// started yet (its neighbour was ready first) wait until it starts. Every
/// wait for a frame is bounded by the timeout, and armed only while a
/// reduction is in flight (never while this worker computes).
#[allow(clippy::too_many_arguments)]
async fn drive(
    links: &mut Links,
    layout: &RingLayout,
    me: usize,
    config: &CollectiveConfig,
    first_sequence: u64,
    count: usize,
    ready: &mut mpsc::UnboundedReceiver<Vec<Vec<f32>>>,
    in_flight: usize,
) -> Result<Vec<(Reduced, Duration)>, CollectiveError> {
    let workers = layout.workers();
    let next = (me + 1) % workers;
    let previous = (me + workers - 1) % workers;
    let hosted = layout.hosted(me).len();
    let timeout = config.timeout;
    let Links {
        payloads,
        to_next,
        from_previous,
        ..
    } = links;
    let (outgoing, mut queued) = mpsc::unbounded_channel::<Outgoing>();
    let writer = async {
        while let Some((header, payload)) = queued.recv().await {
            send_frame(to_next, &PeerMessage::Chunk(header), payload, next, timeout).await?;
        }
        Ok::<(), CollectiveError>(())
    };
    let reduce = async move {
        let unexpected = |reason: String| CollectiveError::UnexpectedFrame {
            member: previous,
            reason,
        };
        // The writer lives as long as this future unless it failed, in which
        // case try_join returns its error first.
        let send = |out: &mut Vec<Outgoing>| {
            for frame in out.drain(..) {
                let _ = outgoing.send(frame);
            }
        };
        let mut results: Vec<Option<(Reduced, Duration)>> = (0..count).map(|_| None).collect();
        let mut active: Vec<Reduction> = Vec::with_capacity(in_flight);
        let mut early: Vec<(ChunkHeader, Payload)> = Vec::new();
        let mut started = 0usize;
        let mut completed = 0usize;
        let mut out = Vec::new();
        let mut finish = |reduction: Reduction, now: Instant| {
            let index = (reduction.sequence() - first_sequence) as usize;
            let elapsed = now.saturating_duration_since(reduction.started());
            results[index] = Some((reduction.finish(), elapsed));
        };
        while completed < count {
            let can_start = started < count && active.len() < in_flight;
            tokio::select! {
                biased;
                buffers = ready.recv(), if can_start => {
                    let buffers = buffers.ok_or(CollectiveError::Abandoned {
                        handed_over: started,
                        expected: count,
                    })?;
                    check_buffers(&buffers, hosted);
                    let sequence = first_sequence + started as u64;
                    started += 1;
                    let now = Instant::now();
                    let algorithm = config.algorithm.resolve(layout, buffers[0].len());
                    let mut reduction = Reduction::new(
                        algorithm,
                        layout,
                        me,
                        config.bucket_elements,
                        config.piece_elements,
                        sequence,
                        buffers,
                        payloads.clone(),
                        now,
                    );
                    reduction.start(&mut out);
                    let (mine, later): (Vec<_>, Vec<_>) = early
                        .drain(..)
                        .partition(|(header, _)| header.collective == sequence);
                    early = later;
                    for (header, payload) in mine {
                        reduction.receive(header, payload, now, &mut out)?;
                    }
                    send(&mut out);
                    if reduction.is_complete() {
                        finish(reduction, now);
                        completed += 1;
                    } else {
                        active.push(reduction);
                    }
                }
                frame = receive_frame(from_previous, previous, timeout), if !active.is_empty() => {
                    let frame = frame?;
                    let PeerMessage::Chunk(header) = frame.message else {
                        return Err(unexpected(format!(
                            "expected a chunk of collectives {first_sequence}..{}, got {:?}",
                            first_sequence + count as u64,
                            frame.message
                        )));
                    };
                    let sequence = header.collective;
                    let now = Instant::now();
                    if let Some(position) = active
                        .iter()
                        .position(|reduction| reduction.sequence() == sequence)
                    {
                        let reduction = &mut active[position];
                        reduction.receive(header, frame.payload, now, &mut out)?;
                        send(&mut out);
                        if reduction.is_complete() {
                            finish(active.swap_remove(position), now);
                            completed += 1;
                        }
                    } else {
                        // A neighbour starts a collective at most `in_flight`
                        // after this worker's first unstarted one: it
                        // cannot finish any without this worker's values.
                        let unstarted = first_sequence + started as u64;
                        let window = unstarted..(unstarted + in_flight as u64)
                            .min(first_sequence + count as u64);
                        if !window.contains(&sequence) {
                            return Err(unexpected(format!(
                                "chunk of collective {sequence} while collectives up to {} have started here, at most {in_flight} at once",
                                unstarted - 1
                            )));
                        }
                        early.push((header, frame.payload));
                    }
                }
            }
        }
        drop(outgoing);
        Ok::<_, CollectiveError>(results)
    };
    let ((), results) = tokio::try_join!(writer, reduce)?;
    Ok(results
        .into_iter()
        .map(|result| result.expect("every reduction completed"))
        .collect())
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
        for piece in frame.payload.pieces() {
            data.extend_from_slice(piece);
        }
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
