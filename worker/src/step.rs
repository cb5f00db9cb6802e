//! One data-parallel step, without I/O: how an objective's gradients are
//! laid out in all-reduce buckets, how each hosted virtual rank's backward
//! fills them as it goes, and how the mean gradients are rebuilt from the
//! all-reduced buckets.
//!
//! The layout follows DDP's: parameters in reverse `state_dict` order (the
//! order backward finishes them, last layers first), packed whole into
//! buckets of at most `bucket_elements` values (a larger parameter gets a
//! bucket of its own). The loss rides along as the first value of bucket
//! 0, so the same all-reduce also averages it. The layout depends on the
//! model, the objective and the job's bucket size only, so every virtual
//! rank agrees on it without talking, and the summation order of every
//! value stays fixed by V whatever the worker count.
use std::collections::HashMap;
use std::ops::Range;

use models::{Batch, Model, ModelError};
use ops::{ParameterSet, Tensor, TensorId};
use rayon::prelude::*;

/// Where one parameter's gradient sits in the buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    /// Index of the parameter in the model's `ParameterSet`.
    parameter: usize,
    bucket: usize,
    /// Values of the bucket holding the gradient.
    range: Range<usize>,
}

/// The bucket layout of one objective's gradients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradientLayout {
    /// Values per bucket (the loss counts in bucket 0).
    bucket_lens: Vec<usize>,
    /// Parameters of each bucket, in the bucket's order.
    bucket_parameters: Vec<Vec<usize>>,
    /// One entry per trained parameter, in reverse parameter order.
    placements: Vec<Placement>,
    /// For each parameter of the model, its index in `placements`.
    placement_of: Vec<Option<usize>>,
}

impl GradientLayout {
    /// The layout of the gradients of the parameters whose names start with
    /// `prefix` (an objective's), in buckets of at most `bucket_elements`
    /// values.
    ///
    /// # Panics
    /// When `bucket_elements` is 0.
    #[track_caller]
    pub fn new(parameters: &ParameterSet, prefix: &str, bucket_elements: usize) -> GradientLayout {
        assert!(bucket_elements > 0, "bucket_elements must be positive");
        let mut layout = GradientLayout {
            bucket_lens: vec![1],
            bucket_parameters: vec![Vec::new()],
            placements: Vec::new(),
            placement_of: vec![None; parameters.len()],
        };
        let trained: Vec<(usize, usize)> = parameters
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| name.starts_with(prefix))
            .map(|(index, (_, tensor))| (index, tensor.numel()))
            .collect();
        for &(parameter, numel) in trained.iter().rev() {
            let mut bucket = layout.bucket_lens.len() - 1;
            let used = layout.bucket_lens[bucket];
            if used > 0 && used + numel > bucket_elements && !layout.is_only_loss(bucket) {
                layout.bucket_lens.push(0);
                layout.bucket_parameters.push(Vec::new());
                bucket += 1;
            }
            let start = layout.bucket_lens[bucket];
            layout.bucket_lens[bucket] += numel;
            layout.bucket_parameters[bucket].push(parameter);
            layout.placement_of[parameter] = Some(layout.placements.len());
            layout.placements.push(Placement {
                parameter,
                bucket,
                range: start..start + numel,
            });
        }
        layout
    }

    fn is_only_loss(&self, bucket: usize) -> bool {
        bucket == 0 && self.bucket_parameters[0].is_empty()
    }

    /// Number of buckets.
    pub fn bucket_count(&self) -> usize {
        self.bucket_lens.len()
    }

    /// Values in bucket `bucket`.
    pub fn bucket_len(&self, bucket: usize) -> usize {
        self.bucket_lens[bucket]
    }

    /// Values in all buckets together.
    pub fn total_len(&self) -> usize {
        self.bucket_lens.iter().sum()
    }

    /// Number of parameters in bucket `bucket`.
    pub fn parameters_in(&self, bucket: usize) -> usize {
        self.bucket_parameters[bucket].len()
    }

    /// Bucket and range of parameter `parameter` (its index in the
    /// `ParameterSet`), or `None` when the objective does not train it.
    pub fn placement(&self, parameter: usize) -> Option<(usize, Range<usize>)> {
        self.placement_of
            .get(parameter)
            .copied()
            .flatten()
            .map(|index| {
                let placement = &self.placements[index];
                (placement.bucket, placement.range.clone())
            })
    }

    /// The mean gradients (the all-reduced sums divided by the number of
    /// virtual ranks) in parameter order (`None` for parameters the
    /// objective does not train), and the mean loss.
    ///
    /// # Panics
    /// When `summed` does not have the layout's buckets.
    #[track_caller]
    pub fn mean_gradients(
        &self,
        parameters: &ParameterSet,
        summed: &[Vec<f32>],
        virtual_ranks: usize,
    ) -> (Vec<Option<Tensor>>, f32) {
        assert_eq!(summed.len(), self.bucket_count(), "number of buckets");
        for (bucket, values) in summed.iter().enumerate() {
            assert_eq!(
                values.len(),
                self.bucket_len(bucket),
                "bucket {bucket} length"
            );
        }
        let scale = 1.0 / virtual_ranks as f32;
        let gradients = parameters
            .iter()
            .enumerate()
            .map(|(index, (_, tensor))| {
                let (bucket, range) = self.placement(index)?;
                let values = summed[bucket][range].iter().map(|v| v * scale).collect();
                Some(Tensor::from_vec(tensor.shape(), values))
            })
            .collect();
        (gradients, summed[0][self.loss_index()] * scale)
    }

    /// Index of the loss in bucket 0.
    fn loss_index(&self) -> usize {
        0
    }

    /// Euclidean norm of the mean gradient (the loss excluded), in f64.
    pub fn mean_gradient_norm(&self, summed: &[Vec<f32>], virtual_ranks: usize) -> f64 {
        let scale = virtual_ranks as f64;
        summed
            .iter()
            .enumerate()
            .flat_map(|(bucket, values)| {
                let skip = usize::from(bucket == 0);
                values[skip..].iter()
            })
            .map(|value| (f64::from(*value) / scale).powi(2))
            .sum::<f64>()
            .sqrt()
    }
}

