//! Sharding and order: which samples each virtual rank sees at each step.
//!
//! Everything here is a pure function of the plan (fingerprint, seed,
//! global batch, virtual ranks, shuffle window, partial-batch rule) and the
//! data cursor. The order of an epoch is built in two stages:
//! 1. the row groups of the whole dataset are permuted (keyed by the
//!    fingerprint, the seed and the epoch), and their samples concatenated;
//! 2. that sequence is cut into consecutive windows of `shuffle_window`
//!    samples, and each window is permuted on its own.
//!
//! So every sample appears exactly once per epoch, a step touches few row
//! groups (reading stays sequential), and computing any step costs
//! O(row groups + window + global batch), never O(dataset).
//!
//! Step `s` of an epoch takes positions `s*G .. (s+1)*G` of that order;
//! virtual rank `r` takes the `r`-th slice of `G/V` of them. A worker
//! hosting virtual ranks `r0..r1` reads positions `s*G + r0*G/V ..
//! s*G + r1*G/V`.
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::dataset::Fingerprint;
use crate::error::{DatasetError, Result};
use crate::rng::{Keyed, mix64};

/// Where the samples live: row groups in dataset order with their first
/// sample id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// One entry per row group, in dataset order.
    row_groups: Vec<RowGroupSpan>,
    samples: u64,
}

/// One row group of a dataset, located.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowGroupSpan {
    /// Index of the file in the dataset.
    pub file: usize,
    /// Index of the row group inside the file.
    pub row_group: usize,
    /// Sample id of its first row.
    pub first_sample: u64,
    /// Its number of rows.
    pub rows: u64,
}

/// Where one sample lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleLocation {
    /// Index of the row group in the dataset (over all files).
    pub global_row_group: usize,
    /// Index of the file in the dataset.
    pub file: usize,
    /// Index of the row group inside the file.
    pub row_group: usize,
    /// Row inside the row group.
    pub row: u64,
}

impl Layout {
    /// The layout described by a fingerprint.
    pub fn new(fingerprint: &Fingerprint) -> Self {
        let mut row_groups = Vec::new();
        let mut next = 0u64;
        for (file_index, file) in fingerprint.files.iter().enumerate() {
            for (group_index, rows) in file.row_groups.iter().enumerate() {
                row_groups.push(RowGroupSpan {
                    file: file_index,
                    row_group: group_index,
                    first_sample: next,
                    rows: *rows,
                });
                next += rows;
            }
        }
        Self {
            row_groups,
            samples: next,
        }
    }

    /// The row groups in dataset order.
    pub fn row_groups(&self) -> &[RowGroupSpan] {
        &self.row_groups
    }

    /// The number of samples.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Where sample `sample` lives.
    pub fn locate(&self, sample: u64) -> Result<SampleLocation> {
        if sample >= self.samples {
            return Err(DatasetError::OutOfRange {
                message: format!("sample {sample} of a dataset of {}", self.samples),
            });
        }
        // The last row group starting at or before `sample` (empty row
        // groups share a start with the next one; skip them).
        let index = self
            .row_groups
            .partition_point(|span| span.first_sample + span.rows <= sample);
        let span = self.row_groups[index];
        Ok(SampleLocation {
            global_row_group: index,
            file: span.file,
            row_group: span.row_group,
            row: sample - span.first_sample,
        })
    }
}

/// What happens to the last global batch of an epoch when the number of
/// samples is not a multiple of the global batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartialBatch {
    /// Skip the last `samples mod G` positions of the epoch's order (they are
    /// different samples each epoch, since the order changes). Every step
    /// has `G` distinct samples; each sample is seen at most once per epoch.
    #[default]
    Drop,
    /// Fill the last global batch up to `G` by repeating the first positions
    /// of the same epoch's order. The repeats are marked as padding in
    /// [`MicroBatch::real`] so a trainer may mask them out; every sample is
    /// seen exactly once per epoch as a real sample.
    Pad,
}

/// The settings of a plan that come from the job spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanConfig {
    /// The job's seed.
    pub seed: u64,
    /// The global batch G (samples per step over all virtual ranks).
    pub global_batch: usize,
    /// The number of virtual ranks V; G must be a multiple of V.
    pub virtual_ranks: usize,
    /// The window inside which samples are shuffled after the row groups
    /// are (1: no shuffling inside row groups).
    #[serde(default = "default_window")]
    pub shuffle_window: usize,
    /// The rule for the last partial global batch.
    #[serde(default)]
    pub partial_batch: PartialBatch,
}

