//! The object-store path without a network: `file://` URLs go through the
//! same code as `s3://` (listing, footers by range, column chunks by range),
//! so the plan and the samples must equal those of the same files opened
//! as local paths; atomic writes and reads of checkpoints.
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use datasets::generate::{Generator, GeneratorOptions};
use datasets::{
    ColumnMapping, DataCursor, Dataset, ObjectInfo, ObjectSource, Plan, PlanConfig, Reader, Task,
};
use storage::{StorageError, Store};

/// Two copies of the bundled digits (8 row groups each) under `root/data/`,
/// one of them in a sub-directory, plus a file that is not Parquet.
fn write_dataset(root: &Path) {
    let data = root.join("data");
    std::fs::create_dir_all(data.join("more")).unwrap();
    for path in [data.join("a.parquet"), data.join("more/b.parquet")] {
        Generator::Digits
            .write(&GeneratorOptions::default(), &path)
            .unwrap();
    }
    std::fs::write(data.join("README.txt"), "not data").unwrap();
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn reader(dataset: Dataset) -> Reader {
    Reader::new(
        dataset,
        Task::Classify,
        &ColumnMapping::new().with("x", "pixels"),
    )
    .unwrap()
}

#[test]
fn file_urls_plan_and_read_the_same_samples_as_local_paths() {
    let directory = tempfile::tempdir().unwrap();
    write_dataset(directory.path());
    let data = directory.path().join("data");
    let local = Dataset::open(&[&data]).unwrap();
    let remote = storage::open_dataset(&[format!("{}/", file_url(&data))]).unwrap();
    assert_eq!(local.fingerprint(), remote.fingerprint());
    assert_eq!(remote.files().len(), 2);
    assert!(
        remote.files()[1]
            .path()
            .display()
            .to_string()
            .ends_with("data/more/b.parquet"),
        "{:?}",
        remote.files()[1].path()
    );

    let config = PlanConfig::new(11, 96, 4);
    let plan = Plan::new(local.fingerprint(), config.clone()).unwrap();
    let remote_plan = Plan::new(remote.fingerprint(), config).unwrap();
    let mut local_reader = reader(local);
    let mut remote_reader = reader(remote);
    let mut cursor = DataCursor::default();
    for _ in 0..plan.steps_per_epoch() + 2 {
        let micro_batches = plan.micro_batches(cursor, 0..4).unwrap();
        assert_eq!(
            micro_batches,
            remote_plan.micro_batches(cursor, 0..4).unwrap()
        );
        for micro_batch in &micro_batches {
            let expected = local_reader.read_samples(&micro_batch.samples).unwrap();
            let found = remote_reader.read_samples(&micro_batch.samples).unwrap();
            assert_eq!(expected, found, "step {cursor:?}");
        }
        cursor = plan.next(cursor);
    }
}

#[test]
fn globs_and_single_objects_expand_like_local_paths() {
    let directory = tempfile::tempdir().unwrap();
    write_dataset(directory.path());
    let data = directory.path().join("data");
    let glob = storage::open_dataset(&[format!("{}/*.parquet", file_url(&data))]).unwrap();
    assert_eq!(glob.files().len(), 1, "a glob does not cross `/`");
    let single = storage::open_dataset(&[file_url(&data.join("more/b.parquet"))]).unwrap();
    assert_eq!(
        single.fingerprint(),
        Dataset::open(&[data.join("more/b.parquet")])
            .unwrap()
            .fingerprint()
    );
    let error = storage::open_dataset(&[file_url(&data.join("nothing.parquet"))]).unwrap_err();
    assert!(error.to_string().contains("nothing.parquet"), "{error}");
    let error = storage::open_dataset(&[file_url(&data), data.display().to_string()]).unwrap_err();
    assert!(
        error.to_string().contains("either all local or all URLs"),
        "{error}"
    );
}

/// A source that counts the bytes it serves.
#[derive(Debug)]
struct Counting {
    inner: Store,
    bytes: AtomicU64,
}

impl ObjectSource for Counting {
    fn base_url(&self) -> String {
        self.inner.base_url().to_string()
    }
    fn url(&self, key: &str) -> String {
        self.inner.url(key)
    }
    fn list(&self, prefix: &str) -> std::io::Result<Vec<ObjectInfo>> {
        ObjectSource::list(&self.inner, prefix)
    }
    fn size(&self, key: &str) -> std::io::Result<u64> {
        ObjectSource::size(&self.inner, key)
    }
    fn read_ranges(&self, key: &str, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
        let pieces = self.inner.read_ranges(key, ranges)?;
        let served: u64 = pieces.iter().map(|piece| piece.len() as u64).sum();
        self.bytes.fetch_add(served, Ordering::Relaxed);
        Ok(pieces)
    }
}

#[test]
fn only_the_footer_and_the_projected_column_chunks_of_a_row_group_are_fetched() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("digits.parquet");
    Generator::Digits
        .write(&GeneratorOptions::default(), &path)
        .unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let (store, key) = Store::from_url(&file_url(&path)).unwrap();
    let source = Arc::new(Counting {
        inner: store,
        bytes: AtomicU64::new(0),
    });
    let dataset = Dataset::open_objects(source.clone(), &[key]).unwrap();
    let footer_bytes = source.bytes.load(Ordering::Relaxed);
    assert!(footer_bytes <= size.min(datasets::object::FOOTER_PREFETCH));

    // `label` only (task input `label` of classify is an integer column;
    // reading one row group of it must fetch just that column chunk).
    let metadata = dataset.files()[0].metadata().metadata().clone();
    let group = metadata.row_group(3);
    let label_index = group
        .columns()
        .iter()
        .position(|column| column.column_path().string() == "label")
        .unwrap();
    let (_, label_bytes) = group.column(label_index).byte_range();
    let pixels_bytes: u64 = group
        .columns()
        .iter()
        .filter(|column| column.column_path().string() != "label")
        .map(|column| column.byte_range().1)
        .sum();
    let mut reader = reader(dataset);
    let before = source.bytes.load(Ordering::Relaxed);
    let batch = reader.read_row_group(3).unwrap();
    let fetched = source.bytes.load(Ordering::Relaxed) - before;
    assert_eq!(batch.samples.len() as u64, group.num_rows() as u64);
    assert_eq!(
        fetched,
        label_bytes + pixels_bytes,
        "both columns of group 3"
    );
    assert!(
        fetched < size / 4,
        "one row group of eight: {fetched} of {size}"
    );
}

#[test]
fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
    let directory = tempfile::tempdir().unwrap();
    for location in [
        directory
            .path()
            .join("local/checkpoint.safetensors")
            .display()
            .to_string(),
        file_url(&directory.path().join("url/checkpoint.safetensors")),
    ] {
        storage::write_atomic(&location, vec![1u8; 1000]).unwrap();
        storage::write_atomic(&location, vec![2u8; 20 * 1024 * 1024 + 5]).unwrap();
        let read = storage::read(&location).unwrap();
        assert_eq!(read.len(), 20 * 1024 * 1024 + 5);
        assert!(read.iter().all(|byte| *byte == 2));
    }
    for sub in ["local", "url"] {
        let names: Vec<String> = std::fs::read_dir(directory.path().join(sub))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["checkpoint.safetensors"], "{sub}");
    }
    let error = storage::read(&file_url(&directory.path().join("missing"))).unwrap_err();
    assert!(matches!(error, StorageError::NotFound { .. }), "{error}");
    let error = Store::from_url("ftp://host/x").unwrap_err();
    assert!(error.to_string().contains("unknown scheme"), "{error}");
}
