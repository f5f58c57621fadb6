//! Whole-system test support: where the built binaries are, a runner for the plugin as kubectl
//! runs it (a fresh process per call, ExecCredential on stdout), and a kube-apiserver stand-in.

pub mod apiserver;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `target/<profile>`, found from the running test binary (`target/<profile>/deps/...`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The built `kubectl-oidc_login` (cargo builds every workspace binary before running tests).
pub fn plugin_path() -> PathBuf {
    bin_dir().join("kubectl-oidc_login")
}

/// `KUBERNETES_EXEC_INFO` as kubectl sets it for a v1 plugin without a terminal.
pub const EXEC_INFO_V1: &str = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#;

/// Runs the plugin with `args` and extra environment, stdin closed, as kubectl does.
pub fn run_plugin(args: &[String], env: &[(&str, String)]) -> std::io::Result<Output> {
    let mut c = Command::new(plugin_path());
    c.args(args)
        .stdin(Stdio::null())
        .env("KUBERNETES_EXEC_INFO", EXEC_INFO_V1);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output()
}

/// The token in an ExecCredential printed on stdout.
pub fn token_of(out: &Output) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["status"]["token"].as_str().map(str::to_string)
}
