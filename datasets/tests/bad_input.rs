//! Bad input: every kind of broken dataset gives an error naming the file,
//! the column and what was expected, and nothing panics.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use datasets::generate::{Generator, GeneratorOptions, write_parquet};
use datasets::{ColumnMapping, Dataset, DatasetError, Plan, PlanConfig, Reader, Task};

fn digits(directory: &Path) -> PathBuf {
    let path = directory.join("digits.parquet");
    Generator::Digits
        .write(&GeneratorOptions::default(), &path)
        .unwrap();
    path
}

#[track_caller]
fn check_open_error(inputs: &[PathBuf], expected: &[&str]) -> DatasetError {
    let error = Dataset::open(inputs).unwrap_err();
    let text = error.to_string();
    for part in expected {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    error
}

#[test]
fn missing_file() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("nope.parquet");
    let error = check_open_error(&[missing], &["nope.parquet"]);
    assert!(matches!(error, DatasetError::Open { .. }));
}

#[test]
fn non_parquet_truncated_and_empty_files() {
    let directory = tempfile::tempdir().unwrap();
    let text = directory.path().join("notes.parquet");
    std::fs::write(
        &text,
        "just some text, long enough to have a footer-sized tail",
    )
    .unwrap();
    assert!(matches!(
        check_open_error(&[text], &["notes.parquet", "not a readable Parquet file"]),
        DatasetError::Parquet { .. }
    ));
    let empty = directory.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        check_open_error(&[empty], &["empty.parquet"]),
        DatasetError::Parquet { .. }
    ));
    let bytes = std::fs::read(digits(directory.path())).unwrap();
    for keep in [4, 100, bytes.len() / 2, bytes.len() - 9, bytes.len() - 1] {
        let truncated = directory.path().join(format!("truncated-{keep}.parquet"));
        std::fs::write(&truncated, &bytes[..keep]).unwrap();
        assert!(matches!(
            check_open_error(&[truncated], &[&format!("truncated-{keep}.parquet")]),
            DatasetError::Parquet { .. }
        ));
    }
}

#[test]
fn corrupt_pages_give_errors_not_panics() {
    let directory = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(digits(directory.path())).unwrap();
    let mut errors = 0;
    // Overwrite a run of bytes at several places inside the data (the
    // footer stays intact, so the file opens; reading must not panic).
    for (index, start) in [4usize, 1000, 5000, 20_000, 40_000, 60_000]
        .into_iter()
        .enumerate()
    {
        let mut corrupt = bytes.clone();
        for byte in &mut corrupt[start..start + 64] {
            *byte = 0xA5;
        }
        let path = directory.path().join(format!("corrupt-{index}.parquet"));
        std::fs::write(&path, &corrupt).unwrap();
        let Ok(dataset) = Dataset::open(&[&path]) else {
            errors += 1;
            continue;
        };
        let mut reader =
            Reader::new(dataset.clone(), Task::Classify, &ColumnMapping::new()).unwrap();
        let samples: Vec<u64> = (0..dataset.samples()).collect();
        if let Err(error) = reader.read_samples(&samples) {
            assert!(
                error
                    .to_string()
                    .contains(&format!("corrupt-{index}.parquet")),
                "{error}"
            );
            errors += 1;
        }
    }
    assert!(errors >= 4, "only {errors} corruptions detected");
}

#[test]
fn missing_and_mistyped_columns() {
    let directory = tempfile::tempdir().unwrap();
    let path = digits(directory.path());
    let dataset = Dataset::open(&[&path]).unwrap();
    let error = Reader::new(dataset.clone(), Task::Sequence, &ColumnMapping::new()).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, DatasetError::MissingColumn { .. }));
    for part in [
        "digits.parquet",
        "\"tokens\"",
        "list<int32|int64>",
        "pixels",
        "label",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    let error = Reader::new(
        dataset.clone(),
        Task::Classify,
        &ColumnMapping::new().with("label", "pixels"),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, DatasetError::WrongColumnType { .. }));
    for part in [
        "digits.parquet",
        "\"pixels\"",
        "\"label\"",
        "int32 or int64",
        "fixed_size_list<float32>[64]",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    let error = Reader::new(
        dataset,
        Task::Vectors,
        &ColumnMapping::new().with("x", "label"),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("expected fixed_size_list<float32|float64>"),
        "{error}"
    );
    assert!(
        Task::from_name("regression")
            .unwrap_err()
            .to_string()
            .contains("classify")
    );
}

