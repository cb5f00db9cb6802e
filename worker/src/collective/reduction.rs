//! One all-reduce of one buffer on one worker, as a state machine without
//! I/O (in the manner of quinn-proto): [`Reduction::start`] gives the frames
//! to send first, each frame received from the previous member goes to
//! [`Reduction::receive`], which gives the frames it causes, until
//! [`Reduction::is_complete`]. Time is an input. The async driver in
//! [`super::ring`] moves the frames, and can keep several reductions in
//! flight because every frame names its collective.
//!
//! Both algorithms add in the order of [`super::schedule`]:
//! - the **ring**: reduce-scatter then all-gather, partial sums travel, 2(W-1)
//!   hops;
//! - the **gather**: each virtual rank's own values travel around the ring
//!   (W-1 hops) and every worker adds all of them itself.
use std::ops::Range;
use std::time::{Duration, Instant};

use protocol::message::{ChunkHeader, CollectivePhase};
use protocol::tensor::{PayloadPool, add_f32_le_payload, f32_from_le_payload};
use protocol::{Payload, ProtocolError};

use super::CollectiveError;
use super::ring::AllReduceAlgorithm;
use super::schedule::{ChunkRole, Piece, RingLayout, chain_start, chunk_role, pieces};

/// A frame to send to the next member: header and raw f32 payload (a
/// received payload is forwarded as the pieces it came in).
pub(crate) type Outgoing = (ChunkHeader, Payload);

/// `gradients[target][range] += gradients[source][range]`, element by element.
pub(crate) fn add_slot(
    gradients: &mut [Vec<f32>],
    target: usize,
    source: usize,
    range: Range<usize>,
) {
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
            .map(|&count| (count == 0).then(Duration::default))
            .collect();
        Self {
            bucket_elements,
            incomplete,
            done,
            started,
        }
    }

    fn piece_complete(&mut self, piece: &Piece, now: Instant) {
        let bucket = piece.range.start / self.bucket_elements;
        self.incomplete[bucket] -= 1;
        if self.incomplete[bucket] == 0 {
            self.done[bucket] = Some(now.saturating_duration_since(self.started));
        }
    }
}

fn chunk_header(sequence: u64, phase: CollectivePhase, range: &Range<usize>) -> ChunkHeader {
    ChunkHeader {
        collective: sequence,
        phase,
        element_offset: range.start as u64,
        element_count: range.len() as u32,
    }
}

/// What the algorithm keeps between frames.
enum Plan {
    Ring {
        roles: Vec<ChunkRole>,
        awaiting_partial: Vec<bool>,
        awaiting_final: Vec<bool>,
    },
    Gather {
        /// The values of the virtual ranks hosted elsewhere (empty for the
        /// hosted ones), filled as they come.
        others: Vec<Vec<f32>>,
        /// `arrived[piece][rank]`.
        arrived: Vec<Vec<bool>>,
        /// Virtual ranks still missing per piece.
        missing: Vec<usize>,
        /// Scratch for one piece's sum.
        sum: Vec<f32>,
    },
}

/// One all-reduce of one buffer (one collective sequence number) on this
/// worker.
pub(crate) struct Reduction {
    sequence: u64,
    virtual_ranks: usize,
    hosted: Range<usize>,
    hosted_by_next: Range<usize>,
    /// Ring index of the previous member (who every frame comes from).
    previous: usize,
    len: usize,
    pieces: Vec<Piece>,
    /// `gradients[i]`: the buffer of virtual rank `hosted.start + i`; the sum
    /// ends in `gradients[0]`.
    gradients: Vec<Vec<f32>>,
    /// Frames still to receive.
    remaining: usize,
    progress: BucketProgress,
    plan: Plan,
    /// Buffers of the payloads it encodes (shared with the ring's other
    /// reductions).
    payloads: PayloadPool,
}

/// What [`Reduction::finish`] gives back.
pub(crate) struct Reduced {
    /// The buffers handed in; the sum is in the first.
    pub gradients: Vec<Vec<f32>>,
    /// When each of the buffer's buckets was complete here, after the start.
    pub done: Vec<Duration>,
}

