//! The job store: jobs, their state transitions, per-step metrics and
//! checkpoints, in one SQLite file in the coordinator's data directory.
//!
//! Every write is one transaction, so a coordinator killed at any point
//! reopens a consistent store. Times are given by the caller (Unix
//! milliseconds) so that tests control them.
use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{CoordinatorError, Result};
use crate::job::{JobId, JobState};
use crate::spec::JobSpec;

/// The schema; `user_version` says which one a file holds.
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT,
    spec          TEXT NOT NULL,
    state         TEXT NOT NULL,
    error         TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    job_id     INTEGER NOT NULL REFERENCES jobs(id),
    seq        INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS metrics (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    step   INTEGER NOT NULL,
    at_ms  INTEGER NOT NULL,
    values_json TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    step   INTEGER NOT NULL,
    path   TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes  INTEGER NOT NULL,
    at_ms  INTEGER NOT NULL,
    PRIMARY KEY (job_id, step)
);
";

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// The spec as submitted (validated).
    pub spec: JobSpec,
    /// Where the job is.
    pub state: JobState,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Submission time (Unix ms).
    pub created_at_ms: i64,
    /// Time of the last state change (Unix ms).
    pub updated_at_ms: i64,
}

/// One state change of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// When (Unix ms).
    pub at_ms: i64,
    /// The state before (`None` for the submission).
    pub from: Option<JobState>,
    /// The state after.
    pub to: JobState,
    /// Why, in words.
    pub reason: String,
}

/// The metrics a job reported for one step (loss, learning rate, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    /// The optimizer step (1 for the first).
    pub step: u64,
    /// When it was reported (Unix ms).
    pub at_ms: i64,
    /// Metric name to value.
    pub values: BTreeMap<String, f64>,
}

/// A checkpoint file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointRecord {
    /// The step after which it was written.
    pub step: u64,
    /// Where the safetensors file is.
    pub path: String,
    /// The file's SHA-256, in hex.
    pub sha256: String,
    /// The file's size.
    pub bytes: u64,
    /// When it was recorded (Unix ms).
    pub at_ms: i64,
}

/// The SQLite job store.
#[derive(Debug)]
pub struct JobStore {
    connection: Connection,
}

