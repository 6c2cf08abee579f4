//! `moat` — private ML inference that survives the attacks that break it.
//!
//! The binary is a thin edge over the library crates: it parses arguments, sets up logging and
//! turns library errors into one-line messages and a non-zero exit code.

mod cmd;
mod plot;
mod progress;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Private machine-learning inference that survives the attacks that break it.
#[derive(Parser, Debug)]
#[command(name = "moat", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `moat=debug`); also read from RUST_LOG.
    #[arg(long, global = true, env = "MOAT_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job on the embedded default: train, inspect, float vs fixed-point inference.
    Demo(cmd::demo::Args),
    /// Train a zoo architecture on a dataset; writes MODEL.onnx and MODEL.card.json.
    Train(cmd::train::Args),
    /// Train the server's membership defender (SIGuard's and MemGuard's `h`) for a model with
    /// a card; writes a secret defender file.
    TrainDefender(cmd::defender::Args),
    /// Layer table of an ONNX model: shapes, parameters, MACs, ReLUs, fixed-point error.
    Inspect(cmd::inspect::Args),
    /// Run a model on one input, in float or fixed point.
    Infer(cmd::infer::Args),
    /// Two-party secure inference between two processes: `secure server` and `secure client`.
    Secure(cmd::secure::Args),
    /// Serve a model repository over the Open Inference Protocol v2 (HTTP), with task routing.
    Serve(cmd::serve::Args),
    /// HTTP load test of a server on this machine: throughput, latency percentiles, errors.
    Loadtest(cmd::bench_http::Args),
    /// Benchmarks between two processes on loopback: one protocol, or a whole network privately.
    Bench(cmd::bench::BenchCommand),
    /// Attacks on secure inference, scored against the true model: `attack seek`, `attack fusion`.
    Attack(cmd::attack::Args),
    /// The scorecard: every attack against every defense; writes report.json and report.html.
    Eval(cmd::eval::Args),
    /// Check that a server's model commitment opens to a model file (admin key).
    Audit(cmd::audit::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::TrainDefender(args) => cmd::defender::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Infer(args) => cmd::infer::run(args),
        Command::Secure(args) => cmd::secure::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Loadtest(args) => cmd::bench_http::run(args),
        Command::Bench(args) => cmd::bench::dispatch(args),
        Command::Attack(args) => cmd::attack::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Audit(args) => cmd::audit::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error and its causes.
            let chain: Vec<String> = error.chain().map(|e| e.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
