//! Helpers shared by the collective tests: rings of in-process workers over
//! loopback QUIC, and gradients whose sums depend on the order of additions.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use protocol::transport::{Identity, TransportTuning, bind_endpoint};
use worker::collective::{CollectiveConfig, Ring, RingMemberAddress, RingSpec};

/// A ring endpoint with its certificate, not yet part of a ring.
pub struct Node {
    pub endpoint: quinn::Endpoint,
    pub identity: Identity,
}

pub fn node() -> Node {
    let identity = Identity::generate().unwrap();
    let endpoint = bind_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        None,
        &TransportTuning::default(),
    )
    .unwrap();
    Node { endpoint, identity }
}

pub fn spec(
    nodes: &[(std::net::SocketAddr, protocol::Fingerprint)],
    counts: &[usize],
    me: usize,
) -> RingSpec {
    RingSpec {
        job_id: 1,
        generation: 1,
        members: nodes
            .iter()
            .zip(counts)
            .map(
                |(&(address, fingerprint), &virtual_rank_count)| RingMemberAddress {
                    address,
                    fingerprint,
                    virtual_rank_count,
                },
            )
            .collect(),
        my_index: me,
    }
}

/// Forms a ring of `counts.len()` in-process workers; worker i hosts counts[i]
/// virtual ranks.
pub async fn form_ring(counts: &[usize], config: CollectiveConfig) -> Vec<Ring> {
    let nodes: Vec<Node> = counts.iter().map(|_| node()).collect();
    let addresses: Vec<_> = nodes
        .iter()
        .map(|n| (n.endpoint.local_addr().unwrap(), n.identity.fingerprint()))
        .collect();
    let mut tasks = Vec::new();
    for (me, node) in nodes.into_iter().enumerate() {
        let spec = spec(&addresses, counts, me);
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let ring = Ring::connect(
                &node.endpoint,
                &node.identity,
                &spec,
                config,
                &TransportTuning::default(),
            )
            .await
            .unwrap();
            // Keep the endpoint alive as long as the ring.
            std::mem::forget(node.endpoint);
            ring
        }));
    }
    let mut rings = Vec::new();
    for task in tasks {
        rings.push(task.await.unwrap());
    }
    rings
}

/// Gradient of virtual rank `rank`: magnitudes spread over many binades and
/// signs mixed, so that a different order of additions changes the bits.
pub fn gradient(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let mut x =
                (rank as u64 * 1_000_003 + i as u64 * 7919).wrapping_mul(0x9e3779b97f4a7c15);
            x ^= x >> 29;
            let mantissa = (x % 1_000_000) as f32 / 1_000_000.0 + 0.1;
            let exponent = ((x >> 20) % 24) as i32 - 12;
            let sign = if (x >> 40) & 1 == 1 { -1.0 } else { 1.0 };
            sign * mantissa * 2f32.powi(exponent) * 3.0f32.powi((rank % 3) as i32)
        })
        .collect()
}

pub fn config(timeout: Duration) -> CollectiveConfig {
    CollectiveConfig {
        timeout,
        ..CollectiveConfig::default()
    }
}
