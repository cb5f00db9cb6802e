//! Reading: column types, projection, padding, multi-file datasets, column
//! mapping, the row-group cache and the prefetching step iterator.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    Float32Builder, Int32Builder, Int64Builder, LargeListBuilder, ListBuilder,
};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch,
};
use arrow_schema::{DataType, Field, Schema};
use datasets::generate::write_parquet;
use datasets::{
    ColumnMapping, DataCursor, Dataset, PartialBatch, Plan, PlanConfig, Prefetch, Reader,
    StepBatches, Task,
};

/// A classification table of `rows` rows starting at `first`: `x` =
/// [first + i, -(first + i)] as f64 fixed-size lists, `label` int32 = i mod 7,
/// plus an unused string-free column `extra`.
fn classify_table(first: i64, rows: usize) -> RecordBatch {
    let values: Vec<f64> = (0..rows)
        .flat_map(|i| {
            let v = (first + i as i64) as f64;
            [v, -v]
        })
        .collect();
    let x = FixedSizeListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, false)),
        2,
        Arc::new(Float64Array::from(values)),
        None,
    );
    let schema = Schema::new(vec![
        Field::new("x", x.data_type().clone(), false),
        Field::new("label", DataType::Int32, false),
        Field::new("extra", DataType::Float32, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(x),
            Arc::new(Int32Array::from_iter_values(
                (0..rows as i32).map(|i| (first as i32 + i) % 7),
            )),
            Arc::new(Float32Array::from(vec![0.5; rows])),
        ],
    )
    .unwrap()
}

fn write(directory: &Path, name: &str, batch: &RecordBatch, rows_per_group: usize) -> PathBuf {
    let path = directory.join(name);
    write_parquet(&path, batch, rows_per_group).unwrap();
    path
}

#[track_caller]
fn check_classify(reader: &mut Reader, samples: &[u64]) {
    let batch = reader.read_samples(samples).unwrap();
    let expected_x: Vec<f32> = samples
        .iter()
        .flat_map(|&s| [s as f32, -(s as f32)])
        .collect();
    let expected_label: Vec<i64> = samples.iter().map(|&s| (s % 7) as i64).collect();
    assert_eq!(batch.samples, samples);
    assert_eq!(batch.floats["x"].shape, vec![samples.len(), 2]);
    assert_eq!(batch.floats["x"].values, expected_x);
    assert_eq!(batch.ints["label"].shape, vec![samples.len()]);
    assert_eq!(batch.ints["label"].values, expected_label);
    assert_eq!(
        batch.floats.len() + batch.ints.len(),
        2,
        "only the task's columns"
    );
}

#[test]
fn multi_file_dataset_reads_samples_in_any_order() {
    let directory = tempfile::tempdir().unwrap();
    let parts = directory.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    // 3 files: 100 rows (groups of 32), 1 row, 64 rows (groups of 63).
    write(&parts, "a.parquet", &classify_table(0, 100), 32);
    write(&parts, "b.parquet", &classify_table(100, 1), 32);
    write(&parts, "c.parquet", &classify_table(101, 64), 63);
    std::fs::write(parts.join("README.txt"), "not data").unwrap();
    let by_directory = Dataset::open(&[&parts]).unwrap();
    let by_glob = Dataset::open(&[parts.join("*.parquet")]).unwrap();
    let by_files = Dataset::open(&[
        parts.join("a.parquet"),
        parts.join("b.parquet"),
        parts.join("c.parquet"),
        parts.join("a.parquet"),
    ])
    .unwrap();
    assert_eq!(by_directory.samples(), 165);
    assert_eq!(by_directory.fingerprint(), by_glob.fingerprint());
    assert_eq!(by_directory.fingerprint(), by_files.fingerprint());
    assert_eq!(
        by_directory
            .fingerprint()
            .files
            .iter()
            .map(|f| f.row_groups.clone())
            .collect::<Vec<_>>(),
        vec![vec![32, 32, 32, 4], vec![1], vec![63, 1]]
    );
    let mut reader = Reader::new(by_directory, Task::Classify, &ColumnMapping::new()).unwrap();
    for samples in [
        vec![0],
        vec![164, 0, 100, 31, 32, 99, 101, 163],
        (0..165).rev().collect(),
        vec![5, 5, 5],
    ] {
        check_classify(&mut reader, &samples);
    }
    assert!(reader.read_samples(&[165]).is_err());
}

