//! The sharding plan: exactly-once order, partial batches, resume and
//! re-mapping of virtual ranks, and plan errors.
use std::collections::BTreeSet;

use datasets::{
    DataCursor, DatasetError, FileFingerprint, Fingerprint, PartialBatch, Plan, PlanConfig,
};

fn fingerprint(files: &[&[u64]]) -> Fingerprint {
    Fingerprint::new(
        files
            .iter()
            .enumerate()
            .map(|(index, groups)| FileFingerprint {
                name: format!("part-{index}.parquet"),
                size: 1000 + index as u64,
                row_groups: groups.to_vec(),
            })
            .collect(),
        vec!["x: float32".into()],
    )
}

fn config(
    seed: u64,
    global_batch: usize,
    virtual_ranks: usize,
    window: usize,
    partial: PartialBatch,
) -> PlanConfig {
    PlanConfig {
        seed,
        global_batch,
        virtual_ranks,
        shuffle_window: window,
        partial_batch: partial,
    }
}

/// Every (epoch, step, virtual rank, samples, real) of `epochs` epochs, with
/// the virtual ranks split over workers as `workers` (contiguous ranges).
fn record(
    plan: &Plan,
    from: DataCursor,
    steps: u64,
    workers: &[std::ops::Range<usize>],
) -> Vec<(u64, u64, usize, Vec<u64>, usize)> {
    let mut seen = Vec::new();
    let mut cursor = from;
    for _ in 0..steps {
        for ranks in workers {
            for micro in plan.micro_batches(cursor, ranks.clone()).unwrap() {
                seen.push((
                    cursor.epoch,
                    cursor.step,
                    micro.virtual_rank,
                    micro.samples,
                    micro.real,
                ));
            }
        }
        cursor = plan.next(cursor);
    }
    seen.sort();
    seen
}

#[track_caller]
fn check_exactly_once(
    files: &[&[u64]],
    global_batch: usize,
    virtual_ranks: usize,
    window: usize,
    partial: PartialBatch,
) {
    let fingerprint = fingerprint(files);
    let plan = Plan::new(
        &fingerprint,
        config(7, global_batch, virtual_ranks, window, partial),
    )
    .unwrap();
    let samples = fingerprint.samples();
    let batch = global_batch as u64;
    let expected_steps = match partial {
        PartialBatch::Drop => samples / batch,
        PartialBatch::Pad => samples.div_ceil(batch),
    };
    assert_eq!(plan.steps_per_epoch(), expected_steps);
    for epoch in 0..3 {
        let mut real = Vec::new();
        let mut padding = 0;
        for step in 0..plan.steps_per_epoch() {
            let micro = plan
                .micro_batches(DataCursor { epoch, step }, 0..virtual_ranks)
                .unwrap();
            assert_eq!(micro.len(), virtual_ranks);
            for (rank, micro) in micro.iter().enumerate() {
                assert_eq!(micro.virtual_rank, rank);
                assert_eq!(micro.samples.len(), global_batch / virtual_ranks);
                real.extend_from_slice(&micro.samples[..micro.real]);
                padding += micro.samples.len() - micro.real;
                assert!(micro.samples.iter().all(|&sample| sample < samples));
            }
        }
        let distinct: BTreeSet<u64> = real.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            real.len(),
            "a sample repeats in epoch {epoch}"
        );
        match partial {
            PartialBatch::Drop => {
                assert_eq!(real.len() as u64, expected_steps * batch);
                assert_eq!(padding, 0);
            }
            PartialBatch::Pad => {
                assert_eq!(distinct, (0..samples).collect::<BTreeSet<_>>());
                assert_eq!(padding as u64, expected_steps * batch - samples);
            }
        }
    }
}

#[test]
fn every_sample_once_per_epoch() {
    for partial in [PartialBatch::Drop, PartialBatch::Pad] {
        check_exactly_once(&[&[100]], 10, 2, 16, partial);
        check_exactly_once(&[&[1]], 1, 1, 1, partial);
        check_exactly_once(&[&[64, 64, 63], &[65, 0, 1]], 8, 4, 64, partial);
        check_exactly_once(&[&[64, 64, 63], &[65, 0, 1]], 30, 3, 1, partial);
        check_exactly_once(&[&[7; 30]], 12, 4, 1000, partial);
        check_exactly_once(&[&[3, 5], &[2], &[9, 9, 9]], 37, 1, 7, partial);
        check_exactly_once(&[&[256; 4]], 1024, 8, 4096, partial);
    }
}

