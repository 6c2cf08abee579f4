//! `moat infer MODEL.onnx`: predictions for a batch of any size, in float or in fixed point;
//! `moat infer --url URL`: the same from a server, in plaintext or, with `--secure`, by
//! two-party inference (the server never sees the input, the client learns only the label).
//!
//! Inputs: numpy `.npy` (shape `[N, ...sample]`, `[...sample]` or `[N, prod(sample)]`, any
//! numeric dtype), `.npz` (the array `--input-name`, else the model's input name, else its only
//! array), a JSON array or raw little-endian f32. `--output-npy OUT.npy` writes the model's
//! first declared output, `[N, ...shape]`; `OUT.npz` writes every declared output by its name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use moat_nn::data::npy;
use moat_nn::exec::softmax;
use moat_nn::onnx::MultiOutput;
use moat_nn::tensor::{argmax_f32, numel};
use moat_nn::{FloatExecutor, QuantizedGraph};
use serde::Serialize;

use super::{DataArgs, FixedArgs};
use crate::report::print_json;

/// Arguments of `moat infer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model (not needed with --url).
    #[arg(required_unless_present_any = ["url", "fusion_connect"])]
    pub model: Option<PathBuf>,
    /// Input file, already normalised as the model expects: numpy `.npy` / `.npz` (a batch
    /// `[N, ...sample]` or one sample), a JSON array of numbers (nested arrays are flattened) or
    /// raw little-endian f32 (`.f32`/`.bin`); several samples are a batch.
    #[arg(long, conflicts_with = "index")]
    pub input: Option<PathBuf>,
    /// With an `.npz` --input: the array to read (default: the model's input name, else the
    /// archive's only array).
    #[arg(long, requires = "input")]
    pub input_name: Option<String>,
    /// Write the model's outputs for the whole batch as numpy: `.npy` holds the first declared
    /// output `[N, ...shape]`, `.npz` every declared output under its own name.
    #[arg(long)]
    pub output_npy: Option<PathBuf>,
    /// Use sample INDEX of the dataset's test split as input.
    #[arg(long)]
    pub index: Option<usize>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Run the fixed-point execution (what secure inference computes) instead of float.
    #[arg(long)]
    pub fixed: bool,
    #[command(flatten)]
    pub fixed_point: FixedArgs,
    /// Seed for dataset splits (default 0; public, not session randomness).
    #[arg(long)]
    pub seed: Option<u64>,
    /// INSECURE, with --secure: fix the client's keys and shares to this public number, for
    /// reproducible experiments; whoever knows it can decrypt the input. Without it the session
    /// seed is 256 bits from the operating system and is never shown.
    #[arg(long, requires = "secure")]
    pub insecure_seed: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Ask the server at URL (Open Inference Protocol v2) instead of running locally.
    #[arg(long, conflicts_with = "fixed")]
    pub url: Option<String>,
    /// With an https:// --url: trust only the CAs in this PEM file (like curl's --cacert);
    /// without it, the web PKI roots. Mutual TLS: MOAT_CLIENT_CERT and MOAT_CLIENT_KEY.
    #[arg(long, requires = "url", env = "MOAT_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Model or task to ask the server for (with --url).
    #[arg(long = "model", requires = "url")]
    pub remote_model: Option<String>,
    /// API key for the server (with --url).
    #[arg(long, requires = "url", env = "MOAT_API_KEY")]
    pub api_key: Option<String>,
    /// Request parameter KEY=VALUE (with --url), e.g. min_accuracy=90 or max_latency_ms=5.
    #[arg(long = "param", requires = "url")]
    pub params: Vec<String>,
    /// Secure (two-party) inference with the server at --url: the server never sees the input
    /// and the client learns only the label. An --input holding k samples is k queries of one
    /// session.
    #[arg(long, requires = "url")]
    pub secure: bool,
    /// With --secure or --fusion and --index: query COUNT consecutive test samples (one
    /// session, one batch).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Fusion mix-and-check `m,k[,beta]`: the --count queries travel with m known answers and k
    /// duplicates in one batch (one request, one secure session, or the simulated two-party
    /// engine with a local MODEL), and their labels are printed only if every check passes.
    #[arg(long, requires = "index")]
    pub fusion: Option<String>,
    /// With --fusion: the committed model's published copy, which labels the known-answer pool
    /// (any disagreement is evidence).
    #[arg(long, requires = "fusion")]
    pub fusion_reference: Option<PathBuf>,
    /// With --fusion and no --fusion-reference: the accuracy (percent) the server claims; the
    /// known answers are ground truth and must pass a binomial test at level β.
    #[arg(long, requires = "fusion")]
    pub claimed_accuracy: Option<f64>,
    /// With --fusion: run the batch directly against a `moat secure server` at ADDR (one
    /// two-party session, no admission) instead of --url or the local simulated engine.
    #[arg(long, requires = "fusion", conflicts_with = "url")]
    pub fusion_connect: Option<String>,
    /// With --fusion: known-answer pool size (taken from the dataset's training split).
    #[arg(long, default_value_t = 2000)]
    pub fusion_pool: usize,
    /// With --fusion and --fusion-reference: keep only the SIZE pool samples on which the
    /// reference's two best logits are closest (`moat_client::fusion::selection`): a cheaper
    /// substitute disagrees far more often there, so a small m catches it (see `moat attack
    /// fusion --pool hardest:SIZE`). Sound where the server sees no input (the secure paths);
    /// on the plaintext path the server can recognise hard inputs.
    #[arg(long, requires = "fusion_reference")]
    pub fusion_hardest: Option<usize>,
    /// With --secure: bound on connecting and on every wait for the server (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = super::serve::parse_duration)]
    pub timeout: Duration,
}

