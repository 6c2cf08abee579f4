//! `moat inspect MODEL.onnx`: what a model is made of and how well fixed point tracks it.

use std::path::PathBuf;

use anyhow::Context;
use moat_nn::data::Dataset;
use moat_nn::eval::{FixedVsFloat, fixed_vs_float};
use moat_nn::graph::ValueId;
use moat_nn::tensor::numel;
use moat_nn::{Graph, QuantizedGraph};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use super::{DataArgs, FixedArgs, load_model};
use crate::report::{Table, print_json, thousands};

/// Arguments of `moat inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Compare fixed point with float on this many samples (from `--dataset` if given, else
    /// standard-normal random inputs).
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Dataset to draw comparison samples from (its test split).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Dataset directory (see `moat train --help`).
    #[arg(long, env = "MOAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seed for random comparison inputs and dataset splits; default: drawn from the OS and
    /// recorded in the report.
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry).
    #[arg(skip)]
    pub seed: u64,
    #[command(flatten)]
    pub fixed: FixedArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One row of the layer table.
#[derive(Debug, Serialize)]
pub struct LayerRow {
    /// Node name.
    pub name: String,
    /// Op kind.
    pub op: String,
    /// Values read.
    pub inputs: Vec<String>,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Parameters.
    pub parameters: usize,
    /// Multiply-accumulates per sample.
    pub macs: usize,
    /// Comparisons with zero the secure protocol needs.
    pub relus: usize,
}

/// The inspection report.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// Model name.
    pub model: String,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Layers in execution order.
    pub layers: Vec<LayerRow>,
    /// Total parameters.
    pub parameters: usize,
    /// Total MACs per sample.
    pub macs: usize,
    /// Total ReLU-equivalents per sample.
    pub relus: usize,
    /// Ring bits ℓ.
    pub ring_bits: u32,
    /// Fractional bits f.
    pub frac_bits: u32,
    /// Where the comparison samples came from.
    pub samples_from: String,
    /// Seed of the comparison inputs.
    pub seed: u64,
    /// Fixed point vs float.
    pub fixed_vs_float: FixedVsFloat,
}

/// The layer table of a graph.
pub fn layer_rows(graph: &Graph) -> Vec<LayerRow> {
    let value_name = |v: ValueId| match v.node() {
        None => "input".to_string(),
        Some(i) => graph.nodes()[i].name.clone(),
    };
    graph
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| LayerRow {
            name: node.name.clone(),
            op: node.op.kind().to_string(),
            inputs: node.inputs.iter().map(|v| value_name(*v)).collect(),
            output_shape: graph.shape(ValueId::of_node(i)).to_vec(),
            parameters: node.op.parameter_count(),
            macs: graph.node_macs(i),
            relus: graph.node_relus(i),
        })
        .collect()
}

/// Renders the layer table.
pub fn render_layers(rows: &[LayerRow]) -> String {
    let mut table = Table::new(&["layer", "op", "input", "output", "params", "MACs", "ReLUs"]);
    for r in rows {
        table.row(vec![
            r.name.clone(),
            r.op.clone(),
            r.inputs.join("+"),
            format!("{:?}", r.output_shape),
            thousands(r.parameters),
            thousands(r.macs),
            thousands(r.relus),
        ]);
    }
    table.render()
}

/// Standard-normal random samples in the model's input shape, labelled 0.
fn random_samples(graph: &Graph, n: usize, seed: u64) -> anyhow::Result<Dataset> {
    let per = numel(graph.input_shape());
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let features = (0..n * per)
        .map(|_| {
            let (u1, u2): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect();
    Ok(Dataset::new("random-normal", graph.input_shape().to_vec(), graph.num_classes().max(1), features, vec![0; n])?)
}

/// Runs the inspection.
pub fn inspect(graph: &Graph, samples: &Dataset, args_fixed: FixedArgs, seed: u64) -> anyhow::Result<Inspection> {
    let fixed = args_fixed.fixed_point()?;
    let quantized = QuantizedGraph::new(graph, fixed)?;
    let comparison = fixed_vs_float(graph, &quantized, samples)?;
    let layers = layer_rows(graph);
    Ok(Inspection {
        model: graph.name().to_string(),
        input_shape: graph.input_shape().to_vec(),
        output_shape: graph.output_shape().to_vec(),
        parameters: layers.iter().map(|l| l.parameters).sum(),
        macs: layers.iter().map(|l| l.macs).sum(),
        relus: layers.iter().map(|l| l.relus).sum(),
        layers,
        ring_bits: fixed.ring_bits(),
        frac_bits: fixed.frac_bits(),
        samples_from: samples.name.clone(),
        seed,
        fixed_vs_float: comparison,
    })
}

/// Prints an inspection as text.
pub fn print_inspection(report: &Inspection) {
    println!("model {}  input {:?}  output {:?}", report.model, report.input_shape, report.output_shape);
    print!("{}", render_layers(&report.layers));
    println!(
        "total: {} parameters, {} MACs, {} ReLUs per sample",
        thousands(report.parameters),
        thousands(report.macs),
        thousands(report.relus)
    );
    let c = &report.fixed_vs_float;
    println!(
        "fixed point (ℓ={}, f={}) vs float on {} samples ({}): label agreement {:.2} %, max |Δlogit| {:.5}, mean |Δlogit| {:.5}",
        report.ring_bits,
        report.frac_bits,
        c.samples,
        report.samples_from,
        100.0 * c.label_agreement,
        c.max_logit_error,
        c.mean_logit_error
    );
}

/// `moat inspect`.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    let graph = load_model(&args.model)?;
    let samples = match &args.dataset {
        Some(name) => {
            let data = DataArgs { dataset: name.clone(), data_dir: args.data_dir.clone() };
            data.load(args.seed)?.test.take(args.samples)
        }
        None => random_samples(&graph, args.samples, args.seed)?,
    };
    let report = inspect(&graph, &samples, args.fixed, args.seed).context("inspecting model")?;
    if args.json {
        print_json(&report)
    } else {
        print_inspection(&report);
        Ok(())
    }
}