fn default_window() -> usize {
    PlanConfig::DEFAULT_WINDOW
}

impl PlanConfig {
    /// The default shuffle window, in samples.
    pub const DEFAULT_WINDOW: usize = 4096;
    /// The largest shuffle window accepted (its permutation takes 4 bytes
    /// per sample).
    pub const MAX_WINDOW: usize = 1 << 24;

    /// A config with the default window and `Drop`.
    pub fn new(seed: u64, global_batch: usize, virtual_ranks: usize) -> Self {
        Self {
            seed,
            global_batch,
            virtual_ranks,
            shuffle_window: Self::DEFAULT_WINDOW,
            partial_batch: PartialBatch::Drop,
        }
    }
}

/// Where a job stands in its data: the next step to run. It goes into every
/// checkpoint; resuming from it neither repeats nor skips a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DataCursor {
    /// The epoch, from 0.
    pub epoch: u64,
    /// The step inside the epoch, from 0.
    pub step: u64,
}

/// The samples of one virtual rank at one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicroBatch {
    /// The virtual rank.
    pub virtual_rank: usize,
    /// Sample ids, `G/V` of them.
    pub samples: Vec<u64>,
    /// How many of `samples`, from the start, are real; the rest are
    /// padding (only in the last step of an epoch under [`PartialBatch::Pad`]).
    pub real: usize,
}

/// A sample set to read from one row group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Index of the file in the dataset.
    pub file: usize,
    /// Index of the row group inside the file.
    pub row_group: usize,
    /// Rows inside the row group, sorted, without repeats.
    pub rows: Vec<u64>,
}

/// The sharding plan of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    fingerprint: Fingerprint,
    config: PlanConfig,
    layout: Layout,
    key: u64,
}

impl Plan {
    /// Checks the config against the dataset and builds the plan.
    pub fn new(fingerprint: &Fingerprint, config: PlanConfig) -> Result<Self> {
        let split_error = |message: &str| DatasetError::BadBatchSplit {
            global_batch: config.global_batch,
            virtual_ranks: config.virtual_ranks,
            message: message.into(),
        };
        if config.global_batch == 0 {
            return Err(split_error("the global batch must be positive"));
        }
        if config.virtual_ranks == 0 {
            return Err(split_error("there must be at least one virtual rank"));
        }
        if !config.global_batch.is_multiple_of(config.virtual_ranks) {
            return Err(split_error(
                "the global batch must be a multiple of the number of virtual ranks",
            ));
        }
        if config.shuffle_window > PlanConfig::MAX_WINDOW {
            return Err(DatasetError::OutOfRange {
                message: format!(
                    "shuffle window {} exceeds {} samples",
                    config.shuffle_window,
                    PlanConfig::MAX_WINDOW
                ),
            });
        }
        if !fingerprint.is_consistent() {
            return Err(DatasetError::FingerprintMismatch {
                expected: fingerprint.hash.clone(),
                found: Fingerprint::new(fingerprint.files.clone(), fingerprint.schema.clone()).hash,
            });
        }
        let layout = Layout::new(fingerprint);
        if layout.samples() < config.global_batch as u64 {
            return Err(DatasetError::TooFewSamples {
                fingerprint: fingerprint.hash.clone(),
                samples: layout.samples(),
                global_batch: config.global_batch,
            });
        }
        if layout.row_groups().len() > u32::MAX as usize {
            return Err(DatasetError::OutOfRange {
                message: format!("{} row groups exceed 2^32", layout.row_groups().len()),
            });
        }
        let key = mix64(fingerprint.key() ^ mix64(config.seed));
        Ok(Self {
            fingerprint: fingerprint.clone(),
            config: PlanConfig {
                shuffle_window: config.shuffle_window.max(1),
                ..config
            },
            layout,
            key,
        })
    }

    /// The dataset's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The settings.
    pub fn config(&self) -> &PlanConfig {
        &self.config
    }

    /// Where the samples live.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The number of samples of the dataset.
    pub fn samples(&self) -> u64 {
        self.layout.samples()
    }