impl JobStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<JobStore> {
        let connection = Connection::open(path).map_err(CoordinatorError::store(format!(
            "opening {}",
            path.display()
        )))?;
        JobStore::init(connection)
    }

    /// A store in memory (for tests and `shoal run`).
    pub fn open_in_memory() -> Result<JobStore> {
        let connection =
            Connection::open_in_memory().map_err(CoordinatorError::store("opening in memory"))?;
        JobStore::init(connection)
    }

    fn init(connection: Connection) -> Result<JobStore> {
        // WAL keeps readers and the writer apart and survives a kill.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(CoordinatorError::store("setting WAL mode"))?;
        connection
            .pragma_update(None, "foreign_keys", true)
            .map_err(CoordinatorError::store("enabling foreign keys"))?;
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(CoordinatorError::store("reading the schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(CoordinatorError::CorruptStore {
                context: format!(
                    "schema version {version} is newer than this coordinator's ({SCHEMA_VERSION})"
                ),
            });
        }
        connection
            .execute_batch(SCHEMA)
            .map_err(CoordinatorError::store("creating the schema"))?;
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(CoordinatorError::store("writing the schema version"))?;
        Ok(JobStore { connection })
    }

    /// Stores a new job in state `queued` and returns its id.
    pub fn insert_job(&mut self, spec: &JobSpec, now_ms: i64) -> Result<JobId> {
        let spec_json = serde_json::to_string(spec).expect("a JobSpec serializes to JSON");
        let transaction = self
            .connection
            .transaction()
            .map_err(CoordinatorError::store("starting a transaction"))?;
        transaction
            .execute(
                "INSERT INTO jobs (name, spec, state, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![spec.name, spec_json, JobState::Queued.as_str(), now_ms],
            )
            .map_err(CoordinatorError::store("inserting a job"))?;
        let id = JobId(transaction.last_insert_rowid() as u64);
        insert_transition(
            &transaction,
            id,
            now_ms,
            None,
            JobState::Queued,
            "submitted",
        )?;
        transaction
            .commit()
            .map_err(CoordinatorError::store("committing a new job"))?;
        Ok(id)
    }

    /// The job `id`.
    pub fn job(&self, id: JobId) -> Result<JobRecord> {
        self.connection
            .query_row(
                "SELECT id, spec, state, error, created_at_ms, updated_at_ms FROM jobs WHERE id = ?1",
                params![id.0 as i64],
                raw_job,
            )
            .optional()
            .map_err(CoordinatorError::store(format!("reading job {id}")))?
            .ok_or(CoordinatorError::UnknownJob { id })?
            .decode()
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.select_jobs(
            "SELECT id, spec, state, error, created_at_ms, updated_at_ms FROM jobs ORDER BY id",
        )
    }

    /// Jobs that are not over (queued, running, waiting), oldest first: what
    /// a restarted coordinator resumes.
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        self.select_jobs(
            "SELECT id, spec, state, error, created_at_ms, updated_at_ms FROM jobs
             WHERE state IN ('queued', 'running', 'waiting_for_workers') ORDER BY id",
        )
    }

    fn select_jobs(&self, sql: &str) -> Result<Vec<JobRecord>> {
        let mut statement = self
            .connection
            .prepare(sql)
            .map_err(CoordinatorError::store("listing jobs"))?;
        let rows = statement
            .query_map([], raw_job)
            .map_err(CoordinatorError::store("listing jobs"))?;
        let mut jobs = Vec::new();
        for row in rows {
            jobs.push(
                row.map_err(CoordinatorError::store("listing jobs"))?
                    .decode()?,
            );
        }
        Ok(jobs)
    }

    /// How many jobs are in each state (every state present, maybe 0).
    pub fn count_by_state(&self) -> Result<BTreeMap<JobState, u64>> {
        let mut counts: BTreeMap<JobState, u64> =
            JobState::ALL.into_iter().map(|state| (state, 0)).collect();
        let mut statement = self
            .connection
            .prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .map_err(CoordinatorError::store("counting jobs"))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(CoordinatorError::store("counting jobs"))?;
        for row in rows {
            let (state, count) = row.map_err(CoordinatorError::store("counting jobs"))?;
            counts.insert(parse_state(&state)?, count as u64);
        }
        Ok(counts)
    }

    /// Moves job `id` to state `to`, recording why (and, for `failed`, the
    /// error). Setting the state it already has does nothing; a transition
    /// that [`JobState::can_become`] refuses is an error.
    pub fn set_state(
        &mut self,
        id: JobId,
        to: JobState,
        reason: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let transaction = self
            .connection
            .transaction()
            .map_err(CoordinatorError::store("starting a transaction"))?;
        let from: String = transaction
            .query_row(
                "SELECT state FROM jobs WHERE id = ?1",
                params![id.0 as i64],
                |row| row.get(0),
            )
            .optional()
            .map_err(CoordinatorError::store(format!("reading job {id}")))?
            .ok_or(CoordinatorError::UnknownJob { id })?;
        let from = parse_state(&from)?;
        if from == to {
            return Ok(());
        }
        if !from.can_become(to) {
            return Err(CoordinatorError::InvalidTransition { id, from, to });
        }
        transaction
            .execute(
                "UPDATE jobs SET state = ?2, error = COALESCE(?3, error), updated_at_ms = ?4
                 WHERE id = ?1",
                params![id.0 as i64, to.as_str(), error, now_ms],
            )
            .map_err(CoordinatorError::store(format!("updating job {id}")))?;
        insert_transition(&transaction, id, now_ms, Some(from), to, reason)?;
        transaction
            .commit()
            .map_err(CoordinatorError::store(format!(
                "committing job {id}'s state"
            )))
    }

    /// The state changes of job `id`, oldest first.
    pub fn transitions(&self, id: JobId) -> Result<Vec<Transition>> {
        self.job(id)?;
        let mut statement = self
            .connection
            .prepare(
                "SELECT at_ms, from_state, to_state, reason FROM transitions
                 WHERE job_id = ?1 ORDER BY seq",
            )
            .map_err(CoordinatorError::store("listing transitions"))?;
        let rows = statement
            .query_map(params![id.0 as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(CoordinatorError::store("listing transitions"))?;
        let mut transitions = Vec::new();
        for row in rows {
            let (at_ms, from, to, reason) =
                row.map_err(CoordinatorError::store("listing transitions"))?;
            transitions.push(Transition {
                at_ms,
                from: from.as_deref().map(parse_state).transpose()?,
                to: parse_state(&to)?,
                reason,
            });
        }
        Ok(transitions)
    }

    /// Records the metrics of one step of job `id`. A step reported again
    /// (after a ring re-formed mid-step) replaces the earlier row.
    pub fn record_metrics(
        &mut self,
        id: JobId,
        step: u64,
        values: &BTreeMap<String, f64>,
        now_ms: i64,
    ) -> Result<()> {
        self.job(id)?;
        let values_json = serde_json::to_string(values).expect("a map of floats serializes");
        self.connection
            .execute(
                "INSERT OR REPLACE INTO metrics (job_id, step, at_ms, values_json)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id.0 as i64, step as i64, now_ms, values_json],
            )
            .map_err(CoordinatorError::store(format!(
                "recording job {id}'s metrics"
            )))?;
        Ok(())
    }

    /// The per-step metrics of job `id`, by step.
    pub fn metrics(&self, id: JobId) -> Result<Vec<StepMetrics>> {
        self.job(id)?;
        let mut statement = self
            .connection
            .prepare("SELECT step, at_ms, values_json FROM metrics WHERE job_id = ?1 ORDER BY step")
            .map_err(CoordinatorError::store("reading metrics"))?;
        let rows = statement
            .query_map(params![id.0 as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(CoordinatorError::store("reading metrics"))?;
        let mut metrics = Vec::new();
        for row in rows {
            let (step, at_ms, values_json) =
                row.map_err(CoordinatorError::store("reading metrics"))?;
            let values = serde_json::from_str(&values_json).map_err(|error| {
                CoordinatorError::CorruptStore {
                    context: format!("job {id} step {step}: metrics: {error}"),
                }
            })?;
            metrics.push(StepMetrics {
                step: step as u64,
                at_ms,
                values,
            });
        }
        Ok(metrics)
    }

    /// The last step job `id` reported, if any.
    pub fn last_step(&self, id: JobId) -> Result<Option<u64>> {
        self.connection
            .query_row(
                "SELECT MAX(step) FROM metrics WHERE job_id = ?1",
                params![id.0 as i64],
                |row| row.get::<_, Option<i64>>(0),
            )
            .map(|step| step.map(|step| step as u64))
            .map_err(CoordinatorError::store(format!(
                "reading job {id}'s last step"
            )))
    }

    /// Records a checkpoint file of job `id` (written, synced and renamed
    /// before this call).
    pub fn record_checkpoint(&mut self, id: JobId, checkpoint: &CheckpointRecord) -> Result<()> {
        self.job(id)?;
        self.connection
            .execute(
                "INSERT OR REPLACE INTO checkpoints (job_id, step, path, sha256, bytes, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id.0 as i64,
                    checkpoint.step as i64,
                    checkpoint.path,
                    checkpoint.sha256,
                    checkpoint.bytes as i64,
                    checkpoint.at_ms
                ],
            )
            .map_err(CoordinatorError::store(format!(
                "recording job {id}'s checkpoint"
            )))?;
        Ok(())
    }

    /// The checkpoints of job `id`, oldest first.
    pub fn checkpoints(&self, id: JobId) -> Result<Vec<CheckpointRecord>> {
        self.job(id)?;
        let mut statement = self
            .connection
            .prepare(
                "SELECT step, path, sha256, bytes, at_ms FROM checkpoints
                 WHERE job_id = ?1 ORDER BY step",
            )
            .map_err(CoordinatorError::store("listing checkpoints"))?;
        let rows = statement
            .query_map(params![id.0 as i64], |row| {
                Ok(CheckpointRecord {
                    step: row.get::<_, i64>(0)? as u64,
                    path: row.get(1)?,
                    sha256: row.get(2)?,
                    bytes: row.get::<_, i64>(3)? as u64,
                    at_ms: row.get(4)?,
                })
            })
            .map_err(CoordinatorError::store("listing checkpoints"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(CoordinatorError::store("listing checkpoints"))
    }

    /// The newest checkpoint of job `id`, if any.
    pub fn latest_checkpoint(&self, id: JobId) -> Result<Option<CheckpointRecord>> {
        Ok(self.checkpoints(id)?.pop())
    }

    /// Forgets all but the `keep` newest checkpoints of job `id` and returns
    /// the forgotten ones, whose files the caller deletes.
    pub fn prune_checkpoints(&mut self, id: JobId, keep: usize) -> Result<Vec<CheckpointRecord>> {
        let checkpoints = self.checkpoints(id)?;
        let excess = checkpoints.len().saturating_sub(keep);
        let removed: Vec<CheckpointRecord> = checkpoints.into_iter().take(excess).collect();
        for checkpoint in &removed {
            self.connection
                .execute(
                    "DELETE FROM checkpoints WHERE job_id = ?1 AND step = ?2",
                    params![id.0 as i64, checkpoint.step as i64],
                )
                .map_err(CoordinatorError::store(format!(
                    "pruning job {id}'s checkpoints"
                )))?;
        }
        Ok(removed)
    }
}

struct RawJob {
    id: i64,
    spec: String,
    state: String,
    error: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn raw_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: row.get(0)?,
        spec: row.get(1)?,
        state: row.get(2)?,
        error: row.get(3)?,
        created_at_ms: row.get(4)?,
        updated_at_ms: row.get(5)?,
    })
}

impl RawJob {
    fn decode(self) -> Result<JobRecord> {
        let id = JobId(self.id as u64);
        let spec =
            serde_json::from_str(&self.spec).map_err(|error| CoordinatorError::CorruptStore {
                context: format!("job {id}: spec: {error}"),
            })?;
        Ok(JobRecord {
            id,
            spec,
            state: parse_state(&self.state)?,
            error: self.error,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

fn parse_state(text: &str) -> Result<JobState> {
    text.parse()
        .map_err(|problem| CoordinatorError::CorruptStore { context: problem })
}

fn insert_transition(
    connection: &Connection,
    id: JobId,
    now_ms: i64,
    from: Option<JobState>,
    to: JobState,
    reason: &str,
) -> Result<()> {
    connection
        .execute(
            "INSERT INTO transitions (job_id, seq, at_ms, from_state, to_state, reason)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM transitions WHERE job_id = ?1),
                     ?2, ?3, ?4, ?5)",
            params![
                id.0 as i64,
                now_ms,
                from.map(JobState::as_str),
                to.as_str(),
                reason
            ],
        )
        .map_err(CoordinatorError::store(format!(
            "recording job {id}'s transition"
        )))?;
    Ok(())
}
