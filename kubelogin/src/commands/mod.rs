//! The subcommands. Each turns its flags into the flows' configuration with
//! [`flags::resolve`] and runs; `get-token`, `setup` and `doctor` get their token from the one
//! [`get_token::obtain`].

pub mod advice;
pub mod clean;
pub mod completion;
pub mod doctor;
pub mod flags;
pub mod get_token;
pub mod setup;
pub mod status;

pub use flags::{resolve, Resolved};

use crate::deps::Deps;

/// Whether prompts on stdin are allowed: kubectl's `spec.interactive` when it says, else
/// whether stdin is a terminal.
pub fn interactive(deps: &Deps, exec_interactive: Option<bool>) -> bool {
    exec_interactive.unwrap_or_else(|| deps.prompt.is_terminal())
}