#[test]
fn fingerprint_changes_with_content_not_with_location() {
    let directory = tempfile::tempdir().unwrap();
    let one = directory.path().join("one");
    let two = directory.path().join("two");
    std::fs::create_dir(&one).unwrap();
    std::fs::create_dir(&two).unwrap();
    let a = write(&one, "data.parquet", &classify_table(0, 50), 16);
    let b = write(&two, "data.parquet", &classify_table(0, 50), 16);
    let c = write(&two, "other.parquet", &classify_table(0, 50), 25);
    let hash = |path: &Path| Dataset::open(&[path]).unwrap().fingerprint().hash.clone();
    assert_eq!(hash(&a), hash(&b));
    assert_ne!(hash(&a), hash(&c));
    assert_eq!(hash(&a).len(), 64);
    assert!(Dataset::open(&[&a]).unwrap().fingerprint().is_consistent());
}

#[test]
fn cache_decodes_each_row_group_once_when_reading_in_order() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(directory.path(), "a.parquet", &classify_table(0, 256), 64);
    let dataset = Dataset::open(&[&path]).unwrap();
    let mut reader = Reader::new(dataset.clone(), Task::Classify, &ColumnMapping::new())
        .unwrap()
        .with_cache_row_groups(2);
    for start in (0..256).step_by(16) {
        check_classify(&mut reader, &(start..start + 16).collect::<Vec<_>>());
    }
    assert_eq!(reader.row_groups_decoded(), 4);
    let mut tiny = Reader::new(dataset, Task::Classify, &ColumnMapping::new())
        .unwrap()
        .with_cache_row_groups(1);
    check_classify(&mut tiny, &[0, 200, 1, 201]);
    assert_eq!(tiny.row_groups_decoded(), 2);
    check_classify(&mut tiny, &[0]);
    assert_eq!(tiny.row_groups_decoded(), 3);
}

#[test]
fn column_mapping_and_scalar_float_columns() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(directory.path(), "a.parquet", &classify_table(0, 10), 4);
    let dataset = Dataset::open(&[&path]).unwrap();
    let mapping = ColumnMapping::new().with("x", "extra");
    let mut reader = Reader::new(dataset, Task::Vectors, &mapping).unwrap();
    let batch = reader.read_samples(&[3, 4]).unwrap();
    assert_eq!(batch.floats["x"].shape, vec![2, 1]);
    assert_eq!(batch.floats["x"].values, vec![0.5, 0.5]);
}

fn sequence_table(lengths: &[usize], large: bool) -> RecordBatch {
    let token = |row: usize, position: usize| (row * 10 + position) as i64;
    let tokens: ArrayRef = if large {
        let mut builder = LargeListBuilder::new(Int64Builder::new())
            .with_field(Arc::new(Field::new_list_field(DataType::Int64, false)));
        for (row, &length) in lengths.iter().enumerate() {
            for position in 0..length {
                builder.values().append_value(token(row, position));
            }
            builder.append(true);
        }
        Arc::new(builder.finish())
    } else {
        let mut builder = ListBuilder::new(Int32Builder::new())
            .with_field(Arc::new(Field::new_list_field(DataType::Int32, false)));
        for (row, &length) in lengths.iter().enumerate() {
            for position in 0..length {
                builder.values().append_value(token(row, position) as i32);
            }
            builder.append(true);
        }
        Arc::new(builder.finish())
    };
    let mut targets = ListBuilder::new(Int64Builder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Int64, false)));
    for (row, &length) in lengths.iter().enumerate() {
        for position in 0..length {
            targets.values().append_value(token(row, position) + 1);
        }
        targets.append(true);
    }
    let targets: ArrayRef = Arc::new(targets.finish());
    let schema = Schema::new(vec![
        Field::new("tokens", tokens.data_type().clone(), false),
        Field::new("targets", targets.data_type().clone(), false),
    ]);
    RecordBatch::try_new(Arc::new(schema), vec![tokens, targets]).unwrap()
}

