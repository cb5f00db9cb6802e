//! Streaming the micro-batches of successive steps, and reading them ahead
//! on a background thread.
//!
//! [`StepBatches`] is a plain iterator: each `next` computes the step's
//! micro-batches from the plan and reads them. [`Prefetch`] runs any such
//! iterator on a thread, at most `depth` items ahead, so the training loop
//! finds the next step's data ready. The worker measures how long `next`
//! blocks (the crate has no clock) and exports it as the data-wait metric.
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::Result;
use crate::plan::{DataCursor, EpochOrder, MicroBatch, Plan};
use crate::read::{Batch, Reader};

/// The data of one step for the virtual ranks a worker hosts.
#[derive(Clone, Debug)]
pub struct StepBatch {
    /// The step.
    pub cursor: DataCursor,
    /// One entry per hosted virtual rank, in rank order: which samples, and
    /// their data.
    pub micro_batches: Vec<(MicroBatch, Batch)>,
}

/// The steps from a cursor on, for a range of virtual ranks.
#[derive(Debug)]
pub struct StepBatches {
    plan: Plan,
    reader: Reader,
    ranks: Range<usize>,
    next: DataCursor,
    remaining: u64,
    order: Option<EpochOrder>,
}

impl StepBatches {
    /// `steps` steps from `start`, for virtual ranks `ranks`. Checks that
    /// the reader's dataset is the plan's.
    pub fn new(
        plan: Plan,
        reader: Reader,
        ranks: Range<usize>,
        start: DataCursor,
        steps: u64,
    ) -> Result<Self> {
        let found = &reader.dataset().fingerprint().hash;
        if *found != plan.fingerprint().hash {
            return Err(crate::DatasetError::FingerprintMismatch {
                expected: plan.fingerprint().hash.clone(),
                found: found.clone(),
            });
        }
        Ok(Self {
            plan,
            reader,
            ranks,
            next: start,
            remaining: steps,
            order: None,
        })
    }

    fn read_step(&mut self) -> Result<StepBatch> {
        let cursor = self.next;
        if self
            .order
            .as_ref()
            .is_none_or(|order| order.epoch() != cursor.epoch)
        {
            self.order = Some(self.plan.epoch_order(cursor.epoch));
        }
        let micro_batches = match &self.order {
            Some(order) => self
                .plan
                .micro_batches_in(order, cursor, self.ranks.clone())?,
            None => self.plan.micro_batches(cursor, self.ranks.clone())?,
        };
        let mut out = Vec::with_capacity(micro_batches.len());
        for micro_batch in micro_batches {
            let batch = self.reader.read_samples(&micro_batch.samples)?;
            out.push((micro_batch, batch));
        }
        Ok(StepBatch {
            cursor,
            micro_batches: out,
        })
    }
}

impl Iterator for StepBatches {
    type Item = Result<StepBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let step = self.read_step();
        self.next = self.plan.next(self.next);
        if step.is_err() {
            self.remaining = 0;
        }
        Some(step)
    }
}

/// An iterator run on its own thread, at most `depth` items ahead. Dropping
/// it stops the thread after the item it is producing.
#[derive(Debug)]
pub struct Prefetch<T: Send + 'static> {
    receiver: Option<Receiver<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Starts producing `items` on a thread named `shoal-prefetch`.
    pub fn new<I>(items: I, depth: usize) -> std::io::Result<Self>
    where
        I: Iterator<Item = T> + Send + 'static,
    {
        let (sender, receiver): (SyncSender<T>, Receiver<T>) = sync_channel(depth.max(1));
        let thread = std::thread::Builder::new()
            .name("shoal-prefetch".into())
            .spawn(move || {
                for item in items {
                    if sender.send(item).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            receiver: Some(receiver),
            thread: Some(thread),
        })
    }
}

impl<T: Send + 'static> Iterator for Prefetch<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl<T: Send + 'static> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next send fail.
        self.receiver.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
