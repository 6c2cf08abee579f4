//! Shared by the tests that run `moat secure server` as a separate process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The `moat` binary under test, without the developer's `MOAT_DATA_DIR`.
pub fn moat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moat"));
    c.env_remove("MOAT_DATA_DIR");
    c
}

/// A server process, killed when the test ends whatever happens.
pub struct Server(Child);

impl Server {
    /// Takes charge of a started server process.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> std::io::Result<bool> {
        Ok(self.0.try_wait()?.is_none())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Starts `moat secure server MODEL` on a free loopback port for `sessions` sessions (0: any
/// number) and returns it with the address it printed.
pub fn start_server(
    model: &Path,
    sessions: &str,
    timeout_ms: &str,
) -> Result<(Server, String), Box<dyn std::error::Error>> {
    start_server_with(model, sessions, timeout_ms, &[])
}

/// [`start_server`] with more arguments.
pub fn start_server_with(
    model: &Path,
    sessions: &str,
    timeout_ms: &str,
    extra: &[&str],
) -> Result<(Server, String), Box<dyn std::error::Error>> {
    let mut child = moat()
        .args(["secure", "server"])
        .arg(model)
        .args(["--listen", "127.0.0.1:0", "--sessions", sessions, "--timeout-ms", timeout_ms])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("server stdout")?;
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line.trim().strip_prefix("listening on ").ok_or("no address")?.to_string();
    Ok((server, addr))
}