#[test]
fn ragged_sequences_are_padded_per_batch() {
    let directory = tempfile::tempdir().unwrap();
    for large in [false, true] {
        let path = write(
            directory.path(),
            &format!("seq-{large}.parquet"),
            &sequence_table(&[3, 1, 0, 5, 2], large),
            2,
        );
        let mut reader = Reader::new(
            Dataset::open(&[&path]).unwrap(),
            Task::Sequence,
            &ColumnMapping::new(),
        )
        .unwrap();
        let batch = reader.read_samples(&[1, 0, 2]).unwrap();
        assert_eq!(batch.ints["tokens"].shape, vec![3, 3]);
        assert_eq!(
            batch.ints["tokens"].values,
            vec![10, 0, 0, 0, 1, 2, 0, 0, 0]
        );
        assert_eq!(
            batch.ints["targets"].values,
            vec![11, -100, -100, 1, 2, 3, -100, -100, -100]
        );
        let batch = reader.read_samples(&[3]).unwrap();
        assert_eq!(batch.ints["tokens"].shape, vec![1, 5]);
        assert_eq!(batch.ints["tokens"].values, vec![30, 31, 32, 33, 34]);
        let batch = reader.read_samples(&[2]).unwrap();
        assert_eq!(batch.ints["tokens"].shape, vec![1, 0]);
    }
}

#[test]
fn variable_float_lists_must_share_a_length() {
    let directory = tempfile::tempdir().unwrap();
    let mut builder = ListBuilder::new(Float32Builder::new());
    for length in [2usize, 2, 3] {
        for value in 0..length {
            builder.values().append_value(value as f32);
        }
        builder.append(true);
    }
    let x: ArrayRef = Arc::new(builder.finish());
    let schema = Schema::new(vec![Field::new("x", x.data_type().clone(), true)]);
    let path = write(
        directory.path(),
        "ragged.parquet",
        &RecordBatch::try_new(Arc::new(schema), vec![x]).unwrap(),
        10,
    );
    let mut reader = Reader::new(
        Dataset::open(&[&path]).unwrap(),
        Task::Vectors,
        &ColumnMapping::new(),
    )
    .unwrap();
    assert_eq!(
        reader.read_samples(&[1, 0]).unwrap().floats["x"].values,
        vec![0.0, 1.0, 0.0, 1.0]
    );
    let error = reader.read_samples(&[0, 2]).unwrap_err().to_string();
    assert!(
        error.contains("ragged.parquet")
            && error.contains("\"x\"")
            && error.contains("row 2")
            && error.contains("length 3, expected 2"),
        "{error}"
    );
}