/// A prediction.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// `float` or `fixed`.
    pub execution: String,
    /// Predicted class.
    pub label: usize,
    /// The logits.
    pub logits: Vec<f32>,
    /// Softmax of the logits.
    pub probabilities: Vec<f32>,
    /// The model's declared outputs by their ONNX names (the graph's own values: a trailing
    /// softmax included).
    pub outputs: BTreeMap<String, Vec<f32>>,
    /// The true label, when the input came from a dataset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_label: Option<usize>,
    /// The model that answered (remote execution: a model, or a task that does not disclose it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
}

/// Reads an input file: numpy `.npy` / `.npz`, JSON numbers or raw f32. Returns the values and,
/// for numpy files, the array's shape. An `.npz` gives the array `name` (an error when absent),
/// else `fallback` when it holds one of that name, else its only array.
pub fn read_input(
    path: &Path,
    name: Option<&str>,
    fallback: Option<&str>,
) -> anyhow::Result<(Vec<f32>, Option<Vec<usize>>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let array = match ext {
        "npy" => Some(npy::read_npy(&bytes).with_context(|| format!("{}", path.display()))?),
        "npz" => {
            let names = npy::npz_names(&bytes).with_context(|| format!("{}", path.display()))?;
            let pick = name.or(fallback.filter(|f| names.iter().any(|m| m == f)));
            Some(npy::read_npz(&bytes, pick).with_context(|| format!("{}", path.display()))?)
        }
        _ => None,
    };
    if let Some(a) = array {
        let shape = a.shape().to_vec();
        return Ok((a.into_data(), Some(shape)));
    }
    if ext == "f32" || ext == "bin" {
        if bytes.len() % 4 != 0 {
            bail!("{}: {} bytes is not a whole number of f32 values", path.display(), bytes.len());
        }
        return Ok((bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), None));
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not JSON (use .npy, .npz, or .f32 for raw floats)", path.display()))?;
    let mut out = Vec::new();
    flatten_json(&value, &mut out).with_context(|| format!("{}: expected an array of numbers", path.display()))?;
    Ok((out, None))
}