#[test]
fn empty_datasets() {
    let directory = tempfile::tempdir().unwrap();
    let empty_directory = directory.path().join("nothing");
    std::fs::create_dir(&empty_directory).unwrap();
    assert!(matches!(
        check_open_error(&[empty_directory], &["nothing", "matched no Parquet file"]),
        DatasetError::NoFiles { .. }
    ));
    assert!(matches!(
        check_open_error(&[directory.path().join("*.parquet")], &["*.parquet"]),
        DatasetError::NoFiles { .. }
    ));
    let schema = Schema::new(vec![Field::new("x", DataType::Float32, false)]);
    let rows = RecordBatch::new_empty(Arc::new(schema));
    let path = directory.path().join("zero.parquet");
    write_parquet(&path, &rows, 10).unwrap();
    assert!(matches!(
        check_open_error(&[path], &["0 rows"]),
        DatasetError::NoRows { .. }
    ));
    assert!(matches!(
        check_open_error(&[PathBuf::from("[bad")], &["[bad"]),
        DatasetError::BadGlob { .. } | DatasetError::Open { .. }
    ));
}

#[test]
fn fewer_samples_than_one_global_batch() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("small.parquet");
    Generator::Digits
        .write(
            &GeneratorOptions {
                rows: Some(10),
                ..GeneratorOptions::default()
            },
            &path,
        )
        .unwrap();
    let dataset = Dataset::open(&[&path]).unwrap();
    let error = Plan::new(dataset.fingerprint(), PlanConfig::new(0, 16, 4)).unwrap_err();
    assert!(matches!(
        error,
        DatasetError::TooFewSamples {
            samples: 10,
            global_batch: 16,
            ..
        }
    ));
    assert!(error.to_string().contains(&dataset.fingerprint().hash));
}

#[test]
fn schemas_must_agree_across_files() {
    let directory = tempfile::tempdir().unwrap();
    let a = digits(directory.path());
    let schema = Schema::new(vec![
        Field::new("pixels", DataType::Float32, false),
        Field::new("label", DataType::Int64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Float32Array::from(vec![1.0])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    let b = directory.path().join("other.parquet");
    write_parquet(&b, &batch, 10).unwrap();
    let error = check_open_error(
        &[a, b],
        &["other.parquet", "digits.parquet", "pixels: float32"],
    );
    assert!(matches!(error, DatasetError::SchemaMismatch { .. }));
}

#[test]
fn nulls_are_errors_naming_the_row() {
    let directory = tempfile::tempdir().unwrap();
    let schema = Schema::new(vec![
        Field::new("x", DataType::Float32, true),
        Field::new("label", DataType::Int64, true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0])),
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
        ],
    )
    .unwrap();
    let path = directory.path().join("nulls.parquet");
    write_parquet(&path, &batch, 2).unwrap();
    let mut reader = Reader::new(
        Dataset::open(&[&path]).unwrap(),
        Task::Classify,
        &ColumnMapping::new(),
    )
    .unwrap();
    assert!(reader.read_samples(&[0, 1]).is_ok());
    let error = reader.read_samples(&[2]).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, DatasetError::BadValue { row: 2, .. }),
        "{text}"
    );
    assert!(
        text.contains("nulls.parquet") && text.contains("\"label\"") && text.contains("null"),
        "{text}"
    );
}

#[test]
fn urls_without_a_store_opener_say_what_is_missing() {
    // No crate registered an opener in this process (storage does in the binary).
    let error = Dataset::open(&["s3://bucket/data/"]).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("s3://bucket/data/") && text.contains("store opener"),
        "{text}"
    );
    assert!(datasets::object::is_url("gs://bucket/x.parquet"));
    assert!(!datasets::object::is_url("data/x.parquet"));
    assert!(!datasets::object::is_url("C:/data/x.parquet"));
}
