//! The learning rate a job spec's `[schedule]` gives at each step, through
//! the schedule the worker builds from it (`job::schedule_of`).
use protocol::spec::JobSpec;
use worker::job::schedule_of;

/// A spec with learning rate 1 and the given `[schedule]` section.
fn spec_with_schedule(schedule: &str) -> JobSpec {
    let text = format!(
        r#"
name = "schedule"
seed = 1
global_batch = 8
virtual_ranks = 2
steps = 12

[model]
kind = "mlp"
config = {{ d_in = 4, d_hidden = 8, n_classes = 2 }}

[data]
paths = ["train.parquet"]
columns = {{ x = "pixels", label = "label" }}

[optimizer]
kind = "sgd"
lr = 1.0

{schedule}
"#
    );
    JobSpec::from_toml(&text).unwrap_or_else(|error| panic!("refused: {error}\n{text}"))
}

/// The spec's schedule over `total_steps` gives the rate `want` at each
/// `(step, want)` of `expected`.
#[track_caller]
fn check(spec: &JobSpec, total_steps: u64, expected: &[(u64, f64)]) {
    let schedule = schedule_of(spec, total_steps);
    for &(step, want) in expected {
        let got = schedule.lr(spec.optimizer.lr, step);
        assert!(
            (got - want).abs() < 1e-12,
            "step {step}: rate {got}, expected {want}"
        );
    }
}

#[test]
fn constant_linear_warmup_and_cosine_schedules() {
    check(
        &spec_with_schedule(""),
        10,
        &[(0, 1.0), (9, 1.0), (50, 1.0)],
    );
    check(
        &spec_with_schedule("[schedule]\nkind = \"linear_warmup\"\nwarmup_steps = 4"),
        10,
        &[(0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0), (4, 1.0), (5, 1.0)],
    );
    // Warm-up over 2 steps, then half a cosine from 1 to 0.1 over the
    // remaining 10, and 0.1 after the last step.
    check(
        &spec_with_schedule("[schedule]\nkind = \"cosine\"\nwarmup_steps = 2\nmin_lr = 0.1"),
        12,
        &[
            (0, 0.5),
            (1, 1.0),
            (2, 1.0),
            (7, 0.55),
            (12, 0.1),
            (50, 0.1),
        ],
    );
}