#[test]
fn order_depends_on_seed_epoch_and_fingerprint_only() {
    let fingerprint = fingerprint(&[&[50, 50], &[50]]);
    let plan = Plan::new(&fingerprint, config(1, 10, 2, 32, PartialBatch::Drop)).unwrap();
    let again = Plan::new(
        &fingerprint.clone(),
        config(1, 10, 2, 32, PartialBatch::Drop),
    )
    .unwrap();
    let all = |plan: &Plan, epoch| plan.epoch_order(epoch).samples(0..plan.samples());
    assert_eq!(all(&plan, 0), all(&again, 0));
    assert_ne!(all(&plan, 0), all(&plan, 1), "epochs must differ");
    let other_seed = Plan::new(&fingerprint, config(2, 10, 2, 32, PartialBatch::Drop)).unwrap();
    assert_ne!(all(&plan, 0), all(&other_seed, 0), "seeds must differ");
    let other_data = Plan::new(
        &self::fingerprint(&[&[50, 50], &[50], &[0]]),
        config(1, 10, 2, 32, PartialBatch::Drop),
    )
    .unwrap();
    assert_ne!(
        all(&plan, 0),
        all(&other_data, 0),
        "fingerprints must differ"
    );
    // The order is shuffled, not the identity.
    assert_ne!(all(&plan, 0), (0..150).collect::<Vec<_>>());
    // Computing a sub-range gives the same samples as slicing the whole.
    let order = plan.epoch_order(3);
    let whole = order.samples(0..150);
    for (start, end) in [(0, 1), (31, 33), (32, 64), (100, 150), (149, 150)] {
        assert_eq!(
            order.samples(start..end),
            whole[start as usize..end as usize]
        );
    }
}

#[test]
fn a_window_reads_few_row_groups() {
    // 100 row groups of 10; window 10: each run of 10 positions aligned on
    // the window comes from at most 2 row groups.
    let groups = [10u64; 100];
    let fingerprint = fingerprint(&[&groups]);
    let plan = Plan::new(&fingerprint, config(3, 10, 1, 10, PartialBatch::Drop)).unwrap();
    let order = plan.epoch_order(0).samples(0..1000);
    for window in order.chunks(10) {
        let groups: BTreeSet<u64> = window.iter().map(|sample| sample / 10).collect();
        assert!(groups.len() <= 2, "window spans {groups:?}");
    }
    // And with window 1, each row group is read in order.
    let plan = Plan::new(&fingerprint, config(3, 10, 1, 1, PartialBatch::Drop)).unwrap();
    let order = plan.epoch_order(0).samples(0..1000);
    for chunk in order.chunks(10) {
        assert_eq!(chunk[9] - chunk[0], 9);
        assert_eq!(chunk[0] % 10, 0);
    }
}

#[test]
fn resume_and_remap_see_the_same_samples_as_an_uninterrupted_run() {
    let fingerprint = fingerprint(&[&[40, 40, 17], &[33]]);
    for partial in [PartialBatch::Drop, PartialBatch::Pad] {
        let config = config(11, 24, 6, 20, partial);
        let plan = Plan::new(&fingerprint, config.clone()).unwrap();
        let total = 3 * plan.steps_per_epoch() + 2;
        let uninterrupted = record(
            &plan,
            DataCursor::default(),
            total,
            std::slice::from_ref(&(0..6)),
        );

        for interrupt_at in [
            1,
            plan.steps_per_epoch(),
            plan.steps_per_epoch() + 3,
            total - 1,
        ] {
            // First part: 2 workers hosting 0..4 and 4..6.
            let mut seen = record(&plan, DataCursor::default(), interrupt_at, &[0..4, 4..6]);
            // The checkpoint carries the cursor and the plan's inputs, as JSON.
            let cursor = plan.cursor_at(interrupt_at);
            let saved =
                serde_json::to_string(&(cursor, plan.fingerprint(), plan.config())).unwrap();
            let (cursor, fingerprint, config): (DataCursor, Fingerprint, PlanConfig) =
                serde_json::from_str(&saved).unwrap();
            assert!(fingerprint.is_consistent());
            let resumed = Plan::new(&fingerprint, config).unwrap();
            // Second part: 3 workers hosting 0..1, 1..3 and 3..6.
            seen.extend(record(
                &resumed,
                cursor,
                total - interrupt_at,
                &[0..1, 1..3, 3..6],
            ));
            seen.sort();
            assert_eq!(
                seen, uninterrupted,
                "interrupted at {interrupt_at} ({partial:?})"
            );
        }
    }
}

