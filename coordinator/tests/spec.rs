//! Job specs from the user's side: what parses, what is refused and with
//! which message, TOML and JSON alike, and the example specs.
use coordinator::JobSpec;
use coordinator::spec::{MODEL_KINDS, OptimizerKind, PartialBatch, ScheduleKind};

const BASE: &str = r#"
name = "base"
seed = 3
global_batch = 64
virtual_ranks = 8
steps = 100

[model]
kind = "mlp"
config = { d_in = 16, d_hidden = 24, n_classes = 5 }

[data]
paths = ["train.parquet"]
columns = { x = "pixels", label = "label" }

[optimizer]
kind = "adamw"
lr = 0.001
"#;

/// `BASE` with `from` replaced by `to` (which must occur).
#[track_caller]
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no `{from}`");
    BASE.replacen(from, to, 1)
}

/// The spec is refused with a message containing `expected`.
#[track_caller]
fn check(text: &str, expected: &str) {
    match JobSpec::from_toml(text) {
        Ok(spec) => panic!("accepted, expected an error with `{expected}`: {spec:?}"),
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains(expected),
                "error `{message}` does not contain `{expected}`"
            );
        }
    }
}

#[track_caller]
fn accepts(text: &str) -> JobSpec {
    JobSpec::from_toml(text).unwrap_or_else(|error| panic!("refused: {error}\n{text}"))
}

#[test]
fn base_spec_parses_with_defaults() {
    let spec = accepts(BASE);
    assert_eq!(spec.model.kind, "mlp");
    assert_eq!(spec.task(), "classification");
    assert_eq!(spec.optimizer.kind, OptimizerKind::Adamw);
    assert_eq!(spec.schedule.kind, ScheduleKind::Constant);
    assert_eq!(spec.data.partial_batch, PartialBatch::Drop);
    assert_eq!(spec.checkpoint.keep, 3);
    assert_eq!(spec.checkpoint.interval_steps, None);
    assert_eq!(spec.min_workers(), 1);
    assert_eq!(spec.max_workers(), 8);
    assert_eq!(spec.micro_batch(), 8);
    assert_eq!(spec.seed, 3);
}

#[test]
fn toml_syntax_and_type_errors_carry_line_and_column() {
    check("global_batch = ", "line 1, column 16");
    check(
        &base_with("virtual_ranks = 8", "virtual_ranks = \"eight\""),
        "line 5",
    );
    check(
        &base_with("virtual_ranks = 8", "virtual_ranks = -8"),
        "line 5",
    );
    check(
        &base_with("steps = 100", "steps = 100\nsteps = 3"),
        "duplicate key",
    );
    check(
        &base_with("seed = 3", "seed = 3\nlearning_rate = 1"),
        "unknown field `learning_rate`",
    );
    check(
        &base_with("kind = \"adamw\"", "kind = \"rmsprop\""),
        "unknown variant `rmsprop`",
    );
    check(
        &base_with("global_batch = 64\n", ""),
        "missing field `global_batch`",
    );
    check(
        &base_with("lr = 0.001", "lr = 0.001\nbeta = 0.9"),
        "unknown field `beta`",
    );
    check(
        &base_with("columns = {", "partial_batch = \"sometimes\"\ncolumns = {"),
        "unknown variant `sometimes`",
    );
    check("", "missing field");
    check("\u{0}\u{1}\u{2}", "TOML");
}

