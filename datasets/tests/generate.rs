//! Generators: determinism, the structure of each task, and that what they
//! write reads back through the task readers.
use datasets::generate::{Generator, GeneratorOptions, IGNORE, sibling_path};
use datasets::{ColumnMapping, Dataset, Reader, Task, read_graph};

fn options(rows: u64, seed: u64) -> GeneratorOptions {
    GeneratorOptions {
        rows: Some(rows),
        seed,
        ..GeneratorOptions::default()
    }
}

fn write(
    generator: Generator,
    options: &GeneratorOptions,
    directory: &std::path::Path,
) -> std::path::PathBuf {
    let path = directory.join(format!("{}.parquet", generator.name()));
    generator.write(options, &path).unwrap();
    path
}

fn read_sequences(path: &std::path::Path) -> (Vec<usize>, Vec<i64>, Vec<i64>) {
    let dataset = Dataset::open(&[path]).unwrap();
    let mut reader = Reader::new(dataset.clone(), Task::Sequence, &ColumnMapping::new()).unwrap();
    let samples: Vec<u64> = (0..dataset.samples()).collect();
    let batch = reader.read_samples(&samples).unwrap();
    let tokens = &batch.ints["tokens"];
    let targets = &batch.ints["targets"];
    assert_eq!(tokens.shape, targets.shape);
    (
        tokens.shape.clone(),
        tokens.values.clone(),
        targets.values.clone(),
    )
}

#[test]
fn generators_are_deterministic_in_task_rows_and_seed() {
    let directory = tempfile::tempdir().unwrap();
    for generator in Generator::ALL {
        let rows = if generator == Generator::SbmGraph {
            64
        } else {
            40
        };
        let a = directory.path().join("a.parquet");
        let b = directory.path().join("b.parquet");
        let c = directory.path().join("c.parquet");
        generator.write(&options(rows, 5), &a).unwrap();
        generator.write(&options(rows, 5), &b).unwrap();
        generator.write(&options(rows, 6), &c).unwrap();
        let fingerprint =
            |path: &std::path::Path| Dataset::open(&[path]).unwrap().fingerprint().hash.clone();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{}",
            generator.name()
        );
        if generator != Generator::Digits {
            assert_ne!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&c).unwrap(),
                "{}: seed ignored",
                generator.name()
            );
        }
        assert_eq!(
            Dataset::open(&[&a]).unwrap().samples(),
            rows,
            "{}",
            generator.name()
        );
        let _ = fingerprint(&a);
    }
}

#[test]
fn selective_copy_targets_are_the_data_tokens_in_order() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(Generator::SelectiveCopy, &options(20, 1), directory.path());
    let (shape, tokens, targets) = read_sequences(&path);
    assert_eq!(shape, vec![20, 256]);
    for (row_tokens, row_targets) in tokens.chunks(256).zip(targets.chunks(256)) {
        let data: Vec<i64> = row_tokens[..240]
            .iter()
            .copied()
            .filter(|&token| token != 0)
            .collect();
        assert_eq!(data.len(), 16);
        assert!(data.iter().all(|&token| (1..15).contains(&token)));
        assert!(row_tokens[240..].iter().all(|&token| token == 15));
        assert_eq!(row_targets[240..], data[..]);
        assert!(row_targets[..240].iter().all(|&target| target == IGNORE));
    }
    // Parameters are honoured.
    let custom = GeneratorOptions {
        rows: Some(3),
        seed: 0,
        length: Some(12),
        vocab: Some(5),
        data_tokens: Some(4),
        skip: 0,
    };
    let path = directory.path().join("custom.parquet");
    Generator::SelectiveCopy.write(&custom, &path).unwrap();
    let (shape, tokens, _) = read_sequences(&path);
    assert_eq!(shape, vec![3, 12]);
    assert!(tokens.iter().all(|&token| (0..5).contains(&token)));
}