impl Reduction {
    /// The all-reduce `sequence` of `gradients` (one buffer per hosted
    /// virtual rank) by `algorithm` (not `Auto`), on a ring of two or more
    /// workers, buckets of `bucket_elements` values cut into frames of at
    /// most `piece_elements`, its payloads encoded into buffers of
    /// `payloads`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        algorithm: AllReduceAlgorithm,
        layout: &RingLayout,
        me: usize,
        bucket_elements: usize,
        piece_elements: usize,
        sequence: u64,
        gradients: Vec<Vec<f32>>,
        payloads: PayloadPool,
        now: Instant,
    ) -> Self {
        let workers = layout.workers();
        let virtual_ranks = layout.virtual_ranks();
        let hosted = layout.hosted(me);
        let len = gradients[0].len();
        let pieces = pieces(len, bucket_elements, piece_elements, virtual_ranks);
        let (plan, remaining, progress) = match algorithm {
            AllReduceAlgorithm::Gather => {
                let others = (0..virtual_ranks)
                    .map(|rank| {
                        if hosted.contains(&rank) {
                            Vec::new()
                        } else {
                            vec![0.0; len]
                        }
                    })
                    .collect();
                let others_count = virtual_ranks - hosted.len();
                let longest_piece = pieces.iter().map(|piece| piece.range.len()).max();
                let progress = BucketProgress::new(&pieces, |_| true, len, bucket_elements, now);
                let plan = Plan::Gather {
                    others,
                    arrived: vec![vec![false; virtual_ranks]; pieces.len()],
                    missing: vec![others_count; pieces.len()],
                    sum: vec![0.0; longest_piece.unwrap_or(0)],
                };
                (plan, pieces.len() * others_count, progress)
            }
            _ => {
                let roles: Vec<ChunkRole> = (0..virtual_ranks)
                    .map(|chunk| chunk_role(layout, me, chunk))
                    .collect();
                let awaiting_partial: Vec<bool> = pieces
                    .iter()
                    .map(|piece| roles[piece.chunk].entering.is_some())
                    .collect();
                let awaiting_final: Vec<bool> = pieces
                    .iter()
                    .map(|piece| !roles[piece.chunk].owns)
                    .collect();
                let remaining = awaiting_partial.iter().filter(|&&a| a).count()
                    + awaiting_final.iter().filter(|&&a| a).count();
                let progress = BucketProgress::new(
                    &pieces,
                    |index| awaiting_partial[index] || awaiting_final[index],
                    len,
                    bucket_elements,
                    now,
                );
                let plan = Plan::Ring {
                    roles,
                    awaiting_partial,
                    awaiting_final,
                };
                (plan, remaining, progress)
            }
        };
        Self {
            sequence,
            virtual_ranks,
            hosted,
            hosted_by_next: layout.hosted((me + 1) % workers),
            previous: (me + workers - 1) % workers,
            len,
            pieces,
            gradients,
            remaining,
            progress,
            plan,
            payloads,
        }
    }

    /// When it was created (its buckets' completion times count from here).
    pub(crate) fn started(&self) -> Instant {
        self.progress.started
    }

    /// The collective sequence number its frames carry.
    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether every frame this worker awaits has arrived (the sum is in
    /// place).
    pub(crate) fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// The buffers and when each bucket was complete.
    pub(crate) fn finish(self) -> Reduced {
        let done = self
            .progress
            .done
            .iter()
            .map(|done| done.unwrap_or_default())
            .collect();
        Reduced {
            gradients: self.gradients,
            done,
        }
    }

    /// The frames that start the all-reduce (what this worker sends before
    /// it hears from anyone).
    pub(crate) fn start(&mut self, out: &mut Vec<Outgoing>) {
        let sequence = self.sequence;
        match &self.plan {
            Plan::Ring { roles, .. } => {
                for piece in &self.pieces {
                    if let Some(ranks) = &roles[piece.chunk].start {
                        let slot = ranks.start - self.hosted.start;
                        for rank in ranks.start + 1..ranks.end {
                            add_slot(
                                &mut self.gradients,
                                slot,
                                rank - self.hosted.start,
                                piece.range.clone(),
                            );
                        }
                        let values = &self.gradients[slot][piece.range.clone()];
                        let payload = self.payloads.encode_f32(values);
                        let phase = CollectivePhase::ReduceScatter;
                        out.push((chunk_header(sequence, phase, &piece.range), payload.into()));
                    }
                }
            }
            Plan::Gather { .. } => {
                for piece in &self.pieces {
                    for rank in self.hosted.clone() {
                        let values = &self.gradients[rank - self.hosted.start][piece.range.clone()];
                        let phase = CollectivePhase::RawValues {
                            virtual_rank: rank as u32,
                        };
                        let header = chunk_header(sequence, phase, &piece.range);
                        out.push((header, self.payloads.encode_f32(values).into()));
                    }
                }
            }
        }
    }

    fn unexpected(&self, reason: String) -> CollectiveError {
        CollectiveError::UnexpectedFrame {
            member: self.previous,
            reason,
        }
    }

    /// The piece a received chunk header names, or why it names none.
    fn received_piece(&self, chunk: &ChunkHeader) -> Result<usize, CollectiveError> {
        let index = self
            .pieces
            .binary_search_by_key(&chunk.element_offset, |piece| piece.range.start as u64)
            .map_err(|_| {
                self.unexpected(format!(
                    "no piece starts at element {} of a {}-value buffer",
                    chunk.element_offset, self.len
                ))
            })?;
        let expected = self.pieces[index].range.len();
        if chunk.element_count as usize != expected {
            return Err(self.unexpected(format!(
                "piece at element {} has {} values, expected {expected}",
                chunk.element_offset, chunk.element_count
            )));
        }
        Ok(index)
    }

    /// Takes in one frame of this collective from the previous member (at
    /// `now`) and pushes the frames it causes.
    ///
    /// # Errors
    /// A frame that does not fit: another phase, a piece that does not exist
    /// or came already, a payload of the wrong size.
    pub(crate) fn receive(
        &mut self,
        chunk: ChunkHeader,
        payload: Payload,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), CollectiveError> {
        debug_assert_eq!(chunk.collective, self.sequence);
        let index = self.received_piece(&chunk)?;
        let previous = self.previous;
        let unexpected = |reason: String| CollectiveError::UnexpectedFrame {
            member: previous,
            reason,
        };
        let payload_error = |source: ProtocolError| CollectiveError::Transport {
            member: previous,
            source,
        };
        let piece = self.pieces[index].clone();
        let range = piece.range.clone();
        let complete = match (&mut self.plan, chunk.phase) {
            (
                Plan::Ring {
                    roles,
                    awaiting_partial,
                    awaiting_final,
                },
                phase @ (CollectivePhase::ReduceScatter | CollectivePhase::AllGather),
            ) => {
                let role = &roles[piece.chunk];
                let gradients = &mut self.gradients;
                if phase == CollectivePhase::ReduceScatter {
                    if !std::mem::take(&mut awaiting_partial[index]) {
                        let reason =
                            format!("unexpected partial sum at element {}", chunk.element_offset);
                        return Err(unexpected(reason));
                    }
                    let entering = role
                        .entering
                        .clone()
                        .expect("a piece awaiting a partial sum has an entering segment");
                    let (phase, sum) = if !role.owns && entering.len() == 1 {
                        // A partial sum this worker only passes on: added
                        // straight into the outgoing buffer. The range of
                        // `gradients[0]` receives the final sum later.
                        let slot = &gradients[0][range.clone()];
                        let sum = self
                            .payloads
                            .encode_f32_sum(&payload, slot)
                            .map_err(payload_error)?;
                        (CollectivePhase::ReduceScatter, sum)
                    } else {
                        if let Err(error) =
                            add_f32_le_payload(&payload, &mut gradients[0][range.clone()])
                        {
                            return Err(payload_error(error));
                        }
                        for rank in entering.start + 1..entering.end {
                            add_slot(gradients, 0, rank - self.hosted.start, range.clone());
                        }
                        let phase = if role.owns {
                            CollectivePhase::AllGather
                        } else {
                            CollectivePhase::ReduceScatter
                        };
                        (
                            phase,
                            self.payloads.encode_f32(&gradients[0][range.clone()]),
                        )
                    };
                    out.push((chunk_header(self.sequence, phase, &range), sum.into()));
                } else {
                    if !std::mem::take(&mut awaiting_final[index]) {
                        let reason =
                            format!("unexpected final sum at element {}", chunk.element_offset);
                        return Err(unexpected(reason));
                    }
                    let forward = role.forward_final;
                    if let Err(error) =
                        f32_from_le_payload(&payload, &mut gradients[0][range.clone()])
                    {
                        return Err(payload_error(error));
                    }
                    if forward {
                        out.push((chunk, payload));
                    }
                }
                !awaiting_partial[index] && !awaiting_final[index]
            }
            (
                Plan::Gather {
                    others,
                    arrived,
                    missing,
                    sum,
                },
                CollectivePhase::RawValues { virtual_rank },
            ) => {
                let rank = virtual_rank as usize;
                if rank >= self.virtual_ranks || self.hosted.contains(&rank) || arrived[index][rank]
                {
                    let reason = format!(
                        "unexpected values of virtual rank {rank} at element {}",
                        chunk.element_offset
                    );
                    return Err(unexpected(reason));
                }
                arrived[index][rank] = true;
                if let Err(error) = f32_from_le_payload(&payload, &mut others[rank][range.clone()])
                {
                    return Err(payload_error(error));
                }
                if !self.hosted_by_next.contains(&rank) {
                    out.push((chunk, payload));
                }
                missing[index] -= 1;
                if missing[index] == 0 {
                    gather_sum(
                        &mut self.gradients,
                        others,
                        self.hosted.start,
                        self.virtual_ranks,
                        &piece,
                        &mut sum[..range.len()],
                    );
                }
                missing[index] == 0
            }
            (_, phase) => {
                let reason = format!(
                    "{phase:?} at element {} does not belong to this algorithm",
                    chunk.element_offset
                );
                return Err(unexpected(reason));
            }
        };
        self.remaining -= 1;
        if complete {
            self.progress.piece_complete(&piece, now);
        }
        Ok(())
    }
}

