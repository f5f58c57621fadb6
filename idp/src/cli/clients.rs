//! `kubelogin-idp client ...`: parse, call `admin`, print.

use crate::admin::clients::NewClientRequest;
use crate::admin::{Actor, Admin};
use crate::error::IdpError;
use crate::store::Client;
use clap::Subcommand;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// Register a client (a confidential client's secret is printed once).
    Add {
        id: String,
        #[arg(
            long,
            conflicts_with = "confidential",
            required_unless_present = "confidential"
        )]
        public: bool,
        #[arg(long)]
        confidential: bool,
        /// https, or http on a loopback address (any port matches there), or
        /// urn:ietf:wg:oauth:2.0:oob; no fragment.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// authorization_code, refresh_token, device_code (or urn:...:device_code), client_credentials, password
        #[arg(long = "grant-type")]
        grant_types: Vec<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Replace a confidential client's secret (printed once).
    RotateSecret {
        id: String,
    },
    /// Forced re-authentication: revoke every refresh token of the client.
    #[command(visible_alias = "force-reauth")]
    RevokeAll {
        id: String,
    },
    /// The client's live refresh token families: how many, and the newest with their users.
    Tokens {
        id: String,
        /// List at most this many families (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn print_client(out: &mut impl Write, c: &Client) -> std::io::Result<()> {
    writeln!(out, "client_id: {}", c.client_id)?;
    writeln!(out, "name: {}", c.name)?;
    writeln!(out, "type: {}", kind(c))?;
    writeln!(out, "redirect_uris: {}", c.redirect_uris.join(" "))?;
    writeln!(
        out,
        "post_logout_redirect_uris: {}",
        c.post_logout_redirect_uris.join(" ")
    )?;
    writeln!(out, "grant_types: {}", c.grant_types.join(" "))?;
    writeln!(out, "scopes: {}", c.scopes.join(" "))
}

fn kind(c: &Client) -> &'static str {
    if c.is_public() {
        "public"
    } else {
        "confidential"
    }
}

pub(super) async fn run(
    cmd: ClientCmd,
    admin: &Admin<'_>,
    actor: &Actor,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    match cmd {
        ClientCmd::Add {
            id,
            public,
            confidential: _,
            redirect_uris,
            post_logout_redirect_uris,
            grant_types,
            scopes,
            name,
        } => {
            let req = NewClientRequest {
                client_id: id,
                name: name.unwrap_or_default(),
                public,
                redirect_uris,
                post_logout_redirect_uris,
                grant_types,
                scopes,
            };
            let created = admin.create_client(actor, req).await?;
            print_client(out, &created.client)?;
            if let Some(s) = created.secret {
                writeln!(out, "client_secret: {}", s.expose())?;
                writeln!(out, "(shown once; only its hash is stored)")?;
            }
        }
        ClientCmd::List => {
            for c in admin.clients().await? {
                writeln!(
                    out,
                    "{:<24} {:<12} {}",
                    c.client_id,
                    kind(&c),
                    c.grant_types.join(",")
                )?;
            }
        }
        ClientCmd::Show { id } => print_client(out, &admin.client(&id).await?)?,
        ClientCmd::Delete { id } => {
            admin.delete_client(actor, &id).await?;
            writeln!(out, "deleted client {id}")?;
        }
        ClientCmd::RotateSecret { id } => {
            let s = admin.rotate_client_secret(actor, &id).await?;
            writeln!(out, "client_secret: {}", s.expose())?;
        }
        ClientCmd::RevokeAll { id } => {
            let n = admin.force_reauthentication(actor, &id).await?;
            writeln!(
                out,
                "revoked {n} sessions of client {id}; every user must sign in again"
            )?;
        }
        ClientCmd::Tokens { id, limit } => {
            let t = admin.client_tokens(&id, limit).await?;
            writeln!(out, "live refresh token families: {}", t.live)?;
            writeln!(
                out,
                "{:<24} {:<10} {:<10} SCOPE",
                "USER", "CREATED", "AUTH TIME"
            )?;
            for f in t.newest {
                writeln!(
                    out,
                    "{:<24} {:<10} {:<10} {}",
                    f.username, f.family.created_at, f.family.auth_time, f.family.scope
                )?;
            }
        }
    }
    Ok(())
}
