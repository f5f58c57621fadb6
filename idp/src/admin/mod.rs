//! The admin use cases behind both front ends, the `kubelogin-idp` command line and the web
//! console: users, groups, clients, signing keys and audit queries. Each rule is written here
//! once (validation, defaults, what an action ends), and each action records one audit event
//! naming the [`Actor`] who ran it, so the same action leaves the same trace whichever front end
//! ran it.
//!
//! Depends on `store`, `audit`, `crypto`, `keys`, `state` (storing signing keys), `bootstrap`
//! (default scopes), `clock` and `error`; never on HTTP or terminal code. Front ends parse their
//! input, call one method of [`Admin`] and present what it returns.

pub mod audit;
pub mod clients;
pub mod groups;
pub mod keys;
pub mod users;

use crate::clock::Clock;
use crate::error::IdpError;
use crate::store::Store;

/// The longest unix user name kept in a command-line actor (Linux `useradd` allows 32).
pub const MAX_UNIX_USER: usize = 32;
/// The longest user name, group name or client id (`audit` keeps 64 characters of them).
pub const MAX_NAME: usize = 64;

/// Who runs an admin action, as its audit event records it: the actor's name, and the address
/// and user agent of the request (empty on the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    name: String,
    ip: String,
    user_agent: String,
}

impl Actor {
    /// An administrator signed in to the web console.
    pub fn admin(username: &str, ip: &str, user_agent: &str) -> Actor {
        Actor {
            name: username.to_string(),
            ip: ip.to_string(),
            user_agent: user_agent.to_string(),
        }
    }

    /// Whoever runs the command line: `cli:<unix user>`, the user from `USER` or `LOGNAME`, else
    /// `cli:#<uid>`.
    pub fn cli() -> Actor {
        let var = |name: &str| std::env::var(name).ok();
        Actor::cli_user(var("USER"), var("LOGNAME"), real_uid())
    }

    /// [`Actor::cli`] from given values: the first non-empty name after cleaning, else the uid.
    /// A name keeps only the characters of POSIX portable user names (others become `_`, so no
    /// control character reaches a log line) and at most [`MAX_UNIX_USER`] of them; `#` is not
    /// one of them, so `cli:#1000` can only be a uid.
    pub fn cli_user(user: Option<String>, logname: Option<String>, uid: Option<u32>) -> Actor {
        let clean = |s: String| -> String {
            s.chars()
                .take(MAX_UNIX_USER)
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let who = [user, logname]
            .into_iter()
            .flatten()
            .map(clean)
            .find(|s| !s.is_empty())
            .or_else(|| uid.map(|u| format!("#{u}")))
            .unwrap_or_else(|| "unknown".to_string());
        Actor {
            name: format!("cli:{who}"),
            ip: String::new(),
            user_agent: String::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn ip(&self) -> &str {
        &self.ip
    }
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }
}

#[cfg(unix)]
fn real_uid() -> Option<u32> {
    Some(rustix::process::getuid().as_raw())
}

#[cfg(not(unix))]
fn real_uid() -> Option<u32> {
    None
}

/// A secret the IdP generated (a password, a client secret): handed to the front end to show
/// once, never logged (its `Debug` is redacted), and only its hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A password an action sets: one the admin chose, or one the IdP generates and returns once.
#[derive(Debug, Clone)]
pub enum PasswordChoice {
    Generate,
    Given(Secret),
}

/// The admin use cases on one store, at the time its clock says.
pub struct Admin<'a> {
    store: &'a dyn Store,
    clock: &'a dyn Clock,
}

impl<'a> Admin<'a> {
    pub fn new(store: &'a dyn Store, clock: &'a dyn Clock) -> Admin<'a> {
        Admin { store, clock }
    }

    pub fn store(&self) -> &'a dyn Store {
        self.store
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Records the audit event of an action `actor` ran. Like every audit record, a failure to
    /// write it is logged and does not undo the action (`audit::record_in`).
    async fn record(&self, actor: &Actor, event: crate::audit::Event) {
        let mut e = event.actor(&actor.name).into_event();
        e.ip = crate::audit::bounded(&actor.ip, crate::audit::MAX_IP);
        e.user_agent = crate::audit::bounded(&actor.user_agent, crate::audit::MAX_USER_AGENT);
        e.at = self.now();
        let name = e.event.clone();
        if let Err(err) = self.store.record_audit(e).await {
            tracing::error!(error = %err, event = %name, "could not record audit event");
        }
    }
}

/// A user name, group name or client id: letters, digits, `.`, `_`, `-`, `@`, at most
/// [`MAX_NAME`]. Names are ASCII so an audit field ending in `audit::TRUNCATION_MARK` was cut.
pub fn valid_name(name: &str) -> Result<(), IdpError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(IdpError::Invalid(format!(
            "{name:?} is not a valid name (letters, digits, . _ - @; at most 64)"
        )))
    }
}

/// A free-text field (a display name): at most `max` characters and no control characters, so
/// it fits a page and a line of output.
pub fn valid_text(what: &str, s: &str, max: usize) -> Result<(), IdpError> {
    if s.chars().count() > max {
        return Err(IdpError::Invalid(format!(
            "the {what} must have at most {max} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(IdpError::Invalid(format!(
            "the {what} must not contain control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_actor_names_the_unix_user_or_the_uid() {
        let a = Actor::cli_user(Some("alice".into()), Some("bob".into()), Some(1000));
        assert_eq!(a.name(), "cli:alice");
        assert_eq!((a.ip(), a.user_agent()), ("", ""));
        let a = Actor::cli_user(Some(String::new()), Some("bob".into()), Some(1000));
        assert_eq!(a.name(), "cli:bob");
        assert_eq!(Actor::cli_user(None, None, Some(1000)).name(), "cli:#1000");
        assert_eq!(Actor::cli_user(None, None, None).name(), "cli:unknown");
    }

    #[test]
    fn cli_actor_is_bounded_and_has_no_control_characters() {
        let a = Actor::cli_user(
            Some(format!("evil\nactor=root {}", "x".repeat(100))),
            None,
            None,
        );
        assert_eq!(a.name().len(), "cli:".len() + MAX_UNIX_USER);
        assert!(a.name().starts_with("cli:evil_actor_root_"), "{}", a.name());
        assert!(!a.name().chars().any(|c| c.is_control() || c == ' '));
        let a = Actor::cli_user(Some("#0".into()), None, None);
        assert_eq!(a.name(), "cli:_0", "a name never looks like a uid");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::new("hunter2-hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            format!("{:?}", PasswordChoice::Given(s.clone())),
            "Given(Secret(***))"
        );
        assert_eq!(s.expose(), "hunter2-hunter2");
    }
}
