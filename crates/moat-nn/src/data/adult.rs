//! UCI Adult (Census Income) from a directory holding `adult.data` and `adult.test` (each raw or
//! `.gz`): predict whether income exceeds $50K (label 1) from 14 attributes.
//!
//! Parsing: 15 comma-separated fields per row, surrounding spaces trimmed; blank lines and lines
//! starting with `|` (the test file's `|1x3 Cross validator` header) are skipped; a label may
//! end with `.` (as in the test file). Missing values, written `?`, are kept as a category of
//! their own.
//!
//! Encoding ([`AdultEncoder`], fitted on the training file only): each sample has shape `[F]`,
//! the [`ADULT_NUMERIC`] columns first, standardised with the training mean and (population)
//! std, then one one-hot block per [`ADULT_CATEGORICAL`] column in that order, over the
//! categories seen in training sorted by byte order (so `?` comes first). A category the
//! training file lacks encodes as all zeros. On the published files
//! `F = 6 + (9 + 16 + 7 + 15 + 6 + 5 + 2 + 42) = 108` ([`ADULT_FEATURES`]).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::io::{dataset_error, find, read};
use crate::data::{Dataset, Normalization, TrainTest};
use crate::error::{NnError, Result};

/// The training and test files.
pub const ADULT_FILES: [&str; 2] = ["adult.data", "adult.test"];
/// The 14 attribute columns in file order (the 15th field is the income label).
pub const ADULT_COLUMNS: [&str; 14] = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
];
/// Indices (into [`ADULT_COLUMNS`]) of the numeric columns, in feature order.
pub const ADULT_NUMERIC: [usize; 6] = [0, 2, 4, 10, 11, 12];
/// Indices (into [`ADULT_COLUMNS`]) of the categorical columns, in feature order.
pub const ADULT_CATEGORICAL: [usize; 8] = [1, 3, 5, 6, 7, 8, 9, 13];
/// Features per sample when the encoder is fitted on the published `adult.data`.
pub const ADULT_FEATURES: usize = 108;
/// Class names, by label.
pub const ADULT_CLASSES: [&str; 2] = ["<=50K", ">50K"];

/// One parsed row: the attributes split into numeric and categorical values.
struct Row<'a> {
    numeric: [f64; 6],
    categorical: [&'a str; 8],
    label: u16,
}

/// Splits the 14 attribute fields into numeric and categorical values.
fn split_attributes<'a>(fields: &[&'a str]) -> std::result::Result<([f64; 6], [&'a str; 8]), String> {
    if fields.len() != ADULT_COLUMNS.len() {
        return Err(format!("expected {} attributes, found {}", ADULT_COLUMNS.len(), fields.len()));
    }
    let mut numeric = [0.0; 6];
    for (slot, &col) in numeric.iter_mut().zip(&ADULT_NUMERIC) {
        let text = fields[col];
        *slot = text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("column {} ({}): '{text}' is not a number", col + 1, ADULT_COLUMNS[col]))?;
    }
    let categorical = ADULT_CATEGORICAL.map(|col| fields[col]);
    if let Some(pos) = categorical.iter().position(|c| c.is_empty()) {
        let col = ADULT_CATEGORICAL[pos];
        return Err(format!("column {} ({}) is empty", col + 1, ADULT_COLUMNS[col]));
    }
    Ok((numeric, categorical))
}

/// Parses a whole file's rows; errors name `path` and the 1-based line.
fn parse_rows<'a>(text: &'a str, path: &Path) -> Result<Vec<Row<'a>>> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('|') {
            continue;
        }
        let at = |message: String| dataset_error(path, format!("line {}: {message}", n + 1));
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != ADULT_COLUMNS.len() + 1 {
            return Err(at(format!(
                "expected {} comma-separated fields, found {}",
                ADULT_COLUMNS.len() + 1,
                fields.len()
            )));
        }
        let (numeric, categorical) = split_attributes(&fields[..ADULT_COLUMNS.len()]).map_err(at)?;
        let label = match fields[ADULT_COLUMNS.len()].trim_end_matches('.') {
            "<=50K" => 0,
            ">50K" => 1,
            other => return Err(at(format!("label '{other}' is neither <=50K nor >50K"))),
        };
        rows.push(Row { numeric, categorical, label });
    }
    if rows.is_empty() {
        return Err(dataset_error(path, "no data rows"));
    }
    Ok(rows)
}

/// The Adult feature encoding, fitted on a training file: numeric standardisation and one-hot
/// vocabularies (see the module documentation for the layout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdultEncoder {
    /// Training mean of each [`ADULT_NUMERIC`] column.
    pub numeric_mean: Vec<f64>,
    /// Training population std of each [`ADULT_NUMERIC`] column (1 where it would be 0).
    pub numeric_std: Vec<f64>,
    /// Sorted categories of each [`ADULT_CATEGORICAL`] column.
    pub vocab: Vec<Vec<String>>,
}