/// The gather's sum of one piece over every virtual rank, in the documented
/// order, into `gradients[0]`; `sum` is scratch of the piece's length.
fn gather_sum(
    gradients: &mut [Vec<f32>],
    others: &[Vec<f32>],
    first_hosted: usize,
    virtual_ranks: usize,
    piece: &Piece,
    sum: &mut [f32],
) {
    let range = piece.range.clone();
    let hosted_count = gradients.len();
    let values_of = |rank: usize| -> &[f32] {
        if (first_hosted..first_hosted + hosted_count).contains(&rank) {
            &gradients[rank - first_hosted][range.clone()]
        } else {
            &others[rank][range.clone()]
        }
    };
    let start = chain_start(virtual_ranks, piece.chunk);
    sum.copy_from_slice(values_of(start));
    for step in 1..virtual_ranks {
        let values = values_of((start + step) % virtual_ranks);
        for (total, value) in sum.iter_mut().zip(values) {
            *total += *value;
        }
    }
    gradients[0][range].copy_from_slice(sum);
}

#[cfg(test)]
mod tests {
    //! The state machines alone, with no socket: frames go from each
    //! worker's reduction to the next one's through in-memory queues, in
    //! an order that mixes the links, as the network might.
    use std::collections::VecDeque;

    use super::*;
    use crate::collective::schedule::reference_all_reduce;