/// One hosted rank's buckets while its backward runs: a bucket goes out as
/// soon as every parameter in it has its final gradient.
struct RankBuckets<'a> {
    layout: &'a GradientLayout,
    slot: usize,
    buckets: Vec<Option<Vec<f32>>>,
    missing: Vec<usize>,
    parameter_of: &'a HashMap<TensorId, usize>,
}

impl<'a> RankBuckets<'a> {
    fn new(
        layout: &'a GradientLayout,
        slot: usize,
        parameter_of: &'a HashMap<TensorId, usize>,
        loss: f32,
    ) -> Self {
        let mut buckets: Vec<Option<Vec<f32>>> = vec![None; layout.bucket_count()];
        let mut first = vec![0.0; layout.bucket_len(0)];
        first[layout.loss_index()] = loss;
        buckets[0] = Some(first);
        Self {
            layout,
            slot,
            buckets,
            missing: (0..layout.bucket_count())
                .map(|bucket| layout.parameters_in(bucket))
                .collect(),
            parameter_of,
        }
    }

    fn bucket(&mut self, bucket: usize) -> &mut Vec<f32> {
        let len = self.layout.bucket_len(bucket);
        self.buckets[bucket].get_or_insert_with(|| vec![0.0; len])
    }

    /// Takes a leaf's final gradient; emits its bucket when that was the
    /// last one missing.
    fn gradient(
        &mut self,
        leaf: &Tensor,
        gradient: Tensor,
        emit: &(dyn Fn(usize, usize, Vec<f32>) + Sync),
    ) {
        let Some(&parameter) = self.parameter_of.get(&leaf.id()) else {
            return;
        };
        let Some((bucket, range)) = self.layout.placement(parameter) else {
            return;
        };
        self.bucket(bucket)[range].copy_from_slice(gradient.data());
        self.missing[bucket] -= 1;
        if self.missing[bucket] == 0 {
            let values = self.buckets[bucket]
                .take()
                .expect("a bucket just written to");
            emit(bucket, self.slot, values);
        }
    }

    /// After backward: the buckets still holding parameters the loss did
    /// not reach go out with zeros for them, in bucket order.
    fn finish(mut self, emit: &(dyn Fn(usize, usize, Vec<f32>) + Sync)) {
        for bucket in 0..self.layout.bucket_count() {
            if self.missing[bucket] > 0 || (bucket == 0 && self.layout.parameters_in(0) == 0) {
                let values = std::mem::take(self.bucket(bucket));
                emit(bucket, self.slot, values);
            }
        }
    }
}

/// Computes objective `objective`'s gradients on each micro-batch (one per
/// hosted virtual rank, `micro_batches[slot]`) and hands every bucket of
/// every rank to `emit(bucket, slot, values)` as soon as it is complete,
/// while backward goes on with the rest. Ranks are computed in parallel
/// when rayon has threads; the values do not depend on it.
pub fn stream_rank_gradients(
    model: &dyn Model,
    objective: usize,
    micro_batches: &[Batch],
    layout: &GradientLayout,
    emit: &(dyn Fn(usize, usize, Vec<f32>) + Sync),
) -> Result<(), ModelError> {
    let parameter_of: HashMap<TensorId, usize> = model
        .parameters()
        .iter()
        .enumerate()
        .map(|(index, (_, tensor))| (tensor.id(), index))
        .collect();
    let one = |(slot, batch): (usize, &Batch)| -> Result<(), ModelError> {
        let loss = model.loss(objective, batch)?;
        let mut buckets = RankBuckets::new(layout, slot, &parameter_of, loss.item());
        loss.backward_streaming(Tensor::full(loss.shape(), 1.0), |leaf, gradient| {
            buckets.gradient(leaf, gradient, emit)
        });
        buckets.finish(emit);
        Ok(())
    };
    if micro_batches.len() > 1 && rayon::current_num_threads() > 1 {
        micro_batches.par_iter().enumerate().try_for_each(one)
    } else {
        micro_batches.iter().enumerate().try_for_each(one)
    }
}

/// The buckets of every hosted rank, all at once (for callers that do not
/// overlap): `result[bucket][slot]`.
pub fn rank_gradient_buckets(
    model: &dyn Model,
    objective: usize,
    micro_batches: &[Batch],
    layout: &GradientLayout,
) -> Result<Vec<Vec<Vec<f32>>>, ModelError> {
    let collected = std::sync::Mutex::new(vec![
        vec![Vec::new(); micro_batches.len()];
        layout.bucket_count()
    ]);
    stream_rank_gradients(
        model,
        objective,
        micro_batches,
        layout,
        &|bucket, slot, values| {
            collected.lock().expect("no panic while holding the lock")[bucket][slot] = values;
        },
    )?;
    Ok(collected
        .into_inner()
        .expect("no panic while holding the lock"))
}
