//! The coordinator validates job specs against its own copy of the model
//! kinds (it never depends on `models`); this checks the copy against the
//! model zoo: the same kinds, and every example job's `model.config` builds.
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn the_coordinator_knows_exactly_the_model_zoo_kinds() {
    let coordinator: BTreeSet<&str> = coordinator::spec::MODEL_KINDS
        .iter()
        .map(|kind| kind.name)
        .collect();
    let models: BTreeSet<&str> = models::registry::KINDS.iter().copied().collect();
    assert_eq!(coordinator, models);
}

#[test]
fn every_example_job_builds_its_model() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs");
    let mut built = 0;
    for entry in std::fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let spec = coordinator::JobSpec::from_toml(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let config = serde_json::Value::Object(spec.model.config.clone());
        if let Err(error) = models::registry::build(&spec.model.kind, &config, spec.seed) {
            panic!("{}: {error}", path.display());
        }
        built += 1;
    }
    assert_eq!(built, coordinator::spec::MODEL_KINDS.len());
}