    /// Samples per virtual rank per step (G/V).
    pub fn micro_batch(&self) -> usize {
        self.config.global_batch / self.config.virtual_ranks
    }

    /// Steps per epoch: `floor(N/G)` under `Drop`, `ceil(N/G)` under `Pad`.
    pub fn steps_per_epoch(&self) -> u64 {
        let samples = self.samples();
        let batch = self.config.global_batch as u64;
        match self.config.partial_batch {
            PartialBatch::Drop => samples / batch,
            PartialBatch::Pad => samples.div_ceil(batch),
        }
    }

    /// The cursor after `steps` steps from the start of the job.
    pub fn cursor_at(&self, steps: u64) -> DataCursor {
        let per_epoch = self.steps_per_epoch();
        DataCursor {
            epoch: steps / per_epoch,
            step: steps % per_epoch,
        }
    }

    /// The number of steps from the start of the job to `cursor`.
    pub fn steps_before(&self, cursor: DataCursor) -> u64 {
        cursor.epoch * self.steps_per_epoch() + cursor.step
    }

    /// The cursor of the step after `cursor`.
    pub fn next(&self, cursor: DataCursor) -> DataCursor {
        self.cursor_at(self.steps_before(cursor) + 1)
    }

    /// The order of epoch `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> EpochOrder {
        EpochOrder::new(self, epoch)
    }

    /// The micro-batches of virtual ranks `ranks` at step `cursor`.
    pub fn micro_batches(
        &self,
        cursor: DataCursor,
        ranks: Range<usize>,
    ) -> Result<Vec<MicroBatch>> {
        self.micro_batches_in(&self.epoch_order(cursor.epoch), cursor, ranks)
    }

    /// Like [`Plan::micro_batches`], with the epoch's order computed by the
    /// caller (reusing one `EpochOrder` across the steps of an epoch saves
    /// recomputing its permutations every step).
    ///
    /// # Panics
    /// If `order` is not the order of `cursor.epoch` of this plan.
    pub fn micro_batches_in(
        &self,
        order: &EpochOrder,
        cursor: DataCursor,
        ranks: Range<usize>,
    ) -> Result<Vec<MicroBatch>> {
        assert_eq!(
            order.epoch(),
            cursor.epoch,
            "Plan::micro_batches_in: order of epoch {} for a step of epoch {}",
            order.epoch(),
            cursor.epoch
        );
        if cursor.step >= self.steps_per_epoch() {
            return Err(DatasetError::OutOfRange {
                message: format!(
                    "step {} of an epoch of {} steps",
                    cursor.step,
                    self.steps_per_epoch()
                ),
            });
        }
        if ranks.start > ranks.end || ranks.end > self.config.virtual_ranks {
            return Err(DatasetError::OutOfRange {
                message: format!("virtual ranks {ranks:?} of {}", self.config.virtual_ranks),
            });
        }
        let micro = self.micro_batch() as u64;
        let step_start = cursor.step * self.config.global_batch as u64;
        let start = step_start + ranks.start as u64 * micro;
        let end = step_start + ranks.end as u64 * micro;
        let samples = self.samples();
        // Positions past the end wrap to the start of the same order (Pad).
        let real_end = end.min(samples);
        let mut ids = if start < real_end {
            order.samples(start..real_end)
        } else {
            Vec::new()
        };
        let padding = end - real_end.max(start);
        if padding > 0 {
            let pad_start = start.max(samples) - samples;
            ids.extend(order.samples(pad_start..pad_start + padding));
        }
        let mut batches = Vec::with_capacity(ranks.len());
        for (offset, rank) in ranks.clone().enumerate() {
            let rank_start = start + offset as u64 * micro;
            let chunk = &ids[offset * micro as usize..(offset + 1) * micro as usize];
            let real = samples.saturating_sub(rank_start).min(micro) as usize;
            batches.push(MicroBatch {
                virtual_rank: rank,
                samples: chunk.to_vec(),
                real,
            });
        }
        Ok(batches)
    }

    /// What to read for a set of samples: one request per row group, in
    /// dataset order, rows sorted and deduplicated.
    pub fn read_requests(&self, samples: &[u64]) -> Result<Vec<ReadRequest>> {
        let mut located = Vec::with_capacity(samples.len());
        for &sample in samples {
            let location = self.layout.locate(sample)?;
            located.push((location.global_row_group, location.row));
        }
        located.sort_unstable();
        located.dedup();
        let mut requests: Vec<ReadRequest> = Vec::new();
        let mut current = usize::MAX;
        for (group, row) in located {
            if group != current {
                let span = self.layout.row_groups()[group];
                requests.push(ReadRequest {
                    file: span.file,
                    row_group: span.row_group,
                    rows: Vec::new(),
                });
                current = group;
            }
            if let Some(request) = requests.last_mut() {
                request.rows.push(row);
            }
        }
        Ok(requests)
    }
}