#[test]
fn cursor_arithmetic() {
    let fingerprint = fingerprint(&[&[25]]);
    let plan = Plan::new(&fingerprint, config(0, 10, 1, 8, PartialBatch::Drop)).unwrap();
    assert_eq!(plan.steps_per_epoch(), 2);
    assert_eq!(plan.cursor_at(0), DataCursor { epoch: 0, step: 0 });
    assert_eq!(plan.cursor_at(3), DataCursor { epoch: 1, step: 1 });
    assert_eq!(
        plan.next(DataCursor { epoch: 0, step: 1 }),
        DataCursor { epoch: 1, step: 0 }
    );
    assert_eq!(plan.steps_before(DataCursor { epoch: 4, step: 1 }), 9);
    let pad = Plan::new(&fingerprint, config(0, 10, 1, 8, PartialBatch::Pad)).unwrap();
    assert_eq!(pad.steps_per_epoch(), 3);
    let last = pad
        .micro_batches(DataCursor { epoch: 0, step: 2 }, 0..1)
        .unwrap();
    assert_eq!(last[0].real, 5);
    // Padding repeats the first positions of the same epoch.
    let first = pad.epoch_order(0).samples(0..5);
    assert_eq!(last[0].samples[5..], first[..]);
}

#[test]
fn read_requests_group_samples_by_row_group() {
    let fingerprint = fingerprint(&[&[4, 4], &[0, 3]]);
    let plan = Plan::new(&fingerprint, config(0, 2, 1, 1, PartialBatch::Drop)).unwrap();
    let requests = plan.read_requests(&[9, 0, 5, 3, 8, 0]).unwrap();
    let summary: Vec<(usize, usize, Vec<u64>)> = requests
        .into_iter()
        .map(|request| (request.file, request.row_group, request.rows))
        .collect();
    assert_eq!(
        summary,
        vec![(0, 0, vec![0, 3]), (0, 1, vec![1]), (1, 1, vec![0, 1])]
    );
    assert!(matches!(
        plan.read_requests(&[11]),
        Err(DatasetError::OutOfRange { .. })
    ));
}

#[track_caller]
fn check_error(files: &[&[u64]], global_batch: usize, virtual_ranks: usize, expected: &str) {
    let error = Plan::new(
        &fingerprint(files),
        config(0, global_batch, virtual_ranks, 4, PartialBatch::Pad),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(text.contains(expected), "{text:?} lacks {expected:?}");
}

#[test]
fn bad_plans_are_errors() {
    check_error(&[&[100]], 10, 3, "multiple of the number of virtual ranks");
    check_error(&[&[100]], 0, 1, "global batch must be positive");
    check_error(&[&[100]], 10, 0, "at least one virtual rank");
    check_error(
        &[&[5, 4]],
        10,
        1,
        "holds 9 samples, fewer than one global batch of 10",
    );
    let plan = Plan::new(
        &fingerprint(&[&[20]]),
        config(0, 10, 2, 4, PartialBatch::Drop),
    )
    .unwrap();
    assert!(
        plan.micro_batches(DataCursor { epoch: 0, step: 2 }, 0..2)
            .is_err()
    );
    assert!(
        plan.micro_batches(DataCursor { epoch: 0, step: 0 }, 1..3)
            .is_err()
    );
}

#[test]
fn tampered_fingerprints_and_huge_windows_are_refused() {
    let huge_window = Plan::new(
        &fingerprint(&[&[20]]),
        config(0, 10, 2, 1 << 30, PartialBatch::Drop),
    );
    assert!(matches!(huge_window, Err(DatasetError::OutOfRange { .. })));
    let mut tampered = fingerprint(&[&[20]]);
    tampered.files[0].row_groups = vec![10, 10];
    let error = Plan::new(&tampered, config(0, 10, 2, 4, PartialBatch::Drop)).unwrap_err();
    assert!(matches!(error, DatasetError::FingerprintMismatch { .. }));
}

#[test]
fn a_reused_epoch_order_gives_the_same_micro_batches() {
    let fingerprint = fingerprint(&[&[37, 64, 5], &[90]]);
    for window in [1, 7, 64, 10_000] {
        let plan = Plan::new(&fingerprint, config(5, 12, 3, window, PartialBatch::Pad)).unwrap();
        for epoch in 0..2 {
            let order = plan.epoch_order(epoch);
            // Out of order too: the cached window must not leak into another.
            let mut steps: Vec<u64> = (0..plan.steps_per_epoch()).collect();
            steps.rotate_left(5);
            for step in steps {
                let cursor = DataCursor { epoch, step };
                assert_eq!(
                    plan.micro_batches_in(&order, cursor, 0..3).unwrap(),
                    plan.micro_batches(cursor, 0..3).unwrap()
                );
            }
        }
    }
}
