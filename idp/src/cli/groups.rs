//! `kubelogin-idp group ...`: parse, call `admin`, print.

use crate::admin::{Actor, Admin};
use crate::error::IdpError;
use clap::Subcommand;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    Add { name: String },
    List,
    Delete { name: String },
    AddMember { group: String, user: String },
    RemoveMember { group: String, user: String },
}

pub(super) async fn run(
    cmd: GroupCmd,
    admin: &Admin<'_>,
    actor: &Actor,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    match cmd {
        GroupCmd::Add { name } => {
            admin.create_group(actor, &name).await?;
            writeln!(out, "created group {name}")?;
        }
        GroupCmd::List => {
            for g in admin.groups().await? {
                writeln!(out, "{}: {}", g.name, g.members.join(" "))?;
            }
        }
        GroupCmd::Delete { name } => {
            admin.delete_group(actor, &name).await?;
            writeln!(out, "deleted group {name}")?;
        }
        GroupCmd::AddMember { group, user } => {
            admin.add_member(actor, &group, &user).await?;
            writeln!(out, "added {user} to {group}")?;
        }
        GroupCmd::RemoveMember { group, user } => {
            admin.remove_member(actor, &group, &user).await?;
            writeln!(out, "removed {user} from {group}")?;
        }
    }
    Ok(())
}
