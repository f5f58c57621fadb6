//! `kubelogin-idp`: parse the command line, run it, turn errors into `error: ...` and exit 1.

use clap::Parser;
use idp::cli::{Cli, Command};

fn main() {
    // A `.env` beside the binary's working directory fills in unset variables (never overrides).
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", shared::error_chain::display(&*e));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
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
    })
}