#[test]
fn step_batches_through_prefetch_match_the_plan() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(directory.path(), "a.parquet", &classify_table(0, 300), 64);
    let dataset = Dataset::open(&[&path]).unwrap();
    let config = PlanConfig {
        seed: 9,
        global_batch: 40,
        virtual_ranks: 4,
        shuffle_window: 100,
        partial_batch: PartialBatch::Pad,
    };
    let plan = Plan::new(dataset.fingerprint(), config).unwrap();
    let reader = Reader::new(dataset.clone(), Task::Classify, &ColumnMapping::new()).unwrap();
    let start = DataCursor { epoch: 0, step: 5 };
    let steps = StepBatches::new(plan.clone(), reader, 1..3, start, 6).unwrap();
    let prefetched: Vec<_> = Prefetch::new(steps, 2)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(prefetched.len(), 6);
    let mut cursor = start;
    for step in &prefetched {
        assert_eq!(step.cursor, cursor);
        let expected = plan.micro_batches(cursor, 1..3).unwrap();
        assert_eq!(step.micro_batches.len(), 2);
        for ((micro, batch), expected) in step.micro_batches.iter().zip(&expected) {
            assert_eq!(micro, expected);
            assert_eq!(batch.samples, expected.samples);
            let labels: Vec<i64> = expected.samples.iter().map(|&s| (s % 7) as i64).collect();
            assert_eq!(batch.ints["label"].values, labels);
        }
        cursor = plan.next(cursor);
    }
    // The plan and the reader must describe the same data.
    let other = write(directory.path(), "b.parquet", &classify_table(0, 299), 64);
    let other_reader = Reader::new(
        Dataset::open(&[&other]).unwrap(),
        Task::Classify,
        &ColumnMapping::new(),
    )
    .unwrap();
    assert!(StepBatches::new(plan, other_reader, 0..4, DataCursor::default(), 1).is_err());
    // Dropping a prefetcher early stops its thread.
    let reader = Reader::new(dataset.clone(), Task::Classify, &ColumnMapping::new()).unwrap();
    let plan = Plan::new(dataset.fingerprint(), PlanConfig::new(1, 10, 1)).unwrap();
    let mut endless = Prefetch::new(
        StepBatches::new(plan, reader, 0..1, DataCursor::default(), u64::MAX).unwrap(),
        1,
    )
    .unwrap();
    assert!(endless.next().unwrap().is_ok());
    drop(endless);
}

#[test]
fn int64_labels_and_f32_vectors() {
    let directory = tempfile::tempdir().unwrap();
    let x = FixedSizeListArray::new(
        Arc::new(Field::new_list_field(DataType::Float32, false)),
        3,
        Arc::new(Float32Array::from(
            (0..30).map(|v| v as f32).collect::<Vec<_>>(),
        )),
        None,
    );
    let schema = Schema::new(vec![
        Field::new("features", x.data_type().clone(), false),
        Field::new("y", DataType::Int64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(x), Arc::new(Int64Array::from_iter_values(0..10))],
    )
    .unwrap();
    let path = write(directory.path(), "a.parquet", &batch, 3);
    let mut reader = Reader::new(
        Dataset::open(&[&path]).unwrap(),
        Task::Classify,
        &ColumnMapping::new(),
    )
    .unwrap();
    let batch = reader.read_samples(&[9, 2]).unwrap();
    assert_eq!(
        batch.floats["x"].values,
        vec![27.0, 28.0, 29.0, 6.0, 7.0, 8.0]
    );
    assert_eq!(batch.ints["label"].values, vec![9, 2]);
}

/// Graphs of 2, 3 and 1 nodes: node `k` of graph `g` has features
/// `[g, k]`, label `10 g + k`; edges as given per graph.
fn graphs_table(edges: &[Vec<(i64, i64)>]) -> RecordBatch {
    use arrow_array::builder::FixedSizeListBuilder;
    let nodes = [2usize, 3, 1];
    let mut x = ListBuilder::new(
        FixedSizeListBuilder::new(Float32Builder::new(), 2)
            .with_field(Arc::new(Field::new_list_field(DataType::Float32, false))),
    )
    .with_field(Arc::new(Field::new_list_field(
        DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, false)), 2),
        false,
    )));
    let int_list = || {
        ListBuilder::new(Int64Builder::new())
            .with_field(Arc::new(Field::new_list_field(DataType::Int64, false)))
    };
    let (mut label, mut mask, mut src, mut dst) = (int_list(), int_list(), int_list(), int_list());
    for (graph, &count) in nodes.iter().enumerate() {
        for node in 0..count {
            x.values()
                .values()
                .append_slice(&[graph as f32, node as f32]);
            x.values().append(true);
            label.values().append_value(10 * graph as i64 + node as i64);
            mask.values().append_value(i64::from(node == 0));
        }
        x.append(true);
        label.append(true);
        mask.append(true);
        for &(a, b) in &edges[graph] {
            src.values().append_value(a);
            dst.values().append_value(b);
        }
        src.append(true);
        dst.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(x.finish()),
        Arc::new(label.finish()),
        Arc::new(mask.finish()),
        Arc::new(src.finish()),
        Arc::new(dst.finish()),
    ];
    let fields: Vec<Field> = ["x", "label", "train_mask", "src", "dst"]
        .iter()
        .zip(&columns)
        .map(|(name, column)| Field::new(*name, column.data_type().clone(), false))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

