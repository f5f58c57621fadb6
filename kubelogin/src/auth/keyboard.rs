//! `--grant-type=authcode-keyboard`: the user opens the URL anywhere and types the code back
//! (for machines that cannot receive a loopback redirect).

use super::authcode::{auth_request, exchange};
use super::LoginOptions;
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::secret::Secret;
use crate::token_cache::CacheEntry;

/// The out-of-band redirect URI kubelogin uses by default for this grant.
pub const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

pub fn login(deps: &Deps, provider: &Provider, opts: &LoginOptions) -> Result<CacheEntry> {
    if !opts.interactive {
        return Err(Error::NoTerminal(
            "--grant-type=authcode-keyboard needs to read the code on the terminal, but kubectl runs this plugin non-interactively (set interactiveMode: IfAvailable, or use --grant-type=authcode or device-code)".into(),
        ));
    }
    let redirect_uri = if opts.redirect_url.is_empty() {
        OOB_REDIRECT_URI
    } else {
        opts.redirect_url.as_str()
    };
    let req = auth_request(provider, opts, redirect_uri)?;
    deps.say(&format!(
        "Please visit the following URL in your browser: {}",
        req.url
    ));
    let code = deps.prompt.read_line("Enter code: ")?;
    let code = code.trim();
    if code.is_empty() {
        return Err(Error::Login("no code entered".into()));
    }
    exchange(deps, provider, opts, &req, &Secret::new(code), redirect_uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::GrantType;
    use crate::testing::{login_options, provider_config, FakeDeps, ISSUER};

    #[test]
    fn reads_the_code_and_exchanges_it_with_the_verifier() {
        let fake = FakeDeps::new();
        fake.discovery();
        fake.http.route(
            &format!("{ISSUER}/token"),
            200,
            r#"{"access_token":"at","token_type":"Bearer"}"#,
        );
        fake.prompt.answer("  the-code \n");
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let mut opts = login_options(GrantType::AuthcodeKeyboard);
        opts.interactive = true;
        login(&fake.deps, &p, &opts).unwrap();
        assert_eq!(fake.prompt.asked(), vec!["Enter code: "]);
        let printed = fake.console_text();
        let url = printed.rsplit("browser: ").next().unwrap();
        let url = url::Url::parse(url.trim()).unwrap();
        let q: std::collections::BTreeMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["redirect_uri"], OOB_REDIRECT_URI);
        let form = fake.form_of(&format!("{ISSUER}/token"), 0);
        assert_eq!(form["code"], "the-code");
        assert_eq!(
            shared::pkce::s256_challenge(&form["code_verifier"]),
            q["code_challenge"]
        );
    }

    #[test]
    fn non_interactive_is_refused_without_prompting() {
        let fake = FakeDeps::new();
        fake.discovery();
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let err = login(&fake.deps, &p, &login_options(GrantType::AuthcodeKeyboard)).unwrap_err();
        assert!(matches!(err, Error::NoTerminal(_)));
        assert!(fake.prompt.asked().is_empty());
    }
}