#[test]
fn value_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "global_batch = 64",
            "global_batch = 100",
            "global_batch: 100 is not divisible by virtual_ranks = 8",
        ),
        (
            "global_batch = 64",
            "global_batch = 0",
            "global_batch: must be at least 1",
        ),
        (
            "virtual_ranks = 8",
            "virtual_ranks = 0",
            "virtual_ranks: must be at least 1",
        ),
        ("steps = 100", "steps = 0", "steps: must be at least 1"),
        ("steps = 100", "epochs = 0", "epochs: must be at least 1"),
        ("steps = 100", "steps = 100\nepochs = 2", "not both"),
        ("steps = 100\n", "", "give either `steps` or `epochs`"),
        (
            "name = \"base\"",
            "name = \"  \"",
            "name: must not be empty",
        ),
        (
            "kind = \"mlp\"",
            "kind = \"transformer\"",
            "model.kind: unknown model `transformer` (known: mlp, lstm",
        ),
        ("d_in = 16, ", "", "model.config.d_in: missing"),
        (
            "n_classes = 5",
            "n_classes = 5, dropout = 1",
            "model.config.dropout: unknown hyperparameter of model `mlp`",
        ),
        (
            "n_classes = 5",
            "n_classes = 0",
            "model.config.n_classes: 0 is not a positive integer",
        ),
        (
            "n_classes = 5",
            "n_classes = 2.5",
            "model.config.n_classes: 2.5 is not a positive integer",
        ),
        (
            "n_classes = 5",
            "n_classes = \"five\"",
            "model.config.n_classes: \"five\" is not a positive integer",
        ),
        (
            "seed = 3",
            "seed = 3\ntask = \"next_token\"",
            "task: model `mlp` trains `classification`, not `next_token`",
        ),
        (
            "paths = [\"train.parquet\"]",
            "paths = []",
            "data.paths: must list at least one",
        ),
        (
            "paths = [\"train.parquet\"]",
            "paths = [\"a.parquet\", \"\"]",
            "data.paths[1]: must not be empty",
        ),
        (
            "x = \"pixels\", ",
            "",
            "data.columns.x: missing: model `mlp` reads x, label",
        ),
        (
            "label = \"label\"",
            "label = \"label\", tokens = \"t\"",
            "data.columns.tokens: model `mlp` has no input `tokens`",
        ),
        (
            "label = \"label\"",
            "label = \"\"",
            "data.columns.label: the column name must not be empty",
        ),
        (
            "lr = 0.001",
            "lr = 0.0",
            "optimizer.lr: 0 is not a positive number",
        ),
        (
            "lr = 0.001",
            "lr = -1.0",
            "optimizer.lr: -1 is not a positive number",
        ),
        (
            "lr = 0.001",
            "lr = nan",
            "optimizer.lr: NaN is not a positive number",
        ),
        (
            "lr = 0.001",
            "lr = inf",
            "optimizer.lr: inf is not a positive number",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\nmomentum = 0.9",
            "optimizer.momentum: is not a setting of `adamw`",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\nbetas = [0.9, 1.0]",
            "optimizer.betas[1]: 1 is not in [0, 1)",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\nbetas = [0.9]",
            "invalid length 1",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\neps = 0.0",
            "optimizer.eps: 0 is not a positive number",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\nweight_decay = -0.1",
            "optimizer.weight_decay: -0.1 is negative",
        ),
        (
            "kind = \"adamw\"",
            "kind = \"sgd\"\nbetas = [0.9, 0.99]",
            "optimizer.betas: is not a setting of `sgd`",
        ),
        (
            "kind = \"adamw\"",
            "kind = \"sgd\"\nmomentum = 1.0",
            "optimizer.momentum: 1 is not in [0, 1)",
        ),
        (
            "kind = \"adamw\"",
            "kind = \"sgd\"\ndampening = 2.0",
            "optimizer.dampening: 2 is not in [0, 1]",
        ),
        (
            "kind = \"adamw\"",
            "kind = \"sgd\"\nnesterov = true",
            "optimizer.nesterov: needs a positive momentum and zero dampening",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[schedule]\nkind = \"constant\"\nwarmup_steps = 3",
            "schedule.warmup_steps: is not a setting of `constant`",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[schedule]\nkind = \"linear_warmup\"",
            "schedule.warmup_steps: missing",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[schedule]\nkind = \"linear_warmup\"\nwarmup_steps = 0",
            "schedule.warmup_steps: must be at least 1",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[schedule]\nkind = \"linear_warmup\"\nwarmup_steps = 101",
            "schedule.warmup_steps: 101 is more than steps = 100",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[schedule]\nkind = \"linear_warmup\"\nwarmup_steps = 5\nmin_lr = 0.0",
            "schedule.min_lr: is a setting of `cosine` only",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[schedule]\nkind = \"cosine\"\nmin_lr = 0.01",
            "schedule.min_lr: 0.01 is not in [0, optimizer.lr = 0.001]",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[schedule]\nkind = \"step\"",
            "unknown variant `step`",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[checkpoint]\ninterval_steps = 0",
            "checkpoint.interval_steps: must be at least 1",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[checkpoint]\nkeep = 0",
            "checkpoint.keep: must be at least 1",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[checkpoint]\ninitial = \"weights.pt\"",
            "checkpoint.initial: `weights.pt` is not a .safetensors file",
        ),
        (
            "steps = 100",
            "steps = 100\ngradient_buckets_in_flight = 0",
            "gradient_buckets_in_flight: 0 is not between 1 and 64",
        ),
        (
            "steps = 100",
            "steps = 100\ngradient_bucket_mib = 0.0",
            "gradient_bucket_mib: 0 is not between 4 bytes and 4096 MiB",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[workers]\nmin = 0",
            "workers.min: must be at least 1",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[workers]\nmin = 3\nmax = 2",
            "workers.max: 2 is less than workers.min = 3",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[workers]\nmax = 9",
            "workers.max: 9 is more than virtual_ranks = 8",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[workers]\nmin = 9",
            "workers.min: 9 is more than virtual_ranks = 8",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[evaluation]\npaths = []\ninterval_steps = 10",
            "evaluation.paths: must list at least one",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[evaluation]\npaths = [\"e.parquet\"]\ninterval_steps = 0",
            "evaluation.interval_steps: must be at least 1",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[evaluation]\npaths = [\"e.parquet\"]\ninterval_steps = 5\ncolumns = { x = \"p\" }",
            "evaluation.columns.label: missing",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[evaluation]\npaths = [\"e.parquet\"]",
            "missing field `interval_steps`",
        ),
    ];
    for (from, to, expected) in cases {
        check(&base_with(from, to), expected);
    }
}

#[test]
fn acceptable_variations() {
    let cases: &[(&str, &str)] = &[
        ("steps = 100", "epochs = 3"),
        ("global_batch = 64", "global_batch = 8"),
        ("virtual_ranks = 8", "virtual_ranks = 1"),
        ("seed = 3", "seed = 3\ntask = \"classification\""),
        (
            "kind = \"adamw\"",
            "kind = \"sgd\"\nmomentum = 0.9\nnesterov = true",
        ),
        (
            "kind = \"adamw\"",
            "kind = \"adam\"\nbetas = [0.5, 0.999]\neps = 1e-6\nweight_decay = 0.0",
        ),
        (
            "lr = 0.001",
            "lr = 0.001\n[schedule]\nkind = \"cosine\"\nwarmup_steps = 10\nmin_lr = 0.0001",
        ),
        ("lr = 0.001", "lr = 0.001\n[workers]\nmin = 8\nmax = 8"),
        (
            "lr = 0.001",
            "lr = 0.001\n[checkpoint]\ninterval_steps = 1\nkeep = 1\ninitial = \"/ckpt/init.safetensors\"",
        ),
        ("columns = {", "partial_batch = \"pad\"\ncolumns = {"),
        ("name = \"base\"\n", ""),
    ];
    for (from, to) in cases {
        accepts(&base_with(from, to));
    }
}

#[test]
fn json_spec_has_the_same_fields_and_errors() {
    let spec = accepts(BASE);
    let json = serde_json::to_string(&spec).unwrap();
    let from_json = JobSpec::from_json(&json).unwrap();
    assert_eq!(from_json, spec);

    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["global_batch"] = 100.into();
    let error = JobSpec::from_json(&value.to_string())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("global_batch: 100 is not divisible by virtual_ranks = 8"),
        "{error}"
    );

    let error = JobSpec::from_json("{\"model\": ").unwrap_err().to_string();
    assert!(
        error.contains("JSON") && error.contains("line 1 column 10"),
        "{error}"
    );
    let error = JobSpec::from_json("{\"global_batch\": \"x\"}")
        .unwrap_err()
        .to_string();
    assert!(error.contains("invalid type"), "{error}");
}