/// Splits an input into samples of `sample_shape`: a numpy array of shape `[N, ...sample]`,
/// `[...sample]` (one sample) or `[N, prod(sample)]`; flat values (JSON, raw) in whole samples.
pub fn split_samples(
    values: Vec<f32>,
    shape: Option<&[usize]>,
    sample_shape: &[usize],
    what: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let per = numel(sample_shape);
    if let Some(shape) = shape {
        let fits = shape == sample_shape
            || (shape.len() == sample_shape.len() + 1 && shape[1..] == *sample_shape)
            || (shape.len() == 2 && shape[1] == per);
        if !fits {
            bail!(
                "{what}: array of shape {shape:?} does not hold samples of the model's shape {sample_shape:?} (give [N, {}])",
                sample_shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if per == 0 || values.is_empty() || !values.len().is_multiple_of(per) {
        bail!(
            "{what}: {} values is not a whole number of samples: the model takes {per} input values (shape {sample_shape:?})",
            values.len()
        );
    }
    if values.iter().any(|v| !v.is_finite()) {
        bail!("{what}: the input holds values that are not finite");
    }
    Ok(values.chunks_exact(per).map(<[f32]>::to_vec).collect())
}

fn flatten_json(value: &serde_json::Value, out: &mut Vec<f32>) -> anyhow::Result<()> {
    match value {
        serde_json::Value::Number(n) => {
            out.push(n.as_f64().context("number out of range")? as f32);
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| flatten_json(v, out)),
        other => bail!("found {other} where a number or array was expected"),
    }
}

/// The model's declared outputs for one sample, by name: float, or decoded from the
/// fixed-point execution (the logits, and their softmax where the graph ends in one).
fn declared_outputs(
    model: &MultiOutput,
    quantized: Option<&[QuantizedGraph]>,
    input: &[f32],
) -> anyhow::Result<BTreeMap<String, Vec<f32>>> {
    let mut out = BTreeMap::new();
    for (k, (name, graph)) in model.signature.outputs.iter().zip(&model.graphs).enumerate() {
        let value = match quantized.and_then(|q| q.get(k)) {
            None => FloatExecutor::run(graph, input)?,
            Some(q) => {
                let logits = q.logits(input)?;
                if graph.logits() == graph.output() { logits } else { softmax(&logits) }
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// Runs one prediction: the model's declared outputs, and its logits, label and softmax.
pub fn predict(model: &MultiOutput, quantized: Option<&[QuantizedGraph]>, input: &[f32]) -> anyhow::Result<Prediction> {
    let graph = &model.graphs[0];
    let expected = numel(graph.input_shape());
    if input.len() != expected {
        bail!("model takes {expected} input values (shape {:?}), the input has {}", graph.input_shape(), input.len());
    }
    let (execution, logits) = match quantized.and_then(|q| q.first()) {
        Some(q) => ("fixed", q.logits(input)?),
        None => ("float", FloatExecutor::logits(graph, input)?),
    };
    let label = argmax_f32(&logits).context("model has no outputs")?;
    Ok(Prediction {
        execution: execution.into(),
        label,
        probabilities: softmax(&logits),
        logits,
        outputs: declared_outputs(model, quantized, input)?,
        true_label: None,
        served_by: None,
    })
}

/// The samples named by `--input` or `--index`/`--count` (with their true labels).
fn read_samples(
    args: &Args,
    sample_shape: &[usize],
    input_name: Option<&str>,
) -> anyhow::Result<(Vec<Vec<f32>>, Vec<usize>)> {
    if let Some(s) = secure_samples(args)? {
        return Ok(s);
    }
    let path = args.input.as_deref().context("give an input: --input FILE or --index I (with --dataset)")?;
    let (values, shape) = read_input(path, args.input_name.as_deref(), input_name)?;
    Ok((split_samples(values, shape.as_deref(), sample_shape, &path.display().to_string())?, Vec::new()))
}

/// Predictions from a server: `--model` names a model or a task; `--param` sets request
/// parameters such as a task's spec. The batch goes in requests of the model's
/// `max_batch_size`, under its own input name; the answer holds its declared outputs and moat's
/// `logits`.
fn predict_remote(args: &Args, url: &str) -> anyhow::Result<Batch> {
    let name = args.remote_model.as_deref().context("--url needs --model NAME (a model or task on the server)")?;
    let mut client = http_client(args, url)?;
    if let Some(key) = &args.api_key {
        client = client.with_api_key(key.clone());
    }
    let meta = client.model_metadata(name, None).with_context(|| format!("asking {url} about '{name}'"))?;
    let (samples, true_labels) = read_samples(args, &meta.sample_shape()?, Some(meta.input_name()?))?;
    let max_batch = meta.max_batch_size().unwrap_or(64).max(1);
    let declared: Vec<String> = meta.output_names().into_iter().map(str::to_string).collect();
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    let params = super::bench_http::parse_params(&args.params)?;
    let mut predictions = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(max_batch) {
        let mut request = meta.request(chunk)?.with_binary_input(true);
        for output in declared.iter().filter(|d| d.as_str() != "logits") {
            request = request.with_output(output.clone(), true, None);
        }
        request = request.with_output("logits", true, None);
        for (k, v) in &params {
            request = request.with_parameter(k.clone(), v.clone());
        }
        let response = client.infer(name, None, &request).with_context(|| format!("inference on '{name}' at {url}"))?;
        let served_by = match &response.model_version {
            Some(v) => format!("{}/{v}", response.model_name),
            None => response.model_name.clone(),
        };
        let logits = response.logits()?;
        let mut outputs = vec![BTreeMap::new(); chunk.len()];
        for d in &declared {
            let tensor = response.output(d).with_context(|| format!("the server returned no '{d}'"))?;
            let moat_client::TensorData::F32(values) = &tensor.data else {
                bail!("output '{d}' is not a float tensor");
            };
            if !shapes.iter().any(|(n, _)| n == d) {
                shapes.push((d.clone(), tensor.shape.iter().skip(1).copied().collect()));
            }
            let per = values.len() / chunk.len().max(1);
            for (o, row) in outputs.iter_mut().zip(values.chunks(per.max(1))) {
                o.insert(d.clone(), row.to_vec());
            }
        }
        if logits.len() != chunk.len() {
            bail!("the server answered {} rows for {} samples", logits.len(), chunk.len());
        }
        for (logits, outputs) in logits.into_iter().zip(outputs) {
            predictions.push(Prediction {
                execution: "remote".into(),
                label: argmax_f32(&logits).context("the server returned empty logits")?,
                probabilities: softmax(&logits),
                logits,
                outputs,
                true_label: None,
                served_by: Some(served_by.clone()),
            });
        }
    }
    for (p, t) in predictions.iter_mut().zip(true_labels) {
        p.true_label = Some(t);
    }
    Ok(Batch { predictions, declared: shapes })
}

/// Predictions for a batch, and the model's declared outputs with their per-sample shapes.
struct Batch {
    predictions: Vec<Prediction>,
    declared: Vec<(String, Vec<usize>)>,
}

/// Local predictions for the batch.
fn predict_local(args: &Args) -> anyhow::Result<Batch> {
    let path = args.model.as_deref().context("give a MODEL.onnx or --url")?;
    let model = moat_nn::onnx::load_onnx_outputs(path).with_context(|| format!("loading model {}", path.display()))?;
    let quantized = match args.fixed {
        true => {
            let fp = args.fixed_point.fixed_point()?;
            Some(model.graphs.iter().map(|g| QuantizedGraph::new(g, fp)).collect::<Result<Vec<_>, _>>()?)
        }
        false => None,
    };
    let (samples, true_labels) =
        read_samples(args, model.graphs[0].input_shape(), Some(model.signature.input.as_str()))?;
    let mut predictions =
        samples.iter().map(|x| predict(&model, quantized.as_deref(), x)).collect::<anyhow::Result<Vec<_>>>()?;
    for (p, t) in predictions.iter_mut().zip(true_labels) {
        p.true_label = Some(t);
    }
    // The ONNX file's own output shapes (`[C, 1, 1]` after a global pooling).
    let declared = model.signature.outputs.iter().cloned().zip(model.signature.output_shapes.iter().cloned()).collect();
    Ok(Batch { predictions, declared })
}

/// Writes `--output-npy`: the first declared output (`.npy`) or all of them (`.npz`), each
/// `[N, ...shape]`.
fn write_outputs(path: &Path, batch: &Batch) -> anyhow::Result<()> {
    let array = |(name, shape): &(String, Vec<usize>)| -> anyhow::Result<npy::Array> {
        let mut data = Vec::new();
        for p in &batch.predictions {
            data.extend_from_slice(p.outputs.get(name).with_context(|| format!("no output '{name}'"))?);
        }
        let full = std::iter::once(batch.predictions.len()).chain(shape.iter().copied()).collect();
        Ok(npy::Array::new(full, data)?)
    };
    let bytes = if path.extension().is_some_and(|e| e == "npz") {
        let arrays =
            batch.declared.iter().map(|d| Ok((d.0.as_str(), array(d)?))).collect::<anyhow::Result<Vec<_>>>()?;
        npy::write_npz(&arrays.iter().map(|(n, a)| (*n, a)).collect::<Vec<_>>())?
    } else {
        npy::write_npy(&array(batch.declared.first().context("the model has no outputs")?)?)
    };
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// What a secure session learned.
#[derive(Debug, Serialize)]
pub struct SecurePrediction {
    /// `secure`.
    pub execution: String,
    /// Predicted classes, one per query.
    pub labels: Vec<usize>,
    /// The true labels, when the inputs came from a dataset.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub true_labels: Vec<usize>,
    /// The model that answered, when the server discloses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// The session port.
    pub address: String,
    /// Queries answered.
    pub queries: u64,
    /// Connecting, token handshake and protocol setup, seconds.
    pub setup_seconds: f64,
    /// Mean seconds per query.
    pub seconds_per_query: f64,
    /// Bytes sent, frame headers included.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Whether the session's randomness was private (false under `--insecure-seed`).
    pub private: bool,
    /// The `--insecure-seed` that fixed the client's keys, if any (then it is not private).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_seed: Option<u64>,
}

/// Inputs, one per query, with their true labels when they come from a dataset.
type Samples = (Vec<Vec<f32>>, Vec<usize>);

/// The inputs of a secure run, or `None` for an `--input` file, which is split once the server
/// says the sample size.
fn secure_samples(args: &Args) -> anyhow::Result<Option<Samples>> {
    let Some(index) = args.index else { return Ok(None) };
    if args.count == 0 {
        bail!("--count must be positive");
    }
    let test = args.data.load(args.seed.unwrap_or(0))?.test;
    if index.saturating_add(args.count) > test.len() {
        bail!("--index {index} + --count {} exceeds the {} test samples", args.count, test.len());
    }
    let range = index..index + args.count;
    Ok(Some((range.clone().map(|i| test.sample(i).to_vec()).collect(), range.map(|i| test.label(i)).collect())))
}

/// `--secure`: one session of as many queries as there are inputs.
fn predict_secure(args: &Args, url: &str) -> anyhow::Result<SecurePrediction> {
    let name = args.remote_model.as_deref().context("--url needs --model NAME (a model or task on the server)")?;
    let mut http = http_client(args, url)?;
    if let Some(key) = &args.api_key {
        http = http.with_api_key(key.clone());
    }
    let (samples, true_labels) = match secure_samples(args)? {
        Some(s) => s,
        None => {
            let path = args.input.as_deref().context("give an input: --input FILE or --index I (with --dataset)")?;
            let meta = http.model_metadata(name, None).with_context(|| format!("asking {url} about '{name}'"))?;
            let (values, shape) = read_input(path, args.input_name.as_deref(), Some(meta.input_name()?))?;
            let what = path.display().to_string();
            (split_samples(values, shape.as_deref(), &meta.sample_shape()?, &what)?, Vec::new())
        }
    };
    let seed = match args.insecure_seed {
        Some(n) => moat_client::Seed::insecure_from_u64(n),
        None => moat_client::Seed::from_os()?,
    };
    let client = moat_client::SecureClient::new(http).with_timeout(args.timeout);
    let mut request = moat_client::SessionRequest::queries(samples.len() as u64);
    for (k, v) in super::bench_http::parse_params(&args.params)? {
        request = request.with_parameter(k, v);
    }
    let admission =
        client.admit_model(name, None, &request).with_context(|| format!("secure session for '{name}' at {url}"))?;
    let mut session = client
        .connect(&admission, seed)
        .with_context(|| format!("opening the secure session at {}", admission.address))?;
    let progress = crate::progress::bar(samples.len() as u64, "secure inference", args.json || samples.len() < 2);
    let mut labels = Vec::with_capacity(samples.len());
    for (i, sample) in samples.iter().enumerate() {
        labels.push(session.infer(sample).with_context(|| format!("secure query {i}"))?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let stats = session.close()?;
    Ok(SecurePrediction {
        execution: "secure".into(),
        labels,
        true_labels,
        served_by: admission.served_by(),
        address: admission.address.clone(),
        queries: stats.queries,
        setup_seconds: stats.setup_seconds,
        seconds_per_query: stats.query_seconds / stats.queries.max(1) as f64,
        bytes_sent: stats.bytes_sent,
        bytes_received: stats.bytes_received,
        private: args.insecure_seed.is_none(),
        insecure_seed: args.insecure_seed,
    })
}

fn print_secure(p: &SecurePrediction) {
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(" ");
    match p.labels.as_slice() {
        [one] => println!("label {one} (secure execution)"),
        many => println!("labels {} (secure execution)", list(many)),
    }
    if let Some(model) = &p.served_by {
        println!("served by {model}");
    }
    if !p.true_labels.is_empty() {
        println!("true label{} {}", if p.true_labels.len() == 1 { "" } else { "s" }, list(&p.true_labels));
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "secure session at {}: {} quer{}, setup {:.2} s, {:.3} s per query, {:.2} MiB sent, {:.2} MiB received{}",
        p.address,
        p.queries,
        if p.queries == 1 { "y" } else { "ies" },
        p.setup_seconds,
        p.seconds_per_query,
        mib(p.bytes_sent),
        mib(p.bytes_received),
        match p.insecure_seed {
            Some(n) => format!(" (NOT PRIVATE: --insecure-seed {n})"),
            None => String::new(),
        }
    );
}

/// `moat infer`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(spec) = &args.fusion {
        return super::fusion::infer(&args, spec);
    }
    if let (true, Some(url)) = (args.secure, &args.url) {
        let prediction = predict_secure(&args, url)?;
        if args.json {
            return print_json(&prediction);
        }
        print_secure(&prediction);
        return Ok(());
    }
    let batch = match &args.url {
        Some(url) => predict_remote(&args, url)?,
        None => predict_local(&args)?,
    };
    if let Some(path) = &args.output_npy {
        write_outputs(path, &batch)?;
    }
    let predictions = batch.predictions;
    if args.json {
        return match predictions.as_slice() {
            [one] => print_json(one),
            many => print_json(&serde_json::json!({ "samples": many.len(), "predictions": many })),
        };
    }
    if let [prediction] = predictions.as_slice() {
        println!("label {} ({} execution)", prediction.label, prediction.execution);
        if let Some(model) = &prediction.served_by {
            println!("served by {model}");
        }
        if let Some(t) = prediction.true_label {
            println!("true label {t}");
        }
        for (i, (l, p)) in prediction.logits.iter().zip(&prediction.probabilities).enumerate() {
            println!("  class {i:>3}  logit {l:>10.4}  p {p:.4}");
        }
        return Ok(());
    }
    for (i, p) in predictions.iter().enumerate() {
        let truth = p.true_label.map(|t| format!(" (true {t})")).unwrap_or_default();
        println!("sample {i:>5}: label {}{truth}", p.label);
    }
    if let Some(p) = predictions.first() {
        let served = p.served_by.as_deref().map(|m| format!(", served by {m}")).unwrap_or_default();
        println!("{} samples, {} execution{served}", predictions.len(), p.execution);
    }
    Ok(())
}

/// The HTTP client for `url`, with `--cacert` applied to an https:// URL.
fn http_client(args: &Args, url: &str) -> anyhow::Result<moat_client::HttpClient> {
    let client = moat_client::HttpClient::new(url)?;
    Ok(match &args.cacert {
        Some(ca) if url.starts_with("https://") => {
            client.with_tls(moat_client::ClientTls::with_ca_file(ca)?.with_env_identity()?)
        }
        _ => client,
    })
}
