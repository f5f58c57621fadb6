//! `kubectl-oidc_login`, the program kubectl runs (the name in every kubeconfig `exec` entry):
//! a small binary that answers a cached `get-token` itself ([`kubelogin::hit`]) and `exec`s
//! the full binary, `kubelogin-rs` in the same directory, with the same arguments and
//! environment for everything else.
//!
//! Why two files: kubectl runs the plugin before every command, and a cache hit in the full
//! binary spends most of its time starting a large program (glibc applying ~17,900 relocations,
//! a copy-on-write fault for each page of `.data.rel.ro`, most of them from the flows' and the
//! CEL interpreter's trait objects). This binary links only the cache hit, so it starts about
//! as fast as `/bin/true` (README, Performance). `kubelogin-rs` is not named `kubectl-*`, so
//! kubectl does not list it as a second plugin; it answers every command, the cache hit too.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};

use kubelogin::deps::Clock;

/// The full binary, looked for next to this one.
const FULL: &str = "kubelogin-rs";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // A panic in the hit path (a bug) must not become Rust's panic message and exit 101: the
    // full binary takes the call instead, and says what it says.
    std::panic::set_hook(Box::new(|_| {}));
    let answer = std::panic::catch_unwind(|| {
        let env = kubelogin::deps::real::environment();
        let now = kubelogin::deps::real::SystemClock.now();
        kubelogin::hit::answer(&args, std::env::vars_os().map(|(k, _)| k), &env, now)
    });
    match answer {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (kubectl gave up) is not worth a message, as in the full binary.
            match stdout
                .write_all(out.as_bytes())
                .and_then(|_| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            }
        }
        _ => {
            let _ = std::panic::take_hook();
            full(&args)
        }
    }
}

/// Runs the full binary in place of this process. Returns only when it cannot be started.
fn full(args: &[OsString]) -> ExitCode {
    let path = match std::env::current_exe() {
        Ok(me) => me.with_file_name(FULL),
        Err(e) => {
            // Rare (no /proc): the binary cannot know where it was installed.
            eprintln!("error: cannot find {FULL}: the path of kubectl-oidc_login is unknown ({e})");
            return ExitCode::from(1);
        }
    };
    let rest = args.get(1..).unwrap_or_default();
    let err = exec(&path, rest);
    let shown: String = path
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cause = if err.kind() == std::io::ErrorKind::NotFound {
        "not found".to_string()
    } else {
        err.to_string()
    };
    eprintln!(
        "error: {shown}: {cause}; kubectl-oidc_login hands every call but a cached token to {FULL}, which is installed beside it: reinstall both (cargo install --path kubelogin --locked --config kubelogin/release.toml, or the release archive)"
    );
    ExitCode::from(1)
}

/// `execv` of `path` with argv[0] = `path`; the environment and open descriptors (stdin for
/// prompts, stdout for kubectl) carry over. Returns the error when it could not be started.
#[cfg(unix)]
fn exec(path: &Path, rest: &[OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    Command::new(path).arg0(path).args(rest).exec()
}

/// Without `exec`: run it as a child and exit with its code.
#[cfg(not(unix))]
fn exec(path: &Path, rest: &[OsString]) -> std::io::Error {
    match Command::new(path).args(rest).status() {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(e) => e,
    }
}
