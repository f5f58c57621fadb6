//! Groups (the `groups` claim kube-apiserver maps to RBAC): create, delete, list, add and
//! remove members.

use super::{valid_name, Actor, Admin};
use crate::audit::{self, Event};
use crate::error::IdpError;
use crate::store::Group;

impl Admin<'_> {
    /// Every group with its members' usernames, by name.
    pub async fn groups(&self) -> Result<Vec<Group>, IdpError> {
        Ok(self.store.list_groups().await?)
    }

    pub async fn create_group(&self, actor: &Actor, name: &str) -> Result<(), IdpError> {
        valid_name(name)?;
        self.store.create_group(name, self.now()).await?;
        self.record(
            actor,
            Event::new("group_created", audit::INFO).subject(name),
        )
        .await;
        Ok(())
    }

    /// Deletes a group; its members stay, without it.
    pub async fn delete_group(&self, actor: &Actor, name: &str) -> Result<(), IdpError> {
        self.store.delete_group(name).await?;
        self.record(
            actor,
            Event::new("group_deleted", audit::INFO).subject(name),
        )
        .await;
        Ok(())
    }

    /// Adds a user to a group (the next token they get carries it).
    pub async fn add_member(
        &self,
        actor: &Actor,
        group: &str,
        username: &str,
    ) -> Result<(), IdpError> {
        let user = self.user_named(username).await?;
        self.store.add_group_member(group, &user.id).await?;
        self.record(
            actor,
            Event::new("group_member_added", audit::INFO)
                .subject(username)
                .details(group),
        )
        .await;
        Ok(())
    }

    pub async fn remove_member(
        &self,
        actor: &Actor,
        group: &str,
        username: &str,
    ) -> Result<(), IdpError> {
        let user = self.user_named(username).await?;
        self.store.remove_group_member(group, &user.id).await?;
        self.record(
            actor,
            Event::new("group_member_removed", audit::INFO)
                .subject(username)
                .details(group),
        )
        .await;
        Ok(())
    }
}
