//! `kubelogin-rs`, the full plugin: every command, the cache hit too. kubectl runs the small
//! `kubectl-oidc_login` (`src/shim.rs`), which answers a cached get-token itself and execs this
//! binary for everything else. Wires the real dependencies and turns errors into
//! `error: <message>` (the error and its causes, `shared::error_chain`) on stderr with exit
//! code 1. Stdout carries only what `run` returns.

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

fn main() -> ExitCode {
    // The cached get-token path: its common command lines without building clap's command
    // tree (kubelogin::lean); everything else, and anything unusual, goes to clap.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let lean = kubelogin::lean::get_token(&args, std::env::vars_os().map(|(k, _)| k));
    let cli = match lean.map_or_else(|| kubelogin::Cli::try_parse_from(&args), Ok) {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            _ => {
                // clap's message spans several lines (tips, usage); kubectl shows the plugin's
                // stderr to the user, and one line is what the contract promises.
                let text = e.to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ");
                eprintln!("error: {first} (see --help)");
                return ExitCode::from(1);
            }
        },
    };
    // A panic in a dependency must still end as one `error:` line and exit code 1.
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string().replace('\n', " ");
        eprintln!("error: internal error: {text}");
    }));
    let deps = kubelogin::deps::real::deps(cli.verbosity);
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kubelogin::run(cli, deps)
    })) {
        Ok(r) => r,
        Err(_) => return ExitCode::from(1),
    };
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (kubectl gave up) is not worth a panic or a second message.
            if stdout
                .write_all(out.as_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The error and its causes on one line, and no control character from a provider's
            // text reaches the terminal (provider.rs and loopback.rs clean what they know is
            // provider text; this is the net under them).
            let text: String = shared::error_chain::display(&e)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            eprintln!("error: {text}");
            ExitCode::from(1)
        }
    }
}