#[test]
fn graphs_per_row_batch_as_a_disjoint_union() {
    let directory = tempfile::tempdir().unwrap();
    let edges = vec![vec![(0, 1), (1, 0)], vec![(0, 2), (2, 0), (1, 2)], vec![]];
    let path = write(directory.path(), "graphs.parquet", &graphs_table(&edges), 2);
    let mut reader = Reader::new(
        Dataset::open(&[&path]).unwrap(),
        Task::Graphs,
        &ColumnMapping::new(),
    )
    .unwrap();
    let batch = reader.read_samples(&[1, 2, 0]).unwrap();
    assert_eq!(batch.floats["x"].shape, vec![6, 2]);
    assert_eq!(
        batch.floats["x"].values,
        vec![1.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    );
    assert_eq!(batch.ints["label"].values, vec![10, 11, 12, 20, 0, 1]);
    assert_eq!(batch.ints["train_mask"].values, vec![1, 0, 0, 1, 1, 0]);
    assert_eq!(batch.ints["node_graph"].values, vec![0, 0, 0, 1, 2, 2]);
    // Graph 1's nodes are 0..3, graph 2's node is 3, graph 0's are 4..6.
    assert_eq!(batch.ints["src"].values, vec![0, 2, 1, 4, 5]);
    assert_eq!(batch.ints["dst"].values, vec![2, 0, 2, 5, 4]);

    let bad = vec![vec![(0, 1)], vec![(0, 3)], vec![]];
    let path = write(
        directory.path(),
        "bad-graphs.parquet",
        &graphs_table(&bad),
        2,
    );
    let mut reader = Reader::new(
        Dataset::open(&[&path]).unwrap(),
        Task::Graphs,
        &ColumnMapping::new(),
    )
    .unwrap();
    assert!(reader.read_samples(&[0]).is_ok());
    let error = reader.read_samples(&[0, 1]).unwrap_err().to_string();
    assert!(
        error.contains("bad-graphs.parquet")
            && error.contains("row 1")
            && error.contains("node id 3 outside 0..3"),
        "{error}"
    );
}

#[test]
fn a_reused_batch_gives_the_same_data_as_a_fresh_one() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(
        directory.path(),
        "seq.parquet",
        &sequence_table(&[3, 1, 0, 5, 2], false),
        2,
    );
    let mut reader = Reader::new(
        Dataset::open(&[&path]).unwrap(),
        Task::Sequence,
        &ColumnMapping::new(),
    )
    .unwrap();
    let mut reused = datasets::Batch::default();
    for samples in [vec![3, 0], vec![2], vec![4, 1, 0, 3], vec![1]] {
        reader.read_samples_into(&samples, &mut reused).unwrap();
        assert_eq!(reused, reader.read_samples(&samples).unwrap());
    }
    for group in [2, 0, 1] {
        reader.read_row_group_into(group, &mut reused).unwrap();
        assert_eq!(reused, reader.read_row_group(group).unwrap());
    }
}