#[test]
fn induction_heads_answer_follows_the_first_trigger() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(Generator::InductionHeads, &options(30, 2), directory.path());
    let (shape, tokens, targets) = read_sequences(&path);
    let length = shape[1];
    for (row_tokens, row_targets) in tokens.chunks(length).zip(targets.chunks(length)) {
        let triggers: Vec<usize> = (0..length)
            .filter(|&index| row_tokens[index] == 15)
            .collect();
        assert_eq!(triggers.len(), 2);
        assert_eq!(triggers[1], length - 1);
        assert_eq!(row_targets[length - 1], row_tokens[triggers[0] + 1]);
        assert_eq!(
            row_targets
                .iter()
                .filter(|&&target| target != IGNORE)
                .count(),
            1
        );
    }
}

#[test]
fn adding_target_is_the_sum_of_the_marked_digits() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(Generator::Adding, &options(30, 3), directory.path());
    let (shape, tokens, targets) = read_sequences(&path);
    let length = shape[1];
    for (row_tokens, row_targets) in tokens.chunks(length).zip(targets.chunks(length)) {
        let marked: Vec<i64> = row_tokens
            .iter()
            .filter(|&&token| (10..20).contains(&token))
            .map(|token| token - 10)
            .collect();
        assert_eq!(marked.len(), 2);
        assert_eq!(row_tokens[length - 1], 20);
        assert_eq!(row_targets[length - 1], marked[0] + marked[1]);
    }
}

#[test]
fn copy_memory_recalls_the_first_tokens() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(Generator::CopyMemory, &options(10, 4), directory.path());
    let (shape, tokens, targets) = read_sequences(&path);
    let length = shape[1];
    for (row_tokens, row_targets) in tokens.chunks(length).zip(targets.chunks(length)) {
        assert_eq!(row_targets[length - 10..], row_tokens[..10]);
        assert_eq!(row_tokens[length - 11], 9);
        assert!(row_tokens[10..length - 11].iter().all(|&token| token == 0));
    }
}

#[test]
fn gaussian_ring_points_lie_near_eight_modes() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(Generator::GaussianRing, &options(2000, 5), directory.path());
    let dataset = Dataset::open(&[&path]).unwrap();
    let mut reader = Reader::new(dataset, Task::Vectors, &ColumnMapping::new()).unwrap();
    let batch = reader.read_samples(&(0..2000).collect::<Vec<_>>()).unwrap();
    let x = &batch.floats["x"];
    assert_eq!(x.shape, vec![2000, 2]);
    let mut modes = std::collections::BTreeSet::new();
    for point in x.values.chunks(2) {
        let radius = (point[0] * point[0] + point[1] * point[1]).sqrt();
        assert!((radius - 2.0).abs() < 0.15, "radius {radius}");
        let angle = point[1].atan2(point[0]).rem_euclid(std::f32::consts::TAU);
        modes.insert(((angle / (std::f32::consts::TAU / 8.0)).round() as i64) % 8);
    }
    assert_eq!(modes.len(), 8);
}

#[test]
fn sbm_graph_reads_as_a_gcn_batch() {
    let directory = tempfile::tempdir().unwrap();
    let path = write(Generator::SbmGraph, &options(400, 6), directory.path());
    let edges_path = sibling_path(&path, "edges");
    let nodes = Dataset::open(&[&path]).unwrap();
    let edges = Dataset::open(&[&edges_path]).unwrap();
    let batch = read_graph(&nodes, &edges, &ColumnMapping::new()).unwrap();
    assert_eq!(batch.floats["x"].shape, vec![400, 16]);
    let labels = &batch.ints["label"].values;
    let src = &batch.ints["src"].values;
    let dst = &batch.ints["dst"].values;
    assert_eq!(src.len(), dst.len());
    let pairs: std::collections::BTreeSet<(i64, i64)> =
        src.iter().copied().zip(dst.iter().copied()).collect();
    assert_eq!(pairs.len(), src.len(), "no repeated edges");
    let mut inside = 0;
    for &(a, b) in &pairs {
        assert_ne!(a, b, "no self-loops");
        assert!(pairs.contains(&(b, a)), "both directions");
        inside += usize::from(labels[a as usize] == labels[b as usize]);
    }
    // Mostly edges inside communities (about 4 in 5).
    assert!(inside * 10 > pairs.len() * 6, "{inside} of {}", pairs.len());
    let mean_degree = pairs.len() as f64 / 400.0;
    assert!((7.0..11.0).contains(&mean_degree), "{mean_degree}");
    let train: i64 = batch.ints["train_mask"].values.iter().sum();
    assert!((40..120).contains(&train), "{train}");
    assert!(labels.iter().all(|&label| (0..4).contains(&label)));
}

