//! The ring all-reduce over virtual ranks gives the same bits for every
//! number of workers, equal to the single-process reference, and reports
//! its buckets for the metrics; broadcast and barrier work over real QUIC
//! rings.
mod common;

use std::time::Duration;

use common::{form_ring, gradient};
use worker::collective::{
    AllReduceAlgorithm, CollectiveConfig, CollectiveError, RingLayout, reference_all_reduce,
};

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
            ..CollectiveConfig::default()
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
            ..CollectiveConfig::default()
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

/// Several buffers of one stream, each ready at a different time on each
/// worker, with 1, 2, 3 or 8 in flight: every sum equals the reference, and
/// a ring that handed over fewer buffers than announced fails cleanly.
#[test]
fn buckets_in_flight_give_the_same_bits() {
    // Lengths that take the gather (small) and the ring (large) path.
    let lengths = [1usize, 5_000, 3, 70_000, 1_000, 200_003, 64];
    let counts = [1usize, 2, 1];
    let virtual_ranks: usize = counts.iter().sum();
    let bucket_elements = 1 << 20;
    let expected: Vec<Vec<u32>> = lengths
        .iter()
        .enumerate()
        .map(|(bucket, &len)| {
            let gradients: Vec<Vec<f32>> = (0..virtual_ranks)
                .map(|rank| common::gradient(rank * 31 + bucket, len))
                .collect();
            let views: Vec<&[f32]> = gradients.iter().map(Vec::as_slice).collect();
            bits(&reference_all_reduce(&views, bucket_elements))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for buckets_in_flight in [1, 2, 3, 8] {
        let config = CollectiveConfig {
            bucket_elements,
            piece_elements: 4_099,
            timeout: Duration::from_secs(10),
            buckets_in_flight,
            ..CollectiveConfig::default()
        };
        let results = runtime.block_on(async {
            let rings = form_ring(&counts, config).await;
            let mut tasks = Vec::new();
            for mut ring in rings {
                tasks.push(tokio::spawn(async move {
                    let me = ring.member_index();
                    let (sender, mut ready) = tokio::sync::mpsc::unbounded_channel();
                    let hosted = ring.hosted();
                    // Each worker is ready with each bucket at its own time,
                    // so neighbours start collectives before this one does.
                    let hand_over = async move {
                        for (bucket, &len) in lengths.iter().enumerate() {
                            let pause = ((me * 7 + bucket * 3) % 5) as u64;
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                            let buffers: Vec<Vec<f32>> = hosted
                                .clone()
                                .map(|rank| common::gradient(rank * 31 + bucket, len))
                                .collect();
                            sender.send(buffers).unwrap();
                        }
                    };
                    let (_, reduced) = tokio::join!(
                        hand_over,
                        ring.all_reduce_buckets(lengths.len(), &mut ready)
                    );
                    let reduced = reduced.unwrap();
                    assert_eq!(ring.last_all_reduce().buckets.len(), lengths.len());
                    ring.shutdown().await;
                    reduced
                }));
            }
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            results
        });
        for (worker, reduced) in results.iter().enumerate() {
            assert_eq!(reduced.len(), lengths.len());
            for (bucket, sum) in reduced.iter().enumerate() {
                assert_eq!(
                    bits(&sum.sum),
                    expected[bucket],
                    "worker {worker}, bucket {bucket}, {buckets_in_flight} in flight"
                );
                assert_eq!(sum.stats.bytes, 4 * lengths[bucket] as u64);
            }
        }
    }

    // A worker whose caller stops after one of two buffers. The timeout
    // also bounds forming the ring, which a loaded machine can slow to
    // over half a second; the neighbour fails as soon as the ring drops.
    let config = CollectiveConfig {
        timeout: Duration::from_secs(5),
        ..CollectiveConfig::default()
    };
    runtime.block_on(async {
        let rings = form_ring(&[1, 1], config).await;
        let mut tasks = Vec::new();
        for mut ring in rings {
            tasks.push(tokio::spawn(async move {
                let me = ring.member_index();
                let (sender, mut ready) = tokio::sync::mpsc::unbounded_channel();
                sender.send(vec![common::gradient(me, 10)]).unwrap();
                if me == 1 {
                    sender.send(vec![common::gradient(me, 10)]).unwrap();
                }
                drop(sender);
                (me, ring.all_reduce_buckets(2, &mut ready).await)
            }));
        }
        for task in tasks {
            let (me, result) = task.await.unwrap();
            let error = result.expect_err("a stream handed over in part fails");
            if me == 0 {
                assert!(
                    matches!(
                        error,
                        CollectiveError::Abandoned {
                            handed_over: 1,
                            expected: 2
                        }
                    ),
                    "{error}"
                );
            }
        }
    });
}