    fn values(rank: usize, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = ((rank * 7919 + i * 104_729) % 10_007) as f32;
                (x - 5_000.0) * 1.37e-3 * (1 + rank % 3) as f32
            })
            .collect()
    }

    fn reductions(
        algorithm: AllReduceAlgorithm,
        counts: &[usize],
        len: usize,
        now: Instant,
    ) -> Vec<Reduction> {
        let layout = RingLayout::new(counts);
        (0..counts.len())
            .map(|worker| {
                let gradients = layout
                    .hosted(worker)
                    .map(|rank| values(rank, len))
                    .collect();
                let payloads = PayloadPool::new();
                Reduction::new(
                    algorithm,
                    &layout,
                    worker,
                    1 << 20,
                    7,
                    42,
                    gradients,
                    payloads,
                    now,
                )
            })
            .collect()
    }

    /// Runs the reductions to completion, delivering the frame at the head
    /// of link `turn % workers` (or the next non-empty one) each time, its
    /// payload cut into pieces of 1, 3, 6 or 4096 bytes.
    fn run(mut workers: Vec<Reduction>, now: Instant) -> Vec<Vec<f32>> {
        let count = workers.len();
        let mut links: Vec<VecDeque<Outgoing>> = vec![VecDeque::new(); count];
        for (worker, reduction) in workers.iter_mut().enumerate() {
            let mut out = Vec::new();
            reduction.start(&mut out);
            links[(worker + 1) % count].extend(out);
        }
        let mut turn = 0usize;
        while let Some(to) = (0..count)
            .map(|offset| (turn * 5 + offset) % count)
            .find(|&link| !links[link].is_empty())
        {
            turn += 1;
            let (header, payload) = links[to].pop_front().expect("a frame");
            // As the transport may: pieces cut anywhere, inside values too.
            let payload = payload.recut([1, 3, 6, 4096][turn % 4]);
            let mut out = Vec::new();
            workers[to]
                .receive(header, payload, now, &mut out)
                .expect("a well-formed frame");
            links[(to + 1) % count].extend(out);
        }
        workers
            .into_iter()
            .map(|reduction| {
                assert!(reduction.is_complete());
                reduction.finish().gradients.swap_remove(0)
            })
            .collect()
    }

    #[test]
    fn both_algorithms_give_the_reference_bits_without_a_network() {
        let now = Instant::now();
        for counts in [&[1, 1][..], &[2, 1, 3], &[1, 1, 1, 1], &[3, 1]] {
            let virtual_ranks: usize = counts.iter().sum();
            for len in [1, 6, 7, 8, 100] {
                let inputs: Vec<Vec<f32>> = (0..virtual_ranks).map(|r| values(r, len)).collect();
                let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
                let expected: Vec<u32> = reference_all_reduce(&views, 1 << 20)
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                for algorithm in [AllReduceAlgorithm::Ring, AllReduceAlgorithm::Gather] {
                    let sums = run(reductions(algorithm, counts, len, now), now);
                    for (worker, sum) in sums.iter().enumerate() {
                        let bits: Vec<u32> = sum.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(bits, expected, "{algorithm:?} {counts:?} {len}: {worker}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_partial_sum_passed_on_checks_its_payload() {
        // Three workers of one virtual rank each: chunk 2 runs from worker 0
        // through worker 1 to worker 2, so worker 1 only passes its partial
        // sums on, and adds them straight into the outgoing buffer.
        let now = Instant::now();
        let frames_to_worker_1 = || {
            let workers = reductions(AllReduceAlgorithm::Ring, &[1, 1, 1], 20, now);
            let mut out = Vec::new();
            let mut workers = workers.into_iter();
            workers.next().expect("worker 0").start(&mut out);
            (workers.next().expect("worker 1"), out)
        };
        let (mut worker, frames) = frames_to_worker_1();
        assert!(!frames.is_empty());
        for (header, payload) in frames {
            let mut out = Vec::new();
            worker
                .receive(header.clone(), payload, now, &mut out)
                .expect("a well-formed partial sum");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0.phase, CollectivePhase::ReduceScatter);
            assert_eq!(out[0].0.element_offset, header.element_offset);
        }
        let (mut worker, frames) = frames_to_worker_1();
        let (header, payload) = frames.into_iter().next().expect("a frame");
        let short = payload.truncated(payload.len() - 4);
        let mut out = Vec::new();
        let error = worker
            .receive(header, short, now, &mut out)
            .expect_err("a payload of the wrong size");
        assert!(
            error
                .to_string()
                .contains("ring transport failed with member 0"),
            "{error}"
        );
        assert!(out.is_empty(), "nothing is passed on");
    }

    #[test]
    fn frames_that_do_not_fit_are_errors() {
        let now = Instant::now();
        let check = |algorithm: AllReduceAlgorithm,
                     tamper: &dyn Fn(&mut ChunkHeader, &mut Payload),
                     expected: &str| {
            let mut workers = reductions(algorithm, &[1, 2], 20, now);
            let mut out = Vec::new();
            workers[0].start(&mut out);
            let (mut header, mut payload) = out.swap_remove(0);
            tamper(&mut header, &mut payload);
            let error = workers[1]
                .receive(header, payload, now, &mut Vec::new())
                .expect_err("a frame that does not fit");
            assert!(
                error.to_string().contains(expected),
                "{algorithm:?}: {error}"
            );
        };
        for algorithm in [AllReduceAlgorithm::Ring, AllReduceAlgorithm::Gather] {
            check(
                algorithm,
                &|header, _| header.element_offset += 1,
                "no piece starts at element",
            );
            check(
                algorithm,
                &|header, _| header.element_count += 1,
                "values, expected",
            );
            check(
                algorithm,
                &|_, payload| *payload = payload.truncated(payload.len() - 4),
                "ring transport failed with member 0",
            );
            // Once is right, twice is not.
            let mut workers = reductions(algorithm, &[1, 2], 20, now);
            let mut out = Vec::new();
            workers[0].start(&mut out);
            let (header, payload) = out[0].clone();
            workers[1]
                .receive(header.clone(), payload.clone(), now, &mut Vec::new())
                .expect("the first copy fits");
            let error = workers[1]
                .receive(header, payload, now, &mut Vec::new())
                .expect_err("a second copy does not");
            assert!(error.to_string().contains("unexpected"), "{error}");
        }
        check(
            AllReduceAlgorithm::Ring,
            &|header, _| header.phase = CollectivePhase::RawValues { virtual_rank: 0 },
            "does not belong to this algorithm",
        );
        check(
            AllReduceAlgorithm::Gather,
            &|header, _| header.phase = CollectivePhase::ReduceScatter,
            "does not belong to this algorithm",
        );
        check(
            AllReduceAlgorithm::Gather,
            &|header, _| header.phase = CollectivePhase::RawValues { virtual_rank: 1 },
            "unexpected values of virtual rank 1",
        );
    }
}
