//! A job's `[evaluation]`: its held-out data scored every `interval_steps`
//! steps and after the last one, by the first worker of the ring (every
//! replica holds the same parameters, so one evaluation stands for all).
//!
//! The score of each objective is its loss over every evaluation sample,
//! read in file order in chunks of the global batch, each chunk's mean
//! weighted by its number of samples; no gradient is recorded. Random
//! inputs (VAE noise, GAN latents, masks, views) are drawn with the
//! reserved epoch [`EVALUATION_EPOCH`], so every evaluation of a job sees
//! the same draws and its curve shows the model changing, not the noise.
//! A graph job evaluates on a graph (a node table and its edges) and
//! scores the nodes outside its training mask: the usual transductive
//! split, where the training graph itself is given as evaluation data.
use std::path::PathBuf;

use datasets::{ColumnMapping, Dataset, Reader, Task};
use models::{Batch, Model};
use ops::IndexTensor;

use crate::WorkerError;
use crate::inputs::model_batch;
use crate::job::PreparedJob;

/// The data-cursor epoch whose draws evaluation uses; no training run
/// reaches it.
pub const EVALUATION_EPOCH: u64 = u64::MAX;

/// Where a job's evaluation data is and how often it is scored.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluationSettings {
    /// The evaluation files, directories or globs, resolved.
    pub paths: Vec<PathBuf>,
    /// Model inputs to the evaluation data's columns.
    pub mapping: ColumnMapping,
    /// Score every this many steps (and after the last step).
    pub interval_steps: u64,
}

impl EvaluationSettings {
    /// Whether the model is scored after `completed_steps` of a job of
    /// `total_steps`.
    pub fn is_due(&self, completed_steps: u64, total_steps: u64) -> bool {
        completed_steps > 0
            && (completed_steps.is_multiple_of(self.interval_steps)
                || completed_steps == total_steps)
    }
}

enum Source {
    /// Samples read in file order, `chunk` at a time.
    Samples {
        reader: Reader,
        samples: u64,
        chunk: usize,
    },
    /// One graph, scored on the nodes outside its training mask.
    Graph(Box<Batch>),
}

/// The evaluation data of a job, opened.
pub struct Evaluator {
    source: Source,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").finish_non_exhaustive()
    }
}

impl Evaluator {
    /// Opens the evaluation data of `prepared` (its footers; a graph is
    /// read whole). `Ok(None)` when the job has no `[evaluation]`.
    pub fn open(prepared: &PreparedJob) -> Result<Option<Evaluator>, WorkerError> {
        let Some(settings) = &prepared.evaluation else {
            return Ok(None);
        };
        let source = if matches!(prepared.task, Task::GraphNodes) {
            let mut graph = crate::graph::read_graph_batch(
                &settings.paths,
                &settings.mapping,
                prepared.job.draws.input_scale,
            )?;
            let held_out: Vec<i64> = graph
                .index("gcn", "train_mask")?
                .data()
                .iter()
                .map(|&flag| i64::from(flag == 0))
                .collect();
            if held_out.iter().all(|&flag| flag == 0) {
                return Err(WorkerError::Input {
                    reason: "the evaluation graph has no node outside its training mask to score"
                        .to_string(),
                });
            }
            let nodes = held_out.len();
            graph.insert_index("train_mask", IndexTensor::from_vec([nodes], held_out));
            Source::Graph(Box::new(graph))
        } else {
            let dataset = Dataset::open(&settings.paths)?;
            let samples = dataset.samples();
            if samples == 0 {
                return Err(WorkerError::Input {
                    reason: "the evaluation data has no rows".to_string(),
                });
            }
            let reader = Reader::new(dataset, prepared.task, &settings.mapping)?;
            Source::Samples {
                reader,
                samples,
                chunk: prepared.global_batch.max(1),
            }
        };
        Ok(Some(Evaluator { source }))
    }

    /// Scores `model`: `eval_NAME` for each objective NAME (`eval_loss`,
    /// or `eval_d_loss` and `eval_g_loss` for a GAN), in objective order.
    pub fn evaluate(
        &mut self,
        model: &dyn Model,
        prepared: &PreparedJob,
    ) -> Result<Vec<(String, f64)>, WorkerError> {
        let objectives = model.objectives();
        let mut totals = vec![0.0f64; objectives.len()];
        let mut weight = 0.0f64;
        let mut score = |batch: &Batch, samples: f64| -> Result<(), WorkerError> {
            for (objective, total) in totals.iter_mut().enumerate() {
                let loss = ops::no_grad(|| model.loss(objective, batch))?;
                *total += f64::from(loss.item()) * samples;
            }
            weight += samples;
            Ok(())
        };
        match &mut self.source {
            Source::Graph(graph) => score(graph, 1.0)?,
            Source::Samples {
                reader,
                samples,
                chunk,
            } => {
                let job = &prepared.job;
                let ids: Vec<u64> = (0..*samples).collect();
                for chunk_ids in ids.chunks(*chunk) {
                    let data = reader.read_samples(chunk_ids)?;
                    let batch = model_batch(
                        &job.model_kind,
                        &job.model_config,
                        &data,
                        job.seed,
                        EVALUATION_EPOCH,
                        &job.draws,
                    )?;
                    score(&batch, chunk_ids.len() as f64)?;
                }
            }
        }
        Ok(objectives
            .iter()
            .zip(totals)
            .map(|(objective, total)| (format!("eval_{}", objective.name), total / weight))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_on_the_interval_and_after_the_last_step() {
        let settings = EvaluationSettings {
            paths: Vec::new(),
            mapping: ColumnMapping::default(),
            interval_steps: 4,
        };
        let due: Vec<u64> = (0..=10).filter(|&s| settings.is_due(s, 10)).collect();
        assert_eq!(due, vec![4, 8, 10]);
    }
}
