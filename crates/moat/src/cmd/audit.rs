//! `moat audit`: an auditor checks that a server's model commitment opens to a model file.
//!
//! The auditor holds the model file (from escrow, a regulator, the model's owner) and the
//! commitment a client saw (in a plaintext answer's `model_commitment`, an admission, or a
//! secure session's hello). It asks the server, with an admin key, for the opening (the nonce)
//! and recomputes SHA-256("moat-commit/1" ‖ nonce ‖ file): equal means the server committed to
//! exactly this file. One HTTP request; nothing else is sent.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

/// Arguments of `moat audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server's base URL.
    #[arg(long)]
    pub url: String,
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Model version (default: the server's default version).
    #[arg(long)]
    pub version: Option<String>,
    /// The model file the commitment should open to.
    #[arg(long)]
    pub file: PathBuf,
    /// The commitment the client saw (64 hex digits); default: the one the server opens.
    #[arg(long)]
    pub commitment: Option<String>,
    /// Admin API key.
    #[arg(long, env = "MOAT_API_KEY")]
    pub api_key: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the audit found.
#[derive(Debug, Serialize)]
struct Audit {
    model_name: String,
    model_version: String,
    commitment: String,
    file: String,
    opens: bool,
}

/// `moat audit`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut http = moat_client::HttpClient::new(&args.url)?;
    if let Some(key) = &args.api_key {
        http = http.with_api_key(key.clone());
    }
    let opening = http
        .commitment_opening(&args.model, args.version.as_deref())
        .with_context(|| format!("asking {} for the opening of '{}'", args.url, args.model))?;
    let file = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let seen = args.commitment.clone().unwrap_or_else(|| opening.commitment.clone());
    opening.verify_seen(&seen, &file).with_context(|| {
        format!("{}/{} does not open to {}", opening.model_name, opening.model_version, args.file.display())
    })?;
    let audit = Audit {
        model_name: opening.model_name,
        model_version: opening.model_version,
        commitment: opening.commitment,
        file: args.file.display().to_string(),
        opens: true,
    };
    if args.json {
        return crate::report::print_json(&audit);
    }
    println!("{}/{}: commitment {} opens to {}", audit.model_name, audit.model_version, audit.commitment, audit.file);
    Ok(())
}
