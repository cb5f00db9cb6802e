//! The messages of protocol version [`crate::PROTOCOL_VERSION`].
//!
//! Three directions, three enums: [`WorkerMessage`] (worker to coordinator),
//! [`CoordinatorMessage`] (coordinator to worker) and [`PeerMessage`] (worker to
//! worker). Job specs and plans travel as strings (`spec` and `plan` fields)
//! so their schema can evolve without a protocol change. Messages that carry
//! tensors or state ([`PeerMessage::Chunk`], [`PeerMessage::State`]) only
//! describe the bytes: the bytes themselves follow in the frame's payload
//! section (raw little-endian f32 for tensors, see [`crate::tensor`]).
//!
//! Adding a variant at the end of an enum is compatible with older decoders
//! only in that they report it as undecodable; anything else is a new version.
use serde::{Deserialize, Serialize};

/// Worker to coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// First message on a new connection: who the worker is and the join
    /// token's secret, compared in constant time by the coordinator.
    Register(Register),
    /// Liveness, sent every heartbeat interval.
    Heartbeat(Heartbeat),
    /// A checkpoint was written.
    CheckpointReport(CheckpointReport),
    /// Training metrics of one step (or an average over several).
    MetricsReport(MetricsReport),
    /// A job failed on this worker.
    JobFailed {
        /// Job concerned.
        job_id: u64,
        /// What went wrong, for people.
        reason: String,
    },
    /// A checkpoint whose safetensors bytes follow as the frame's payload,
    /// for the coordinator to write into its data directory (no shared file
    /// system needed). Sent by one member of the ring.
    CheckpointUpload(CheckpointUpload),
    /// The job reached its last step; its final checkpoint was uploaded
    /// just before on the same stream.
    JobCompleted {
        /// Job concerned.
        job_id: u64,
        /// Steps completed (the job's total).
        step: u64,
    },
}

/// Coordinator to worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    /// Registration accepted.
    Registered {
        /// Identifier given to this worker for the life of its connection.
        worker_id: u64,
        /// How often the worker must send a heartbeat.
        heartbeat_interval_ms: u64,
    },
    /// Registration refused; the connection is closed after this message.
    Refused {
        /// Why, for people (never echoes the secret).
        reason: String,
    },
    /// Answer to a heartbeat.
    HeartbeatAck {
        /// Sequence number of the heartbeat acknowledged.
        sequence: u64,
    },
    /// Run (part of) a job.
    AssignJob(JobAssignment),
    /// The ring this worker belongs to for a job, sent whenever it changes.
    RingMembership(RingMembership),
    /// Stop a job.
    Cancel {
        /// Job to stop.
        job_id: u64,
        /// Why, for people.
        reason: String,
    },
    /// The job lost workers and is below its `min_workers`: drop the
    /// in-flight step, keep the replica and wait for the next
    /// [`CoordinatorMessage::RingMembership`].
    Hold {
        /// Job concerned.
        job_id: u64,
        /// Why, for people.
        reason: String,
    },
}

/// Worker to worker, on ring connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// First message of a ring stream: who is sending, for which ring.
    Hello(PeerHello),
    /// A piece of a collective; its payload is raw little-endian f32 values.
    Chunk(ChunkHeader),
    /// A piece of a broadcast state (to a joining worker); raw bytes payload.
    State(StateHeader),
    /// Barrier token.
    Barrier {
        /// Which barrier (a counter shared by the ring).
        sequence: u64,
        /// 0 while gathering arrivals, 1 while releasing.
        round: u8,
    },
}

/// Contents of [`WorkerMessage::Register`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// The join token's secret.
    pub secret: String,
    /// A name for people (host name, pod name).
    pub name: String,
    /// Address where this worker's ring endpoint listens (`host:port`).
    pub peer_address: String,
    /// SHA-256 fingerprint (hex) of this worker's ring certificate.
    pub peer_fingerprint: String,
    /// CPU cores available to the worker.
    pub cores: u32,
    /// Memory available to the worker, bytes.
    pub memory_bytes: u64,
}

/// Contents of [`WorkerMessage::Heartbeat`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases by one per heartbeat.
    pub sequence: u64,
    /// Job the worker is running, if any.
    pub job_id: Option<u64>,
    /// Last completed step of that job.
    pub step: Option<u64>,
}

