//! `kubelogin-idp`: parse the command line, run it, turn errors into `error: ...` and exit 1.

use clap::Parser;
use idp::cli::{Cli, Command};
use std::time::Duration;

/// After `serve` returns (its shutdown grace has passed), how long the runtime may take to stop
/// what is left (a password check on a blocking thread) before the process exits anyway.
const RUNTIME_STOP_TIMEOUT: Duration = Duration::from_secs(2);

fn main() {
    // A `.env` beside the binary's working directory fills in unset variables (never overrides).
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log_format) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {}", shared::error_chain::display(&*e));
        std::process::exit(1);
    }
}

/// Logs go to stderr (stdout carries command output): `text` for people, `json` for a log
/// pipeline (one JSON object per line, with the event's fields).
fn init_logging(format: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        "json" => builder.json().with_ansi(false).init(),
        other => {
            return Err(format!(
                "LOG_FORMAT {:?} is not text or json",
                other.chars().take(64).collect::<String>()
            ))
        }
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Backup { out, force } => {
            let mut stdout = std::io::stdout().lock();
            return Ok(idp::cli::backup::backup(
                &cli.data,
                out,
                *force,
                &mut stdout,
            )?);
        }
        Command::Restore { from, force } => {
            let mut stdout = std::io::stdout().lock();
            return Ok(idp::cli::backup::restore(
                &cli.data,
                from,
                *force,
                &mut stdout,
            )?);
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(ref args) => idp::server::run(args, &cli.data).await?,
            Command::Certs { ref hosts, ref out } => {
                let now = idp::clock::Clock::now(&idp::clock::SystemClock);
                let paths = idp::tls::generate_certs(hosts, out, now)?;
                println!("CA certificate:     {}", paths.ca_cert.display());
                println!("server certificate: {}", paths.server_cert.display());
                println!("server key:         {}", paths.server_key.display());
                println!();
                println!("Give the CA to kube-apiserver (--oidc-ca-file={}) and to kubectl-oidc_login (--certificate-authority={}),", paths.ca_cert.display(), paths.ca_cert.display());
                println!("and start the IdP with TLS_CERT_FILE={} TLS_KEY_FILE={}.", paths.server_cert.display(), paths.server_key.display());
            }
            cmd => {
                let store = idp::server::open_store(&cli.data).await?;
                let mut out = std::io::stdout().lock();
                idp::cli::run_admin(cmd, store.as_ref(), &mut out).await?;
            }
        }
        Ok(())
    });
    // Tasks still running (connections cut off after the shutdown grace) are dropped here.
    rt.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
    result
}
