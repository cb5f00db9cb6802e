//! From the scheduler's output to the protocol's messages (pure).
use protocol::message::{RingMember as ProtocolRingMember, RingMembership};

use crate::job::WorkerId;
use crate::scheduler::{Ring, WorkerInfo};

/// The [`RingMembership`] that announces `ring` to its members, starting at
/// `start_step`; `worker` gives each member's registration (address and
/// ring certificate fingerprint). `None` if a member is unknown.
pub fn ring_membership(
    ring: &Ring,
    start_step: u64,
    worker: impl Fn(WorkerId) -> Option<WorkerInfo>,
) -> Option<RingMembership> {
    let mut members = Vec::with_capacity(ring.members.len());
    for member in &ring.members {
        let info = worker(member.worker)?;
        members.push(ProtocolRingMember {
            worker_id: member.worker.0,
            address: info.address,
            fingerprint: info.fingerprint,
            first_virtual_rank: member.virtual_ranks.start,
            virtual_rank_count: member.virtual_ranks.end - member.virtual_ranks.start,
        });
    }
    let state_source = ring.state_from.and_then(|source| {
        ring.members
            .iter()
            .position(|member| member.worker == source)
            .map(|index| index as u32)
    });
    Some(RingMembership {
        job_id: ring.job.0,
        generation: ring.generation,
        virtual_ranks: ring
            .members
            .last()
            .map_or(0, |member| member.virtual_ranks.end),
        members,
        start_step,
        state_source,
    })
}
