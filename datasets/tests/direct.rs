//! Direct decoding of non-null `fixed_size_list<float>` columns against
//! Arrow's list reader: the same batches (bit for bit) over widths, row
//! counts and row-group sizes around 1, 2, 63, 64, 65, several pages per
//! row group, both data page versions, PLAIN and BYTE_STREAM_SPLIT, float32
//! and float64; which files take the direct path and which fall back; the
//! same errors either way.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, Int64Builder, ListBuilder};
use arrow_array::types::Float32Type;
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int64Array, RecordBatch,
};
use arrow_schema::{DataType, Field, Schema};
use datasets::{Batch, ColumnMapping, Dataset, Reader, Task};
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{WriterProperties, WriterVersion};

/// How a test file is written.
#[derive(Clone, Copy, Debug)]
struct Case {
    width: usize,
    rows: usize,
    rows_per_group: usize,
    double: bool,
    /// The list field is declared nullable (no value is null).
    nullable: bool,
    v2: bool,
    encoding: Encoding,
    dictionary: bool,
    compression: Compression,
    /// Rows per data page (several pages per row group when small).
    page_rows: usize,
}

impl Case {
    fn new(width: usize, rows: usize, rows_per_group: usize) -> Self {
        Self {
            width,
            rows,
            rows_per_group,
            double: false,
            nullable: false,
            v2: false,
            encoding: Encoding::PLAIN,
            dictionary: false,
            compression: Compression::SNAPPY,
            page_rows: 20_000,
        }
    }

    /// Whether the reader should decode `x` directly.
    fn direct(&self) -> bool {
        !self.nullable && !self.dictionary
    }
}

/// Values with the awkward ones among them: -0.0, NaN, infinities, subnormals.
fn value(index: usize) -> f64 {
    match index % 97 {
        3 => -0.0,
        5 => f64::NAN,
        7 => f64::INFINITY,
        11 => f64::NEG_INFINITY,
        13 => f64::from(f32::MIN_POSITIVE) / 4.0,
        _ => (index as f64 * 0.618).sin() * 1e3,
    }
}

fn table(case: &Case) -> RecordBatch {
    let count = case.rows * case.width;
    let (item, values): (DataType, ArrayRef) = if case.double {
        (
            DataType::Float64,
            Arc::new(Float64Array::from_iter_values((0..count).map(value))),
        )
    } else {
        (
            DataType::Float32,
            Arc::new(Float32Array::from_iter_values(
                (0..count).map(|index| value(index) as f32),
            )),
        )
    };
    let x = FixedSizeListArray::new(
        Arc::new(Field::new_list_field(item, false)),
        case.width as i32,
        values,
        None,
    );
    with_label(x, case)
}

fn with_label(x: FixedSizeListArray, case: &Case) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("x", x.data_type().clone(), case.nullable),
        Field::new("label", DataType::Int64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(x),
            Arc::new(Int64Array::from_iter_values(
                (0..case.rows as i64).map(|row| row * 3 % 10),
            )),
        ],
    )
    .unwrap()
}

fn write(path: &Path, case: &Case, batch: &RecordBatch) {
    let x = ArrowSchemaConverter::new()
        .convert(&batch.schema())
        .unwrap()
        .column(0)
        .path()
        .clone();
    let mut properties = WriterProperties::builder()
        .set_compression(case.compression)
        .set_max_row_group_row_count(Some(case.rows_per_group))
        .set_data_page_row_count_limit(case.page_rows)
        .set_write_batch_size(case.page_rows.min(1024))
        .set_column_dictionary_enabled(x.clone(), case.dictionary)
        .set_writer_version(if case.v2 {
            WriterVersion::PARQUET_2_0
        } else {
            WriterVersion::PARQUET_1_0
        });
    if case.encoding != Encoding::PLAIN {
        properties = properties.set_column_encoding(x, case.encoding);
    }
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties.build())).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn reader(path: &Path, direct: bool) -> Reader {
    Reader::new(
        Dataset::open(&[path]).unwrap(),
        Task::Classify,
        &ColumnMapping::new(),
    )
    .unwrap()
    .with_direct_decoding(direct)
}

/// Float arrays as (name, shape, bits of the values).
type FloatBits = Vec<(String, Vec<usize>, Vec<u32>)>;

/// The batch with floats as bits (NaN compares equal to itself).
fn bits(batch: &Batch) -> (Vec<u64>, FloatBits, Batch) {
    let floats = batch
        .floats
        .iter()
        .map(|(name, array)| {
            (
                name.clone(),
                array.shape.clone(),
                array.values.iter().map(|value| value.to_bits()).collect(),
            )
        })
        .collect();
    let ints = Batch {
        ints: batch.ints.clone(),
        ..Batch::default()
    };
    (batch.samples.clone(), floats, ints)
}

