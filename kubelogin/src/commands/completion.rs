//! `completion SHELL` and `man [COMMAND]`: generated from the clap definitions in `cli.rs`
//! (clap_complete, clap_mangen), so they list exactly the commands and flags the parser takes.
//! Both print to stdout, as `get-token` prints its ExecCredential.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{Error, Result};

/// The program name the scripts and pages are written for (kubectl finds the plugin by it).
const BIN: &str = "kubectl-oidc_login";

/// The name the bash script is generated for: [`BIN`] without its `-`. clap_complete's bash
/// generator spells a hyphenated program name one way in its dispatch loop and another way in
/// the per-subcommand arms, so nothing after a subcommand completes (clap-rs/clap#6421, open).
/// Only the `complete` lines name the program; they get [`BIN`] back below.
const BASH_NAME: &str = "kubectl_oidc_login";

/// A completion script for `shell`.
pub fn completion(shell: clap_complete::Shell) -> Result<String> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    let bash = shell == clap_complete::Shell::Bash;
    clap_complete::generate(
        shell,
        &mut cmd,
        if bash { BASH_NAME } else { BIN },
        &mut out,
    );
    let text = String::from_utf8(out)
        .map_err(|e| Error::invalid("the completion script is not UTF-8", e))?;
    Ok(if bash {
        // `complete -F _kubectl_oidc_login ... kubectl_oidc_login` → `... kubectl-oidc_login`.
        text.replace(&format!(" {BASH_NAME}\n"), &format!(" {BIN}\n"))
    } else {
        text
    })
}

/// The main man page, or the page of one command (`kubectl-oidc_login-get-token(1)`, the name
/// the main page's COMMANDS section refers to).
pub fn man(command: Option<&str>) -> Result<String> {
    let main = Cli::command().bin_name(BIN);
    let (page, title) = match command {
        None => (main, BIN.to_string()),
        Some(name) => {
            let sub = main
                .find_subcommand(name)
                .filter(|c| !c.is_hide_set())
                .ok_or_else(|| {
                    Error::usage(format!(
                        "man: no command \"{name}\" (see --help for the commands)"
                    ))
                })?
                .clone();
            (
                sub.bin_name(format!("{BIN} {name}")),
                format!("{BIN}-{name}"),
            )
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .title(title)
        .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .map_err(|e| Error::io("rendering the man page", e))?;
    String::from_utf8(out).map_err(|e| Error::invalid("the man page is not UTF-8", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand (not hidden) is named in the bash script, with its flags.
    #[test]
    fn bash_completion_names_every_subcommand_and_flag() {
        let script = completion(clap_complete::Shell::Bash).unwrap();
        for sub in Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
        {
            assert!(
                script.contains(sub.get_name()),
                "{} missing from the bash completion",
                sub.get_name()
            );
        }
        for flag in [
            "--oidc-issuer-url",
            "--grant-type",
            "--token-cache-storage",
            "--apiserver-oidc-issuer-url",
        ] {
            assert!(script.contains(flag), "{flag}");
        }
        assert!(script.contains("complete -F"), "a bash `complete` line");
        for shell in [
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::PowerShell,
        ] {
            let s = completion(shell).unwrap();
            assert!(
                s.contains("get-token") && s.contains("--oidc-client-id"),
                "{shell}"
            );
        }
    }

    #[test]
    fn man_pages_have_roff_headers() {
        let page = man(None).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{}", &page[..80]);
        assert!(page.contains(".TH kubectl-oidc_login 1"), "{page}");
        assert!(
            page.contains(".SH NAME") && page.contains(".SH SUBCOMMANDS"),
            "{page}"
        );
        assert!(
            page.contains("kubectl\\-oidc_login\\-get\\-token(1)"),
            "{page}"
        );
        let get_token = man(Some("get-token")).unwrap();
        assert!(
            get_token.contains(".TH kubectl-oidc_login-get-token 1"),
            "{get_token}"
        );
        assert!(
            get_token.contains("\\-\\-oidc\\-issuer\\-url"),
            "{get_token}"
        );
        assert!(man(Some("nope"))
            .unwrap_err()
            .to_string()
            .contains("no command"));
    }
}
