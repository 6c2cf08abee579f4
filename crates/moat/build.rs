//! Records the git commit the binary was built from (`MOAT_COMMIT`), so that every figure a
//! report carries names the code that produced it. Outside a git checkout (a source tarball)
//! the commit is `unknown`; a checkout with uncommitted changes to tracked files is marked
//! `-dirty`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let suffix = if dirty && commit != "unknown" { "-dirty" } else { "" };
    println!("cargo:rustc-env=MOAT_COMMIT={commit}{suffix}");
    // Rerun when HEAD moves (a commit, a checkout) and when any source of the workspace changes
    // (so the dirty mark follows edits; such edits rebuild this crate anyway).
    println!("cargo:rerun-if-changed=../../crates");
    if let Some(p) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &head])
    {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(p) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        println!("cargo:rerun-if-changed={p}");
    }
}