/// Writes `case`, reads it whole and in a scattered order with and without
/// direct decoding, and checks both give the same batches and that the
/// direct path was taken exactly when expected.
#[track_caller]
fn check(directory: &Path, case: Case) {
    let path: PathBuf =
        directory.join(format!("{case:?}.parquet").replace([' ', ':', ',', '{', '}'], ""));
    write(&path, &case, &table(&case));
    let mut direct = reader(&path, true);
    let mut arrow = reader(&path, false);
    let whole = direct.read_all().unwrap();
    assert_eq!(bits(&whole), bits(&arrow.read_all().unwrap()), "{case:?}");
    assert_eq!(
        whole.floats["x"].shape,
        vec![case.rows, case.width],
        "{case:?}"
    );
    let expected: Vec<u32> = (0..case.rows * case.width)
        .map(|index| (value(index) as f32).to_bits())
        .collect();
    let got: Vec<u32> = whole.floats["x"]
        .values
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(got, expected, "{case:?}");
    let scattered: Vec<u64> = (0..case.rows as u64)
        .map(|index| index * 37 % case.rows as u64)
        .collect();
    let mut direct = reader(&path, true).with_cache_row_groups(2);
    let mut arrow = reader(&path, false).with_cache_row_groups(2);
    assert_eq!(
        bits(&direct.read_samples(&scattered).unwrap()),
        bits(&arrow.read_samples(&scattered).unwrap()),
        "{case:?}"
    );
    let groups = case.rows.div_ceil(case.rows_per_group) as u64;
    assert_eq!(
        direct.direct_column_chunks(),
        if case.direct() {
            direct.row_groups_decoded()
        } else {
            0
        },
        "{case:?}"
    );
    assert!(direct.row_groups_decoded() >= groups.min(2), "{case:?}");
    assert_eq!(arrow.direct_column_chunks(), 0);
}

#[test]
fn direct_and_arrow_decoding_agree_over_sizes() {
    let directory = tempfile::tempdir().unwrap();
    for width in [1, 2, 3, 16] {
        for rows in [1, 2, 63, 64, 65, 300] {
            for rows_per_group in [1, 2, 63, 64, 65, 1000] {
                if rows_per_group > rows && rows_per_group != 1000 {
                    continue;
                }
                check(directory.path(), Case::new(width, rows, rows_per_group));
            }
        }
    }
}

#[test]
fn direct_and_arrow_decoding_agree_over_encodings_and_pages() {
    let directory = tempfile::tempdir().unwrap();
    for width in [1, 2, 9, 64] {
        for (rows, rows_per_group, page_rows) in
            [(1, 1, 1), (65, 64, 1), (65, 65, 2), (300, 200, 63)]
        {
            let base = Case {
                page_rows,
                ..Case::new(width, rows, rows_per_group)
            };
            for case in [
                base,
                Case {
                    double: true,
                    ..base
                },
                Case { v2: true, ..base },
                Case {
                    v2: true,
                    double: true,
                    compression: Compression::UNCOMPRESSED,
                    ..base
                },
                Case {
                    encoding: Encoding::BYTE_STREAM_SPLIT,
                    ..base
                },
                Case {
                    encoding: Encoding::BYTE_STREAM_SPLIT,
                    double: true,
                    v2: true,
                    ..base
                },
                Case {
                    compression: Compression::UNCOMPRESSED,
                    ..base
                },
                // These fall back to Arrow.
                Case {
                    nullable: true,
                    ..base
                },
                Case {
                    dictionary: true,
                    ..base
                },
            ] {
                check(directory.path(), case);
            }
        }
    }
}

#[test]
fn a_null_vector_is_the_same_error_either_way() {
    let directory = tempfile::tempdir().unwrap();
    let case = Case {
        nullable: true,
        ..Case::new(2, 65, 64)
    };
    let x = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
        (0..65).map(|row| (row != 64).then(|| vec![Some(row as f32), Some(1.0)])),
        2,
    );
    let path = directory.path().join("null-vector.parquet");
    write(&path, &case, &with_label(x, &case));
    let samples: Vec<u64> = (0..65).collect();
    let direct = reader(&path, true).read_samples(&samples).unwrap_err();
    let arrow = reader(&path, false).read_samples(&samples).unwrap_err();
    assert_eq!(direct.to_string(), arrow.to_string());
    let text = direct.to_string();
    assert!(
        text.contains("null-vector.parquet") && text.contains("\"x\"") && text.contains("null"),
        "{text}"
    );
}

