//! Client credentials grant, RFC 6749 §4.4, for CI: the client authenticates with HTTP Basic
//! (§2.3.1). Providers return an access token only, so this is normally used with
//! `--oidc-use-access-token`.

use super::{finish, form, LoginOptions};
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::token_cache::CacheEntry;

pub fn login(deps: &Deps, provider: &Provider, opts: &LoginOptions) -> Result<CacheEntry> {
    if provider.cfg.client_secret.is_empty() {
        return Err(Error::usage(
            "--grant-type=client-credentials needs --oidc-client-secret",
        ));
    }
    let mut params = form([("grant_type", shared::token::grant_type::CLIENT_CREDENTIALS)]);
    let scopes: Vec<&str> = provider
        .cfg
        .extra_scopes
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !scopes.is_empty() {
        params.push(("scope".into(), scopes.join(" ")));
    }
    let response = provider.token(params)?;
    finish(deps, provider, response, None, opts.use_access_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::GrantType;
    use crate::secret::Secret;
    use crate::testing::{login_options, provider_config, FakeDeps, ISSUER};

    #[test]
    fn basic_auth_and_extra_scopes() {
        let fake = FakeDeps::new();
        fake.discovery();
        fake.http.route(
            &format!("{ISSUER}/token"),
            200,
            r#"{"access_token":"opaque","token_type":"Bearer","expires_in":300}"#,
        );
        let mut cfg = provider_config();
        cfg.client_secret = Secret::new("s e/cret");
        cfg.extra_scopes = vec!["k8s".into()];
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let entry = login(&fake.deps, &p, &login_options(GrantType::ClientCredentials)).unwrap();
        assert_eq!(
            entry.access_token_expires_at,
            Some(fake.deps.clock.now().timestamp() + 300)
        );
        let req = fake.http.requests().pop().unwrap();
        // RFC 6749 §2.3.1: form-urlencoded before Basic.
        assert_eq!(
            req.basic_auth,
            Some(("kubernetes".into(), "s+e%2Fcret".into()))
        );
        let form: std::collections::BTreeMap<_, _> = req.form.unwrap().into_iter().collect();
        assert_eq!(form["scope"], "k8s");
        assert!(!form.contains_key("client_secret"));
    }

    #[test]
    fn needs_a_secret() {
        let fake = FakeDeps::new();
        fake.discovery();
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let err = login(&fake.deps, &p, &login_options(GrantType::ClientCredentials)).unwrap_err();
        assert!(err.to_string().contains("--oidc-client-secret"));
    }
}