/// The order of one epoch, evaluated lazily: holds the row-group
/// permutation (O(row groups)) and computes window permutations on demand.
#[derive(Clone, Debug)]
pub struct EpochOrder {
    /// Row groups in the order of this epoch (indices into the layout).
    group_order: Vec<u32>,
    /// Start position of each permuted row group in the concatenated
    /// sequence, plus the total at the end.
    group_starts: Vec<u64>,
    /// Layout first-sample of each row group in permuted order.
    group_first_samples: Vec<u64>,
    window: u64,
    samples: u64,
    key: u64,
    epoch: u64,
    /// The last window permutation computed: consecutive steps mostly fall
    /// in the same window, so a reused `EpochOrder` computes each once.
    last_window: std::cell::RefCell<Option<(u64, Vec<u32>)>>,
}

const STREAM_ROW_GROUPS: u64 = 0x5257_4752_4f55_5053; // "RGROUPS"
const STREAM_WINDOW: u64 = 0x5749_4e44_4f57_5353; // "WINDOWS"

impl EpochOrder {
    fn new(plan: &Plan, epoch: u64) -> Self {
        let groups = plan.layout.row_groups();
        let stream = mix64(STREAM_ROW_GROUPS ^ mix64(epoch));
        let group_order = Keyed::new(plan.key, stream).permutation(groups.len());
        let mut group_starts = Vec::with_capacity(groups.len() + 1);
        let mut group_first_samples = Vec::with_capacity(groups.len());
        let mut next = 0u64;
        for &group in &group_order {
            let span = groups[group as usize];
            group_starts.push(next);
            group_first_samples.push(span.first_sample);
            next += span.rows;
        }
        group_starts.push(next);
        Self {
            group_order,
            group_starts,
            group_first_samples,
            window: plan.config.shuffle_window as u64,
            samples: plan.samples(),
            key: plan.key,
            epoch,
            last_window: std::cell::RefCell::new(None),
        }
    }

    /// The epoch this is the order of.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The row groups in this epoch's order (indices over all files).
    pub fn row_group_order(&self) -> &[u32] {
        &self.group_order
    }

    /// The sample at position `position` of the concatenated (row-group
    /// shuffled, not yet window shuffled) sequence.
    fn concatenated(&self, position: u64) -> u64 {
        let index = self
            .group_starts
            .partition_point(|&start| start <= position)
            - 1;
        self.group_first_samples[index] + (position - self.group_starts[index])
    }

    /// The samples at positions `range` of this epoch's order.
    ///
    /// # Panics
    /// If the range goes past the number of samples.
    pub fn samples(&self, range: Range<u64>) -> Vec<u64> {
        assert!(
            range.end <= self.samples,
            "EpochOrder::samples: {range:?} past {} samples",
            self.samples
        );
        let mut out = Vec::with_capacity((range.end.saturating_sub(range.start)) as usize);
        let mut position = range.start;
        while position < range.end {
            let window = position / self.window;
            let window_start = window * self.window;
            let window_end = (window_start + self.window).min(self.samples);
            let mut last_window = self.last_window.borrow_mut();
            if last_window.as_ref().map(|(cached, _)| *cached) != Some(window) {
                let stream =
                    mix64(STREAM_WINDOW ^ mix64(self.epoch) ^ mix64(window.wrapping_add(1)));
                let permutation =
                    Keyed::new(self.key, stream).permutation((window_end - window_start) as usize);
                *last_window = Some((window, permutation));
            }
            let Some((_, permutation)) = last_window.as_ref() else {
                unreachable!("the window's permutation was just computed");
            };
            let stop = range.end.min(window_end);
            for inner in position..stop {
                let shuffled = permutation[(inner - window_start) as usize] as u64;
                out.push(self.concatenated(window_start + shuffled));
            }
            position = stop;
        }
        out
    }
}