/// A sequence table: `tokens` and `targets` lists of int64 (or int32) of
/// the given lengths, values cycling through `vocab`.
fn sequence_table(lengths: &[usize], vocab: i64, int32: bool) -> RecordBatch {
    let column = |offset: i64| -> ArrayRef {
        let mut next = offset;
        let mut value = || {
            next += 7;
            next % vocab - vocab / 3
        };
        if int32 {
            let mut builder = ListBuilder::new(Int32Builder::new())
                .with_field(Arc::new(Field::new_list_field(DataType::Int32, false)));
            for &length in lengths {
                for _ in 0..length {
                    builder.values().append_value(value() as i32);
                }
                builder.append(true);
            }
            Arc::new(builder.finish())
        } else {
            let mut builder = ListBuilder::new(Int64Builder::new())
                .with_field(Arc::new(Field::new_list_field(DataType::Int64, false)));
            for &length in lengths {
                for _ in 0..length {
                    builder.values().append_value(value());
                }
                builder.append(true);
            }
            Arc::new(builder.finish())
        }
    };
    let tokens = column(0);
    let targets = column(3);
    let schema = Schema::new(vec![
        Field::new("tokens", tokens.data_type().clone(), false),
        Field::new("targets", targets.data_type().clone(), false),
    ]);
    RecordBatch::try_new(Arc::new(schema), vec![tokens, targets]).unwrap()
}

/// Like [`check`] for the sequence task: `expect_direct` says whether both
/// columns should be decoded directly.
#[track_caller]
fn check_sequences(
    directory: &Path,
    name: &str,
    batch: &RecordBatch,
    case: Case,
    expect_direct: bool,
) {
    let path = directory.join(format!("{name}.parquet"));
    let mut properties = WriterProperties::builder()
        .set_compression(case.compression)
        .set_max_row_group_row_count(Some(case.rows_per_group))
        .set_data_page_row_count_limit(case.page_rows)
        .set_write_batch_size(case.page_rows.min(1024))
        .set_dictionary_enabled(case.dictionary)
        .set_writer_version(if case.v2 {
            WriterVersion::PARQUET_2_0
        } else {
            WriterVersion::PARQUET_1_0
        });
    if !case.dictionary {
        properties = properties.set_encoding(Encoding::PLAIN);
    }
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties.build())).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    let open = |direct: bool| {
        Reader::new(
            Dataset::open(&[&path]).unwrap(),
            Task::Sequence,
            &ColumnMapping::new(),
        )
        .unwrap()
        .with_direct_decoding(direct)
    };
    let (mut direct, mut arrow) = (open(true), open(false));
    let rows = batch.num_rows() as u64;
    let whole = direct.read_all().unwrap();
    assert_eq!(whole, arrow.read_all().unwrap(), "{name}");
    let scattered: Vec<u64> = (0..rows).map(|index| index * 37 % rows).collect();
    assert_eq!(
        direct.read_samples(&scattered).unwrap(),
        arrow.read_samples(&scattered).unwrap(),
        "{name}"
    );
    let groups = rows.div_ceil(case.rows_per_group as u64);
    assert_eq!(
        direct.direct_column_chunks(),
        if expect_direct {
            2 * (groups + direct.row_groups_decoded())
        } else {
            0
        },
        "{name}"
    );
    assert_eq!(arrow.direct_column_chunks(), 0);
}

#[test]
fn sequences_decode_the_same_directly_and_through_arrow() {
    let directory = tempfile::tempdir().unwrap();
    let lengths: Vec<usize> = (0..300)
        .map(|row| [1, 2, 63, 64, 65, 7, 256][row % 7])
        .collect();
    for rows in [1usize, 2, 63, 64, 65, 300] {
        for rows_per_group in [1usize, 2, 64, 65, 1000] {
            for (vocab, int32, dictionary, v2, page_rows) in [
                (16, false, true, false, 20_000),
                (16, false, true, true, 3),
                (100_000, false, true, false, 20_000),
                (1 << 40, false, true, false, 20_000),
                (16, false, false, false, 5),
                (16, true, true, false, 20_000),
                (1000, true, false, true, 20_000),
            ] {
                let case = Case {
                    dictionary,
                    v2,
                    page_rows,
                    ..Case::new(1, rows, rows_per_group)
                };
                let name = format!(
                    "seq-{rows}-{rows_per_group}-{vocab}-{int32}-{dictionary}-{v2}-{page_rows}"
                );
                let batch = sequence_table(&lengths[..rows], vocab, int32);
                check_sequences(directory.path(), &name, &batch, case, true);
            }
        }
    }
    // Row groups with an empty sequence go through Arrow (a row group
    // without one would still be decoded directly).
    let batch = sequence_table(&[0, 3, 0], 16, false);
    check_sequences(
        directory.path(),
        "seq-empty",
        &batch,
        Case::new(1, 3, 2),
        false,
    );
}
