//! `kubectl-oidc_login`: a kubectl credential plugin for OpenID Connect, drop-in compatible
//! with int128/kubelogin.
//!
//! [`run`] is the headless seam: it takes the parsed command line and every side effect as
//! [`Deps`], and returns what belongs on stdout. `main.rs` wires the real dependencies; tests
//! pass fakes or drive the whole command against a stub provider.

// unwrap/expect/panic are denied in the product; unit tests may assert with them.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
pub mod cli;
pub mod commands;
pub mod deps;
pub mod error;
pub mod exec_credential;
pub mod hit;
pub mod lean;
pub mod printable;
pub mod provider;
pub mod secret;
pub mod token_cache;

/// Fakes of every [`Deps`] trait, for this crate's unit and integration tests: only in a test
/// build or with the `test-support` feature, never in the shipped binary.
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod testing;

pub use cli::Cli;
pub use deps::Deps;
pub use error::{Error, Result};

/// Runs one command. `Ok` carries the text for stdout (the ExecCredential for `get-token`).
pub fn run(cli: Cli, mut deps: Deps) -> Result<String> {
    deps.verbosity = cli.verbosity;
    if deps.verbosity >= 3 {
        deps.say("warning: -v 3 logs HTTP bodies, which contain tokens and secrets");
    }
    if cli.version {
        deps.say(&version());
        return Ok(String::new());
    }
    match &cli.command {
        Some(cli::Command::GetToken(a)) => commands::get_token::run(&deps, a),
        Some(cli::Command::Setup(a)) => commands::setup::run(&deps, a),
        Some(cli::Command::Clean(a)) => commands::clean::run(&deps, a),
        Some(cli::Command::Status(a)) => commands::status::run(&deps, a),
        Some(cli::Command::Doctor(a)) => commands::doctor::run(&deps, a),
        Some(cli::Command::Completion(a)) => commands::completion::completion(a.shell),
        Some(cli::Command::Man(a)) => commands::completion::man(a.command.as_deref()),
        Some(cli::Command::Version) => {
            deps.say(&version());
            Ok(String::new())
        }
        // kubelogin's root command is a legacy mode for `auth-provider: oidc` kubeconfigs,
        // which kubectl no longer supports; say what to run instead.
        None => Err(Error::usage(
            "no command given: use get-token, setup, clean, status, doctor, version, completion or man (see --help)",
        )),
    }
}

pub fn version() -> String {
    format!("kubectl-oidc_login version {}", env!("CARGO_PKG_VERSION"))
}