impl AdultEncoder {
    fn fit(rows: &[Row<'_>]) -> Self {
        let n = rows.len() as f64;
        let mut numeric_mean = vec![0.0; ADULT_NUMERIC.len()];
        let mut numeric_std = vec![0.0; ADULT_NUMERIC.len()];
        for (j, (mean, std)) in numeric_mean.iter_mut().zip(&mut numeric_std).enumerate() {
            *mean = rows.iter().map(|r| r.numeric[j]).sum::<f64>() / n;
            let var = rows.iter().map(|r| (r.numeric[j] - *mean).powi(2)).sum::<f64>() / n;
            *std = if var > 0.0 { var.sqrt() } else { 1.0 };
        }
        let vocab = (0..ADULT_CATEGORICAL.len())
            .map(|j| {
                let set: BTreeSet<&str> = rows.iter().map(|r| r.categorical[j]).collect();
                set.into_iter().map(str::to_string).collect()
            })
            .collect();
        Self { numeric_mean, numeric_std, vocab }
    }

    /// Features per encoded sample: 6 numeric plus one per category.
    pub fn num_features(&self) -> usize {
        ADULT_NUMERIC.len() + self.vocab.iter().map(Vec::len).sum::<usize>()
    }

    /// Name of each feature, in order: `age`, …, `workclass=?`, `workclass=Federal-gov`, ….
    pub fn feature_names(&self) -> Vec<String> {
        let numeric = ADULT_NUMERIC.iter().map(|&c| ADULT_COLUMNS[c].to_string());
        let onehot = ADULT_CATEGORICAL
            .iter()
            .zip(&self.vocab)
            .flat_map(|(&c, cats)| cats.iter().map(move |cat| format!("{}={cat}", ADULT_COLUMNS[c])));
        numeric.chain(onehot).collect()
    }

    /// The encoding as a per-feature [`Normalization`] of raw values (numeric values as
    /// written, one-hot indicators as 0/1): training mean/std for the numeric features, the
    /// identity for the indicators.
    pub fn normalization(&self) -> Normalization {
        let extra = self.num_features() - ADULT_NUMERIC.len();
        let mean = self.numeric_mean.iter().map(|&m| m as f32).chain(std::iter::repeat_n(0.0, extra)).collect();
        let std = self.numeric_std.iter().map(|&s| s as f32).chain(std::iter::repeat_n(1.0, extra)).collect();
        Normalization { mean, std }
    }

    /// Encodes one sample given its 14 attribute fields in [`ADULT_COLUMNS`] order (surrounding
    /// spaces are trimmed; an unknown category encodes as all zeros for its column).
    pub fn encode_fields(&self, fields: &[&str]) -> Result<Vec<f32>> {
        let fields: Vec<&str> = fields.iter().map(|f| f.trim()).collect();
        let (numeric, categorical) =
            split_attributes(&fields).map_err(|message| NnError::Dataset { path: "adult sample".into(), message })?;
        let mut out = Vec::with_capacity(self.num_features());
        self.encode_into(&numeric, &categorical, &mut out);
        Ok(out)
    }

    fn encode_into(&self, numeric: &[f64; 6], categorical: &[&str; 8], out: &mut Vec<f32>) {
        for ((x, mean), std) in numeric.iter().zip(&self.numeric_mean).zip(&self.numeric_std) {
            out.push(((x - mean) / std) as f32);
        }
        for (cats, value) in self.vocab.iter().zip(categorical) {
            let hot = cats.binary_search_by(|c| c.as_str().cmp(value)).ok();
            out.extend((0..cats.len()).map(|k| if Some(k) == hot { 1.0 } else { 0.0 }));
        }
    }

    fn encode_rows(&self, name: &str, rows: &[Row<'_>]) -> Result<Dataset> {
        let f = self.num_features();
        let mut features = Vec::with_capacity(rows.len() * f);
        for row in rows {
            self.encode_into(&row.numeric, &row.categorical, &mut features);
        }
        let labels = rows.iter().map(|r| r.label).collect();
        Dataset::new(name, vec![f], 2, features, labels)
    }
}

/// Loads Adult (`adult-train`, `adult-test`) from `dir`.
pub fn load_adult(dir: &Path) -> Result<TrainTest> {
    load_adult_with_encoder(dir).map(|(data, _)| data)
}

/// Loads Adult and returns the encoder fitted on the training file with it (for feature
/// names, model cards, and encoding new samples the same way).
pub fn load_adult_with_encoder(dir: &Path) -> Result<(TrainTest, AdultEncoder)> {
    let [train_file, test_file] = ADULT_FILES;
    let read_text = |file: &str| -> Result<(std::path::PathBuf, String)> {
        let path = find(dir, file)?;
        let text =
            String::from_utf8(read(&path, None)?).map_err(|e| dataset_error(&path, format!("not UTF-8 text: {e}")))?;
        Ok((path, text))
    };
    let (train_path, train_text) = read_text(train_file)?;
    let (test_path, test_text) = read_text(test_file)?;
    let train_rows = parse_rows(&train_text, &train_path)?;
    let test_rows = parse_rows(&test_text, &test_path)?;
    let encoder = AdultEncoder::fit(&train_rows);
    let train = encoder.encode_rows("adult-train", &train_rows)?;
    let test = encoder.encode_rows("adult-test", &test_rows)?;
    tracing::debug!(train = train.len(), test = test.len(), features = encoder.num_features(), "loaded Adult");
    Ok((TrainTest { train, test }, encoder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{TestResult, err_text};

    const TRAIN: &str = "\
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K

38, Private, 215646, HS-grad, 9, Divorced, ?, Not-in-family, Black, Female, 0, 0, 40, ?, <=50K
";
    const TEST: &str = "\
|1x3 Cross validator
25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, United-States, <=50K.
28, Local-gov, 336951, Assoc-acdm, 12, Married-civ-spouse, ?, Husband, White, Male, 0, 0, 40, Cuba, >50K.
";

    fn write(dir: &Path, train: &str, test: &str) -> TestResult {
        std::fs::write(dir.join("adult.data"), train)?;
        std::fs::write(dir.join("adult.test"), test)?;
        Ok(())
    }

    #[test]
    fn encodes_with_train_vocabulary_and_statistics() -> TestResult {
        let dir = tempfile::tempdir()?;
        write(dir.path(), TRAIN, TEST)?;
        let (tt, enc) = load_adult_with_encoder(dir.path())?;
        assert_eq!((tt.train.len(), tt.test.len()), (3, 2));
        assert_eq!(tt.train.labels, vec![0, 1, 0]);
        assert_eq!(tt.test.labels, vec![0, 1]);
        // Vocabularies: sorted, '?' kept as a category.
        assert_eq!(enc.vocab[0], vec!["Private", "Self-emp-not-inc", "State-gov"]);
        assert_eq!(enc.vocab[3], vec!["?", "Adm-clerical", "Exec-managerial"]);
        assert_eq!(enc.vocab[7], vec!["?", "United-States"]);
        let f = 6 + 3 + 2 + 3 + 3 + 2 + 2 + 2 + 2;
        assert_eq!(enc.num_features(), f);
        assert_eq!(tt.train.sample_shape, vec![f]);
        let names = enc.feature_names();
        assert_eq!(names.len(), f);
        assert_eq!(names[0], "age");
        assert_eq!(names[6], "workclass=Private");

        // Numeric columns are standardised with the training mean and population std.
        let ages = [39.0f64, 50.0, 38.0];
        let mean = ages.iter().sum::<f64>() / 3.0;
        let std = (ages.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
        assert!((tt.train.sample(1)[0] as f64 - (50.0 - mean) / std).abs() < 1e-6);
        assert!((tt.test.sample(0)[0] as f64 - (25.0 - mean) / std).abs() < 1e-6);
        // Constant training columns (capital-loss) get std 1.
        assert_eq!(enc.numeric_std[4], 1.0);

        // Train sample 0: workclass State-gov is the third category.
        assert_eq!(&tt.train.sample(0)[6..9], &[0.0, 0.0, 1.0]);
        // Test sample 0: workclass Private (known); native-country United-States.
        let s = tt.test.sample(0);
        assert_eq!(&s[6..9], &[1.0, 0.0, 0.0]);
        assert_eq!(&s[f - 2..], &[0.0, 1.0]);
        // Test sample 1: Local-gov and Cuba were never seen: all-zero blocks; occupation '?'.
        let s = tt.test.sample(1);
        assert_eq!(&s[6..9], &[0.0, 0.0, 0.0]);
        assert_eq!(&s[f - 2..], &[0.0, 0.0]);
        let occupation = 6 + 3 + 2 + 3;
        assert_eq!(&s[occupation..occupation + 3], &[1.0, 0.0, 0.0]);

        // encode_fields agrees with the loader.
        let line = "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, United-States";
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(enc.encode_fields(&fields)?, tt.test.sample(0));

        // The normalisation reproduces the encoding from raw values.
        let norm = enc.normalization();
        let mut raw = tt.test.sample(0).to_vec();
        norm.denormalize(&[f], &mut raw)?;
        assert!((raw[0] - 25.0).abs() < 1e-4 && (raw[1] - 226802.0).abs() < 0.1);
        assert_eq!(&raw[6..9], &[1.0, 0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn malformed_rows_are_errors_with_line_numbers() -> TestResult {
        let dir = tempfile::tempdir()?;
        let cases = [
            ("39, State-gov, 77516\n", "line 1: expected 15"),
            (&TRAIN.replace("77516", "seventy"), "line 1: column 3 (fnlwgt): 'seventy' is not a number"),
            (&TRAIN.replace(">50K", "maybe"), "line 2: label 'maybe'"),
            (&TRAIN.replace(", Husband,", ", ,"), "line 2: column 8 (relationship) is empty"),
            ("\n\n", "no data rows"),
        ];
        for (train, want) in cases {
            write(dir.path(), train, TEST)?;
            let err = err_text(load_adult(dir.path()))?;
            assert!(err.contains("adult.data") && err.contains(want), "{err} (want {want})");
        }
        std::fs::write(dir.path().join("adult.data"), [0xff, 0xfe, 0x00])?;
        assert!(err_text(load_adult(dir.path()))?.contains("UTF-8"));
        Ok(())
    }
}
