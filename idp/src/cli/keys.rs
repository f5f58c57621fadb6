//! `kubelogin-idp keys ...`: parse, call `admin`, print.

use crate::admin::{Actor, Admin};
use crate::crypto::KeyEncryptionKey;
use crate::error::IdpError;
use crate::keys::Algorithm;
use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    List,
    /// Make a new signing key active; the old one stays published until its tokens expire.
    Rotate {
        #[arg(long, default_value = "RS256")]
        algorithm: String,
        /// Encrypt signing keys in the database with this key, as `serve` does (required when
        /// they are encrypted).
        #[arg(long, env = "KEY_ENCRYPTION_KEY_FILE")]
        key_encryption_key_file: Option<PathBuf>,
    },
}

pub(super) async fn run(
    cmd: KeysCmd,
    admin: &Admin<'_>,
    actor: &Actor,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    match cmd {
        KeysCmd::List => {
            writeln!(
                out,
                "{:<44} {:<6} {:<8} {:<10} AT REST",
                "KID", "ALG", "STATUS", "CREATED"
            )?;
            for k in admin.keys().await? {
                writeln!(
                    out,
                    "{:<44} {:<6} {:<8} {:<10} {}",
                    k.kid,
                    k.alg,
                    if k.is_active() { "active" } else { "retired" },
                    k.created_at,
                    if k.encrypted {
                        "encrypted"
                    } else {
                        "plaintext"
                    }
                )?;
            }
        }
        KeysCmd::Rotate {
            algorithm,
            key_encryption_key_file,
        } => {
            let alg: Algorithm = algorithm.parse()?;
            let kek = key_encryption_key_file
                .as_deref()
                .map(KeyEncryptionKey::from_file)
                .transpose()?;
            let key = admin.rotate_key(actor, alg, kek.as_ref()).await?;
            writeln!(out, "new active key {} ({}); a running server picks it up within 30 s, and the old key stays published until its tokens expire", key.kid, alg.as_str())?;
        }
    }
    Ok(())
}