#[test]
fn every_model_kind_accepts_its_reference_config() {
    for kind in MODEL_KINDS {
        let config: Vec<String> = kind
            .required_config
            .iter()
            .map(|key| format!("{key} = 4"))
            .collect();
        let columns: Vec<String> = kind
            .required_inputs
            .iter()
            .map(|input| format!("{input} = \"{input}\""))
            .collect();
        let text = BASE
            .replace("kind = \"mlp\"", &format!("kind = \"{}\"", kind.name))
            .replace(
                "d_in = 16, d_hidden = 24, n_classes = 5",
                &config.join(", "),
            )
            .replace("x = \"pixels\", label = \"label\"", &columns.join(", "));
        let spec = accepts(&text);
        assert_eq!(spec.task(), kind.task);
    }
}

#[test]
fn example_specs_cover_every_model_kind_and_validate() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs");
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            let spec = JobSpec::from_toml(&text)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            assert_eq!(
                path.file_stem().unwrap().to_str().unwrap(),
                spec.model.kind,
                "an example is named after its model kind"
            );
            kinds.push(spec.model.kind);
        }
    }
    kinds.sort();
    let mut expected: Vec<String> = MODEL_KINDS
        .iter()
        .map(|kind| kind.name.to_string())
        .collect();
    expected.sort();
    assert_eq!(kinds, expected);
}