#[test]
fn digits_are_bundled() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("digits.parquet");
    Generator::Digits
        .write(&GeneratorOptions::default(), &path)
        .unwrap();
    let dataset = Dataset::open(&[&path]).unwrap();
    assert_eq!(dataset.samples(), 1797);
    let mut reader = Reader::new(dataset, Task::Classify, &ColumnMapping::new()).unwrap();
    let batch = reader.read_samples(&[0, 1796]).unwrap();
    assert_eq!(batch.floats["x"].shape, vec![2, 64]);
    assert!(
        batch.floats["x"]
            .values
            .iter()
            .all(|&pixel| (0.0..=16.0).contains(&pixel))
    );
    assert!(
        batch.ints["label"]
            .values
            .iter()
            .all(|&label| (0..10).contains(&label))
    );
    // A prefix.
    let small = directory.path().join("small.parquet");
    Generator::Digits.write(&options(300, 0), &small).unwrap();
    let prefix = Dataset::open(&[&small]).unwrap();
    assert_eq!(prefix.samples(), 300);
    let mut prefix_reader = Reader::new(prefix, Task::Classify, &ColumnMapping::new()).unwrap();
    let first = prefix_reader.read_samples(&[0, 299]).unwrap();
    let mut full_reader = Reader::new(
        Dataset::open(&[&path]).unwrap(),
        Task::Classify,
        &ColumnMapping::new(),
    )
    .unwrap();
    assert_eq!(
        first.floats,
        full_reader.read_samples(&[0, 299]).unwrap().floats
    );
    assert!(Generator::Digits.write(&options(5000, 0), &small).is_err());

    // A held-out suffix: `skip` rows dropped, the rest by default.
    let held_out = directory.path().join("held-out.parquet");
    let skip_1500 = GeneratorOptions {
        skip: 1500,
        ..GeneratorOptions::default()
    };
    Generator::Digits.write(&skip_1500, &held_out).unwrap();
    let suffix = Dataset::open(&[&held_out]).unwrap();
    assert_eq!(suffix.samples(), 297);
    let mut suffix_reader = Reader::new(suffix, Task::Classify, &ColumnMapping::new()).unwrap();
    assert_eq!(
        suffix_reader.read_samples(&[0, 296]).unwrap().floats,
        full_reader.read_samples(&[1500, 1796]).unwrap().floats
    );
    let too_far = GeneratorOptions {
        rows: Some(298),
        ..skip_1500.clone()
    };
    assert!(Generator::Digits.write(&too_far, &small).is_err());
    let not_digits = GeneratorOptions {
        skip: 1,
        ..options(10, 0)
    };
    let error = Generator::GaussianRing
        .write(&not_digits, &small)
        .unwrap_err();
    assert!(error.to_string().contains("digits only"), "{error}");
}

#[test]
fn bad_generator_parameters_are_errors() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("x.parquet");
    let bad = |generator: Generator, options: GeneratorOptions| {
        let error = generator.write(&options, &path).unwrap_err().to_string();
        assert!(error.contains(generator.name()), "{error}");
    };
    bad(
        Generator::SelectiveCopy,
        GeneratorOptions {
            length: Some(10),
            data_tokens: Some(6),
            ..options(3, 0)
        },
    );
    bad(
        Generator::Adding,
        GeneratorOptions {
            vocab: Some(20),
            ..options(3, 0)
        },
    );
    bad(
        Generator::CopyMemory,
        GeneratorOptions {
            length: Some(5),
            ..options(3, 0)
        },
    );
    bad(Generator::GaussianRing, options(0, 0));
    bad(Generator::SbmGraph, options(3, 0));
    assert!(
        Generator::from_name("nope")
            .unwrap_err()
            .to_string()
            .contains("selective-copy")
    );
}
