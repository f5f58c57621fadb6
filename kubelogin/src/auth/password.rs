//! Resource owner password credentials grant, RFC 6749 §4.3. Missing values are asked on the
//! terminal; without one the error says so instead of hanging on a pipe.

use super::{finish, form, LoginOptions};
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::secret::Secret;
use crate::token_cache::CacheEntry;

pub fn login(deps: &Deps, provider: &Provider, opts: &LoginOptions) -> Result<CacheEntry> {
    let need_prompt = opts.username.is_empty() || opts.password.is_empty();
    if need_prompt && !(opts.interactive && deps.prompt.is_terminal()) {
        return Err(Error::NoTerminal(
            "the password grant needs --username and --password: there is no terminal to ask for them (kubectl runs this plugin non-interactively or stdin is not a terminal)".into(),
        ));
    }
    let username = if opts.username.is_empty() {
        deps.prompt.read_line("Username: ")?
    } else {
        opts.username.clone()
    };
    let password = if opts.password.is_empty() {
        Secret::new(deps.prompt.read_password("Password: ")?)
    } else {
        opts.password.clone()
    };
    let scope = provider.cfg.scope();
    let response = provider.token(form([
        ("grant_type", shared::token::grant_type::PASSWORD),
        ("username", username.as_str()),
        ("password", password.expose()),
        ("scope", scope.as_str()),
    ]))?;
    finish(deps, provider, response, None, opts.use_access_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::GrantType;
    use crate::testing::{login_options, provider_config, FakeDeps, ISSUER};

    const OK: &str = r#"{"access_token":"at","token_type":"Bearer"}"#;

    #[test]
    fn flags_are_sent_with_scope() {
        let fake = FakeDeps::new();
        fake.discovery();
        fake.http.route(&format!("{ISSUER}/token"), 200, OK);
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let mut opts = login_options(GrantType::Password);
        opts.username = "alice".into();
        opts.password = Secret::new("pw");
        login(&fake.deps, &p, &opts).unwrap();
        let form = fake.form_of(&format!("{ISSUER}/token"), 0);
        assert_eq!(form["grant_type"], "password");
        assert_eq!(form["username"], "alice");
        assert_eq!(form["password"], "pw");
        assert_eq!(form["scope"], "openid");
        assert_eq!(form["client_id"], "kubernetes");
        assert!(fake.prompt.asked().is_empty());
    }

    #[test]
    fn non_interactive_never_prompts() {
        let fake = FakeDeps::new();
        fake.discovery();
        fake.prompt.answer("would-hang");
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let mut opts = login_options(GrantType::Password);
        opts.username = "alice".into();
        let err = login(&fake.deps, &p, &opts).unwrap_err();
        assert!(matches!(err, Error::NoTerminal(_)));
        assert!(fake.prompt.asked().is_empty());
    }

    #[test]
    fn interactive_prompts_for_what_is_missing() {
        let fake = FakeDeps::new();
        fake.discovery();
        fake.http.route(&format!("{ISSUER}/token"), 200, OK);
        fake.prompt.answer("alice");
        fake.prompt.answer("pw");
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let mut opts = login_options(GrantType::Password);
        opts.interactive = true;
        login(&fake.deps, &p, &opts).unwrap();
        assert_eq!(fake.prompt.asked(), vec!["Username: ", "Password: "]);
    }
}
