//! Training in one process: every virtual rank of the job hosted here, the
//! all-reduce done in memory by the collective's reference reduction, which
//! adds in exactly the order the ring does. A run here gives the same bits
//! as the same job over any number of networked workers.
use crate::WorkerError;
use crate::collective::schedule::reference_all_reduce;
use crate::replica::Replica;

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The step's index, from 0.
    pub step: u64,
    /// The learning rate used.
    pub lr: f64,
    /// Mean loss over the global batch, per objective, in objective order.
    pub losses: Vec<(&'static str, f32)>,
}

/// One step of `replica` with all its virtual ranks in this process.
pub fn local_step(replica: &mut Replica) -> Result<StepReport, WorkerError> {
    let step = replica.completed_steps();
    let lr = replica.next_lr();
    let virtual_ranks = replica.job().virtual_ranks;
    let bucket_elements = replica.job().bucket_elements;
    replica.load_micro_batches(0..virtual_ranks)?;
    let names = replica.objective_names();
    let mut losses = Vec::with_capacity(names.len());
    for (objective, name) in names.into_iter().enumerate() {
        let summed: Vec<Vec<f32>> = replica
            .gradients(objective)?
            .iter()
            .map(|bucket| {
                let views: Vec<&[f32]> = bucket.iter().map(Vec::as_slice).collect();
                reference_all_reduce(&views, bucket_elements)
            })
            .collect();
        losses.push((name, replica.apply(objective, &summed)));
    }
    replica.finish_step();
    Ok(StepReport { step, lr, losses })
}
