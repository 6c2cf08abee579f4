//! Loaders against the real datasets under `$MOAT_DATA_DIR` (e.g. `/work/shared/data`, holding
//! `mnist/`, `cifar10/`, `adult/`). When the variable is unset each test prints a notice and
//! passes; CI runs them with it set (`cargo test --release -p moat-nn -- shared_data_`).

use std::path::PathBuf;
use std::time::Instant;

use moat_nn::data::{self, CifarOptions, Dataset, Normalization};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn data_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("MOAT_DATA_DIR").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("{test}: MOAT_DATA_DIR is not set; skipping (set it to the shared data directory)");
    }
    dir
}

/// Per-channel mean and std of the values before `norm` was applied.
fn raw_channel_stats(ds: &Dataset, norm: &Normalization) -> (Vec<f64>, Vec<f64>) {
    let channels = ds.sample_shape[0];
    let plane = ds.sample_len() / channels;
    let mut sum = vec![0.0f64; channels];
    let mut sq = vec![0.0f64; channels];
    for sample in ds.features.chunks_exact(ds.sample_len()) {
        for (c, block) in sample.chunks_exact(plane).enumerate() {
            let (s, q) = block.iter().fold((0.0f64, 0.0f64), |(s, q), &x| (s + x as f64, q + (x as f64).powi(2)));
            sum[c] += s;
            sq[c] += q;
        }
    }
    let n = (ds.len() * plane) as f64;
    let mut means = Vec::new();
    let mut stds = Vec::new();
    for c in 0..channels {
        let m = sum[c] / n;
        let v = sq[c] / n - m * m;
        means.push(m * norm.std[c] as f64 + norm.mean[c] as f64);
        stds.push(v.sqrt() * norm.std[c] as f64);
    }
    (means, stds)
}

#[test]
fn shared_data_mnist() -> TestResult {
    let Some(root) = data_dir("shared_data_mnist") else { return Ok(()) };
    let start = Instant::now();
    let (tt, spec) = data::load_with_spec("mnist", Some(&root), 0)?;
    eprintln!("MNIST loaded in {:.2?}", start.elapsed());
    assert_eq!((tt.train.len(), tt.test.len()), (60_000, 10_000));
    assert_eq!(tt.train.sample_shape, vec![1, 28, 28]);
    assert_eq!(&tt.train.labels[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&tt.test.labels[..5], &[7, 2, 1, 0, 4]);
    assert_eq!(tt.train.label_histogram(), vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert_eq!(spec.normalization, Normalization::mnist());
    assert_eq!(spec.raw_scale, 255.0);
    let (mean, std) = raw_channel_stats(&tt.train, &spec.normalization);
    assert!((mean[0] - 0.1307).abs() < 2e-4, "MNIST train mean {mean:?}");
    assert!((std[0] - 0.3081).abs() < 2e-4, "MNIST train std {std:?}");
    // The image corners are background: raw 0.
    let zero = (0.0 - 0.1307) / 0.3081;
    assert!((tt.train.sample(0)[0] - zero).abs() < 1e-6);
    Ok(())
}

#[test]
fn shared_data_cifar10() -> TestResult {
    let Some(root) = data_dir("shared_data_cifar10") else { return Ok(()) };
    let dir = root.join("cifar10");
    let start = Instant::now();
    let tt = data::load_cifar10(&dir, CifarOptions::default())?;
    eprintln!("CIFAR-10 loaded in {:.2?}", start.elapsed());
    assert_eq!((tt.train.len(), tt.test.len()), (50_000, 10_000));
    assert_eq!(tt.train.label_histogram(), vec![5000; 10]);
    assert_eq!(tt.test.label_histogram(), vec![1000; 10]);
    // Official order: data_batch_1 starts frog, truck, truck, deer; test_batch cat, ship, ship.
    assert_eq!(&tt.train.labels[..4], &[6, 9, 9, 4]);
    assert_eq!(&tt.test.labels[..3], &[3, 8, 8]);
    // Statistics of these (JPEG re-decoded) pixels, from the data's SOURCE.txt.
    let (mean, std) = raw_channel_stats(&tt.train, &Normalization::cifar10());
    for (c, (want_mean, want_std)) in [(0.4913, 0.2452), (0.4821, 0.2428), (0.4465, 0.2606)].into_iter().enumerate() {
        assert!((mean[c] - want_mean).abs() < 1e-4, "channel {c} mean {mean:?}");
        assert!((std[c] - want_std).abs() < 1e-4, "channel {c} std {std:?}");
    }
    // A prefix across a batch boundary equals the start of the full set.
    let start = Instant::now();
    let part = data::load_cifar10(&dir, CifarOptions { train_limit: Some(12_345), test_limit: Some(10) })?;
    eprintln!("CIFAR-10 prefix of 12,345 loaded in {:.2?}", start.elapsed());
    assert_eq!(part.train, tt.train.take(12_345));
    assert_eq!(part.test, tt.test.take(10));
    Ok(())
}

#[test]
fn shared_data_adult() -> TestResult {
    let Some(root) = data_dir("shared_data_adult") else { return Ok(()) };
    let start = Instant::now();
    let (tt, encoder) = data::load_adult_with_encoder(&root.join("adult"))?;
    eprintln!("Adult loaded in {:.2?}", start.elapsed());
    assert_eq!((tt.train.len(), tt.test.len()), (32_561, 16_281));
    assert_eq!(tt.train.label_histogram(), vec![24_720, 7_841]);
    assert_eq!(tt.test.label_histogram(), vec![12_435, 3_846]);
    assert_eq!(tt.train.sample_shape, vec![data::adult::ADULT_FEATURES]);
    assert_eq!(encoder.vocab.iter().map(Vec::len).collect::<Vec<_>>(), vec![9, 16, 7, 15, 6, 5, 2, 42]);
    assert_eq!(encoder.vocab[0][0], "?");
    assert!((encoder.numeric_mean[0] - 38.5816).abs() < 1e-3, "mean age {}", encoder.numeric_mean[0]);
    // Standardised numeric features have mean 0 and std 1 on the training set.
    let f = tt.train.sample_len();
    for j in 0..6 {
        let col: Vec<f64> = tt.train.features.iter().skip(j).step_by(f).map(|&x| x as f64).collect();
        let m = col.iter().sum::<f64>() / col.len() as f64;
        let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(m.abs() < 1e-4 && (v - 1.0).abs() < 1e-4, "column {j}: mean {m} var {v}");
    }
    // Every training row has exactly one hot category per categorical column.
    assert!(tt.train.features.chunks_exact(f).all(|s| s[6..].iter().sum::<f32>() == 8.0));
    // The first row: 39, State-gov, …, United-States, <=50K.
    let names = encoder.feature_names();
    let hot: Vec<&str> = (6..f).filter(|&k| tt.train.sample(0)[k] == 1.0).map(|k| names[k].as_str()).collect();
    assert!(hot.contains(&"workclass=State-gov") && hot.contains(&"native-country=United-States"), "{hot:?}");
    let mut raw = tt.train.sample(0).to_vec();
    encoder.normalization().denormalize(&[f], &mut raw)?;
    assert!((raw[0] - 39.0).abs() < 1e-3);
    // By name from the data root.
    assert_eq!(data::load("adult", Some(&root), 0)?.test, tt.test);
    Ok(())
}