/// Contents of [`WorkerMessage::CheckpointReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// Job concerned.
    pub job_id: u64,
    /// Step the checkpoint holds.
    pub step: u64,
    /// Where it was written, as the worker sees it.
    pub location: String,
    /// SHA-256 of the checkpoint file, hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// Contents of [`WorkerMessage::CheckpointUpload`]: describes the
/// safetensors bytes that follow as the frame's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointUpload {
    /// Job concerned.
    pub job_id: u64,
    /// Steps completed in the checkpoint.
    pub step: u64,
    /// SHA-256 of the payload, hex (checked by the coordinator).
    pub sha256: String,
}

/// Contents of [`WorkerMessage::MetricsReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Job concerned.
    pub job_id: u64,
    /// Step the values belong to.
    pub step: u64,
    /// (name, value) pairs, such as ("loss", 0.25).
    pub values: Vec<(String, f64)>,
}

/// Contents of [`CoordinatorMessage::AssignJob`]. When the job has a
/// checkpoint, its safetensors bytes follow as the frame's payload (the
/// state to resume from when no replica survived); `start_step` is its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAssignment {
    /// Job identifier.
    pub job_id: u64,
    /// The job spec as submitted (JSON or TOML text, see `spec_format`).
    pub spec: String,
    /// Format of `spec`: "json" or "toml".
    pub spec_format: String,
    /// The coordinator's plan (dataset fingerprint, seed, global batch,
    /// virtual ranks...), serialized as JSON.
    pub plan: String,
    /// Step of the checkpoint in the payload (0 for a new job: no payload).
    pub start_step: u64,
}

/// Contents of [`CoordinatorMessage::RingMembership`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingMembership {
    /// Job concerned.
    pub job_id: u64,
    /// Increases each time the ring is re-formed; stale peers are refused.
    pub generation: u64,
    /// Number of virtual ranks V, fixed for the job.
    pub virtual_ranks: u32,
    /// Members in ring order; their virtual-rank ranges tile 0..V in order.
    pub members: Vec<RingMember>,
    /// Step at which the ring starts; a member whose state is older receives
    /// it from `state_source`.
    pub start_step: u64,
    /// Index in `members` of the worker that broadcasts the state to joiners.
    pub state_source: Option<u32>,
}

/// One worker of a ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingMember {
    /// The coordinator's identifier of the worker.
    pub worker_id: u64,
    /// Where its ring endpoint listens (`host:port`).
    pub address: String,
    /// SHA-256 fingerprint (hex) of its ring certificate.
    pub fingerprint: String,
    /// First virtual rank it hosts.
    pub first_virtual_rank: u32,
    /// Number of virtual ranks it hosts (at least one).
    pub virtual_rank_count: u32,
}

/// Contents of [`PeerMessage::Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerHello {
    /// Job concerned.
    pub job_id: u64,
    /// Ring generation (see [`RingMembership::generation`]).
    pub generation: u64,
    /// Sender's index in the ring.
    pub member_index: u32,
}

/// Which half of a ring all-reduce a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectivePhase {
    /// Partial sums travelling towards the chunk's owner.
    ReduceScatter,
    /// Final sums travelling from the owner to everyone.
    AllGather,
    /// One virtual rank's own values, travelling around the whole ring so
    /// that every worker can add all virtual ranks itself (the gather
    /// algorithm for small buffers: half the ring's hops).
    RawValues {
        /// The virtual rank the values belong to.
        virtual_rank: u32,
    },
}

/// Contents of [`PeerMessage::Chunk`]: describes `element_count` f32 values
/// that follow as the frame's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkHeader {
    /// Sequence number of the collective on this ring.
    pub collective: u64,
    /// Partial sums, final sums or one virtual rank's values.
    pub phase: CollectivePhase,
    /// Offset of the first value in the all-reduced buffer, in elements.
    pub element_offset: u64,
    /// Number of f32 values in the payload.
    pub element_count: u32,
}

/// Contents of [`PeerMessage::State`]: describes `byte_count` bytes of a
/// state being broadcast, which follow as the frame's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateHeader {
    /// Sequence number of the collective on this ring.
    pub collective: u64,
    /// Total size of the state in bytes.
    pub total_bytes: u64,
    /// Offset of this piece.
    pub byte_offset: u64,
    /// Length of this piece.
    pub byte_count: u32,
}
