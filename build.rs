//! Records the git revision and the rustc version for `build_info` and
//! `--version`. Both fall back to "unknown" (a source tarball has no .git);
//! `DKE_REVISION` in the environment overrides the revision, e.g. in a
//! container build that does not copy .git.
use std::process::Command;

fn main() {
    let revision = std::env::var("DKE_REVISION")
        .ok()
        .or_else(|| capture("git", &["rev-parse", "--short=12", "HEAD"]));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let rustc_version = capture(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string));
    println!(
        "cargo:rustc-env=DKE_BUILD_REVISION={}",
        revision.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=DKE_BUILD_RUSTC_VERSION={}",
        rustc_version.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=DKE_REVISION");
    for path in [".git/HEAD", ".git/logs/HEAD"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

fn capture(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
