//! The ring all-reduce over virtual ranks gives the same bits for every
//! number of workers, equal to the single-process reference, and reports
//! its buckets for the metrics; broadcast and barrier work over real QUIC
//! rings.
mod common;

use std::time::Duration;

use common::{form_ring, gradient};
use worker::collective::{AllReduceAlgorithm, CollectiveConfig, RingLayout, reference_all_reduce};

/// The algorithms that move values; `Auto` picks one of them.
const ALGORITHMS: [AllReduceAlgorithm; 2] = [AllReduceAlgorithm::Ring, AllReduceAlgorithm::Gather];

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// All-reduces `len` values of V virtual ranks spread as `counts` says and
/// checks every worker's result against the reference, bit for bit, and
/// the buckets it reports (sizes adding up to the buffer, bus bandwidth
/// only across workers).
#[track_caller]
fn check(counts: &[usize], len: usize, config: CollectiveConfig) {
    let virtual_ranks: usize = counts.iter().sum();
    let gradients: Vec<Vec<f32>> = (0..virtual_ranks).map(|rank| gradient(rank, len)).collect();
    let views: Vec<&[f32]> = gradients.iter().map(Vec::as_slice).collect();
    let bucket_elements = config.bucket_elements;
    let expected = bits(&reference_all_reduce(&views, bucket_elements));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let rings = form_ring(counts, config).await;
        let mut tasks = Vec::new();
        for mut ring in rings {
            let mut mine: Vec<Vec<f32>> =
                ring.hosted().map(|rank| gradients[rank].clone()).collect();
            tasks.push(tokio::spawn(async move {
                // Twice: the second run checks the ring is reusable.
                let before = mine.clone();
                ring.all_reduce(&mut mine).await.unwrap();
                let stats = ring.last_all_reduce().clone();
                let first = mine.swap_remove(0);
                let mut again = before;
                ring.all_reduce(&mut again).await.unwrap();
                assert_eq!(bits(&first), bits(&again[0]), "second all-reduce differs");
                ring.shutdown().await;
                (first, stats)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    for (worker, (result, stats)) in results.iter().enumerate() {
        assert_eq!(
            bits(result),
            expected,
            "worker {worker} of {counts:?}, {len} values"
        );
        assert_eq!(stats.workers, counts.len());
        assert_eq!(stats.buckets.len(), len.div_ceil(bucket_elements));
        let bytes: u64 = stats.buckets.iter().map(|bucket| bucket.bytes).sum();
        assert_eq!(bytes, 4 * len as u64, "worker {worker} of {counts:?}");
        for bucket in &stats.buckets {
            let bus_bandwidth = bucket.bus_bandwidth(stats.workers);
            assert_eq!(bus_bandwidth > 0.0, counts.len() > 1, "{bucket:?}");
        }
    }
}

#[test]
fn the_reference_order_matters_for_these_inputs() {
    // Guards the test below: with these inputs another order gives other bits.
    let gradients: Vec<Vec<f32>> = (0..8).map(|rank| gradient(rank, 4096)).collect();
    let views: Vec<&[f32]> = gradients.iter().map(Vec::as_slice).collect();
    let reference = reference_all_reduce(&views, 4096);
    let naive: Vec<f32> = (0..4096)
        .map(|i| views.iter().map(|g| g[i]).sum())
        .collect();
    assert_ne!(bits(&reference), bits(&naive));
}

#[test]
fn eight_virtual_ranks_give_the_same_bits_on_one_to_eight_workers() {
    for algorithm in ALGORITHMS {
        let config = CollectiveConfig {
            bucket_elements: 1000,
            piece_elements: 97,
            timeout: Duration::from_secs(10),
            algorithm,
        };
        for workers in 1..=8 {
            let layout = RingLayout::even(8, workers);
            let counts: Vec<usize> = (0..workers).map(|w| layout.hosted(w).len()).collect();
            check(&counts, 2_503, config.clone());
        }
    }
}

#[test]
fn uneven_layouts_small_buffers_and_large_pieces() {
    for algorithm in ALGORITHMS {
        let config = CollectiveConfig {
            bucket_elements: 1 << 20,
            piece_elements: 1 << 16,
            timeout: Duration::from_secs(10),
            algorithm,
        };
        for len in [1, 2, 3, 7, 8, 9, 63, 64, 65] {
            check(&[3, 1, 4], len, config.clone());
        }
        check(&[1, 5, 2], 300_001, config.clone());
        check(&[1, 1], 1 << 18, config);
    }
}

#[test]
fn auto_gathers_small_buffers_and_rings_large_ones() {
    let check = |counts: &[usize], len: usize, expected: AllReduceAlgorithm| {
        let chosen = AllReduceAlgorithm::Auto.resolve(&RingLayout::new(counts), len);
        assert_eq!(chosen, expected, "{counts:?}, {len} values");
    };
    // Two workers of one virtual rank: the same bytes per link either way.
    check(&[1, 1], 40_000, AllReduceAlgorithm::Gather);
    check(&[1, 1], 1 << 18, AllReduceAlgorithm::Gather);
    check(&[1, 1], 1 << 20, AllReduceAlgorithm::Ring);
    // Four workers: the gather's links carry 3 buffers, the ring's 1.5.
    check(&[1, 1, 1, 1], 1 << 10, AllReduceAlgorithm::Gather);
    check(&[1, 1, 1, 1], 1 << 20, AllReduceAlgorithm::Ring);
    // Many virtual ranks per worker: only tiny buffers are gathered.
    check(&[4, 4], 1 << 10, AllReduceAlgorithm::Gather);
    check(&[4, 4], 1 << 16, AllReduceAlgorithm::Ring);
    // An explicit choice is kept.
    let layout = RingLayout::new(&[1, 1]);
    assert_eq!(
        AllReduceAlgorithm::Ring.resolve(&layout, 10),
        AllReduceAlgorithm::Ring
    );
    assert_eq!(
        AllReduceAlgorithm::Gather.resolve(&layout, 1 << 24),
        AllReduceAlgorithm::Gather
    );
}

#[test]
fn broadcast_and_barrier() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rings = form_ring(&[1, 2, 1], common::config(Duration::from_secs(10))).await;
        let state: Vec<u8> = (0..3_000_017u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut tasks = Vec::new();
        for mut ring in rings {
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                let me = ring.member_index();
                ring.barrier().await.unwrap();
                let mut data = if me == 1 {
                    state.clone()
                } else {
                    b"stale".to_vec()
                };
                ring.broadcast(1, &mut data).await.unwrap();
                assert_eq!(data, state, "member {me}");
                let mut empty = if me == 2 { Vec::new() } else { vec![1, 2, 3] };
                ring.broadcast(2, &mut empty).await.unwrap();
                assert!(empty.is_empty(), "member {me}");
                ring.barrier().await.unwrap();
                ring.shutdown().await;
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}
