//! `setup --write-*` against the real IdP: real kubectl accepts the kubeconfig it writes and logs
//! in through it; the AuthenticationConfiguration it writes passes `doctor` and makes the
//! kube-apiserver stand-in authenticate a real token (username from email with a prefix,
//! prefixed groups); the k3s config it writes is read back by `doctor --k3s-config` in both
//! styles. Also `doctor --authentication-config` refusing a file and a CEL mapping.

use e2e::apiserver::{ApiServer, ApiServerSettings};
use e2e::run_plugin;
use idp::testing::{TestIdp, TestIdpOptions, ALICE, ALICE_PASSWORD};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Setup {
    idp: TestIdp,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            idp: TestIdp::start_with(TestIdpOptions {
                tls: true,
                ..Default::default()
            }),
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn ca(&self) -> String {
        self.idp.ca_path.as_ref().unwrap().display().to_string()
    }
    /// The flags of the login (they end up in the kubeconfig's exec entry); the token cache is
    /// the default one under the test's HOME (setup takes no cache flags, as in kubelogin).
    fn login_flags(&self) -> Vec<String> {
        vec![
            format!("--oidc-issuer-url={}", self.idp.issuer()),
            "--oidc-client-id=kubelogin".into(),
            "--oidc-extra-scope=email,groups".into(),
            format!("--certificate-authority={}", self.ca()),
            "--listen-address=127.0.0.1:0".into(),
            format!("--browser-command={}", env!("CARGO_BIN_EXE_fake-browser")),
            "--authentication-timeout-sec=10".into(),
        ]
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FAKE_BROWSER_USER", ALICE.into()),
            ("FAKE_BROWSER_PASSWORD", ALICE_PASSWORD.into()),
            ("FAKE_BROWSER_CA", self.ca()),
            ("HOME", self.dir.path().display().to_string()),
        ]
    }
    fn plugin(&self, command: &str, extra: &[String]) -> (Output, String) {
        let mut args = vec![command.to_string()];
        args.extend(self.login_flags());
        args.extend(extra.iter().cloned());
        let out = run_plugin(&args, &self.env()).unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out, err)
    }

    /// Real kubectl with the plugin on PATH; output in files, with a deadline.
    fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
        let (out, err) = (self.path("kubectl.out"), self.path("kubectl.err"));
        let mut c = Command::new("/usr/bin/kubectl");
        c.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    e2e::bin_dir().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        for (k, v) in self.env() {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kubectl {args:?} timed out");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (
            status.success(),
            std::fs::read_to_string(&out).unwrap(),
            std::fs::read_to_string(&err).unwrap(),
        )
    }
}

const OTHER_USERS: &str = "apiVersion: v1
kind: Config
clusters: []
contexts: []
current-context: ''
users:
- name: admin
  user:
    token: keep-this-one
";

#[test]
fn setup_writes_what_kubectl_doctor_and_the_apiserver_accept() {
    let s = Setup::new();
    let kubeconfig = s.path("kubeconfig");
    std::fs::write(&kubeconfig, OTHER_USERS).unwrap();
    let authn = s.path("etc/authentication-config.yaml");
    let k3s = s.path("etc/config.yaml");
    std::fs::create_dir_all(s.path("etc")).unwrap();
    std::fs::write(
        &k3s,
        "write-kubeconfig-mode: \"0644\"\nkube-apiserver-arg:\n- audit-log-maxage=30\n",
    )
    .unwrap();
    let (out, err) = s.plugin(
        "setup",
        &[
            format!("--write-kubeconfig={}", kubeconfig.display()),
            "--context=oidc@standin".into(),
            "--cluster=standin".into(),
            format!("--write-authentication-config={}", authn.display()),
            "--kubernetes-version=v1.34.1+k3s1".into(),
            format!("--write-k3s-config={}", k3s.display()),
            format!("--write-rbac={}", s.path("rbac").display()),
        ],
    );
    assert!(out.status.success(), "{err}");
    // Each change is shown as a unified diff on stderr before it is written.
    assert!(
        err.contains(&format!("+++ {}", kubeconfig.display())),
        "{err}"
    );
    assert!(err.contains("+- name: oidc"), "{err}");
    assert!(
        err.contains(&format!("--- /dev/null\n+++ {}", authn.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("+- authentication-config={}", authn.display())),
        "{err}"
    );

    // kubectl reads the kubeconfig: the new user, and the other one kept.
    let (ok, view, verr) = s.kubectl(&kubeconfig, &["config", "view", "-o", "json"]);
    assert!(ok, "{verr}");
    let view: Value = serde_json::from_str(&view).unwrap();
    let users = view["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{view}");
    assert_eq!(users[0]["name"], "admin");
    let exec = &users[1]["user"]["exec"];
    assert_eq!(exec["command"], "kubectl");
    assert_eq!(exec["interactiveMode"], "Never");
    let args: Vec<&str> = exec["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&format!("--oidc-issuer-url={}", s.idp.issuer()).as_str()),
        "{args:?}"
    );
    assert_eq!(view["contexts"][0]["context"]["user"], "oidc");

    // The written AuthenticationConfiguration: v1 for 1.34, the IdP's CA inline.
    let text = std::fs::read_to_string(&authn).unwrap();
    assert!(
        text.starts_with("apiVersion: apiserver.config.k8s.io/v1\n"),
        "{text}"
    );
    assert!(text.contains("certificateAuthority: |"), "{text}");

    // doctor reads it through the k3s config and passes.
    let (out, err) = s.plugin("doctor", &[format!("--k3s-config={}", k3s.display())]);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("[ok]   the authentication configuration passes kube-apiserver's validation"),
        "{err}"
    );
    assert!(err.contains("username: oidc:alice@example.com"), "{err}");
    assert!(err.contains("oidc:developers"), "{err}");

    // The stand-in starts from the same file; kubectl logs in through the written kubeconfig
    // (the cluster added by kubectl itself) and is authenticated by it.
    let api =
        ApiServer::start(ApiServerSettings::from_authentication_config(&text).unwrap()).unwrap();
    let ca = api.ca_path.display().to_string();
    let server = format!("--server={}", api.url);
    let ca_flag = format!("--certificate-authority={ca}");
    let (ok, _, e) = s.kubectl(
        &kubeconfig,
        &["config", "set-cluster", "standin", &server, &ca_flag],
    );
    assert!(ok, "{e}");
    let (ok, whoami, e) = s.kubectl(
        &kubeconfig,
        &["--context=oidc@standin", "auth", "whoami", "-o", "json"],
    );
    assert!(ok, "{e} {:?}", api.stats().rejected);
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    let info = &whoami["status"]["userInfo"];
    assert_eq!(info["username"], "oidc:alice@example.com", "{whoami}");
    let groups: Vec<&str> = info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(groups.contains(&"oidc:developers"), "{groups:?}");
    assert!(
        groups.iter().all(|g| !g.starts_with("developers")),
        "{groups:?}"
    );

    // RBAC for exactly that user and those groups.
    let rbac =
        std::fs::read_to_string(s.path("rbac/oidc-user-oidc-alice-example-com.yaml")).unwrap();
    assert!(
        rbac.contains("kind: ClusterRoleBinding") && rbac.contains("name: oidc:alice@example.com"),
        "{rbac}"
    );
    assert!(s.path("rbac/oidc-group-oidc-developers.yaml").exists());

    // A second run changes nothing and says so.
    let (out, err) = s.plugin(
        "setup",
        &[
            format!("--write-kubeconfig={}", kubeconfig.display()),
            "--context=oidc@standin".into(),
            "--cluster=standin".into(),
        ],
    );
    assert!(out.status.success(), "{err}");
    assert!(err.contains("is up to date"), "{err}");
}

#[test]
fn setup_writes_flags_for_k3s_before_1_30_and_doctor_reads_them() {
    let s = Setup::new();
    let k3s = s.path("config.yaml");
    let (out, err) = s.plugin(
        "setup",
        &[
            format!("--write-k3s-config={}", k3s.display()),
            "--kubernetes-version=1.29".into(),
        ],
    );
    assert!(out.status.success(), "{err}");
    let text = std::fs::read_to_string(&k3s).unwrap();
    assert!(
        text.contains(&format!("- oidc-issuer-url={}\n", s.idp.issuer())),
        "{text}"
    );
    assert!(text.contains("- oidc-username-claim=email\n"), "{text}");
    assert!(
        text.contains(&format!("- oidc-ca-file={}\n", s.ca())),
        "{text}"
    );
    let (out, err) = s.plugin("doctor", &[format!("--k3s-config={}", k3s.display())]);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("username: oidc:alice@example.com"), "{err}");
    // An AuthenticationConfiguration does not exist before 1.30: refused before any login.
    let (out, err) = s.plugin(
        "setup",
        &[
            format!(
                "--write-authentication-config={}",
                s.path("a.yaml").display()
            ),
            "--kubernetes-version=1.29".into(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.starts_with("error: Kubernetes 1.29 has no structured authentication"),
        "{err}"
    );
    assert!(!s.path("a.yaml").exists());
}

fn authn_yaml(issuer: &str, ca: &str, username: &str) -> String {
    let pem = std::fs::read_to_string(ca).unwrap();
    let pem: String = pem.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "apiVersion: apiserver.config.k8s.io/v1beta1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: {issuer}
    audiences: [kubelogin]
    certificateAuthority: |
{pem}  claimMappings:
    username:
{username}"
    )
}

#[test]
fn doctor_refuses_a_bad_configuration_and_a_cel_mapping_that_rejects_the_token() {
    let s = Setup::new();
    let (out, err) = s.plugin("get-token", &[]);
    assert!(out.status.success(), "{err}");
    let file = s.path("authn.yaml");
    // `doctor` on `file` once it holds `contents`.
    let doctor_on = |contents: String| {
        std::fs::write(&file, contents).unwrap();
        s.plugin(
            "doctor",
            &[format!("--authentication-config={}", file.display())],
        )
    };

    // A CEL username mapping on a claim the token lacks: kube-apiserver rejects the token.
    let (out, err) = doctor_on(authn_yaml(
        &s.idp.issuer(),
        &s.ca(),
        "      expression: \"'corp:' + claims.no_such_claim\"\n",
    ));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("[ok]   the authentication configuration passes"),
        "{err}"
    );
    assert!(
        err.contains(
            "[FAIL] kube-apiserver would reject the token: claimMappings.username.expression"
        ),
        "{err}"
    );

    // A CEL mapping that works: what kube-apiserver derives is shown.
    let (out, err) = doctor_on(authn_yaml(
        &s.idp.issuer(),
        &s.ca(),
        "      expression: \"claims.email_verified ? 'corp:' + claims.email : ''\"\n",
    ));
    assert!(out.status.success(), "{err}");
    assert!(err.contains("username: corp:alice@example.com"), "{err}");

    // Start-up rules: email without email_verified, and a prefix with an expression.
    let (out, err) = doctor_on(authn_yaml(
        &s.idp.issuer(),
        &s.ca(),
        "      expression: claims.email\n      prefix: \"x:\"\n",
    ));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("jwt[0].claimMappings.username.prefix: may not be set"),
        "{err}"
    );
    assert!(err.contains("claims.email_verified is not used"), "{err}");

    // A file that is not an AuthenticationConfiguration at all: one error line.
    let (out, err) =
        doctor_on("apiVersion: v1\nkind: AuthenticationConfiguration\njwt: 3\n".to_string());
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.starts_with("error: --authentication-config"), "{err}");
}

#[test]
fn setup_asks_the_api_server_for_its_version_and_leaves_a_broken_kubeconfig_alone() {
    let s = Setup::new();
    let mut settings = ApiServerSettings::new(
        shared::kube_oidc::Settings::new(&s.idp.issuer(), "kubelogin"),
        Some(PathBuf::from(s.ca())),
    );
    settings.anonymous_public_info = true;
    let api = ApiServer::start(settings.clone()).unwrap();
    let kubeconfig = s.path("kubeconfig");
    let exec = e2e::apiserver::ExecConfig {
        api_version: "client.authentication.k8s.io/v1".into(),
        command: e2e::plugin_path(),
        args: vec!["get-token".into()],
        env: Vec::new(),
        interactive_mode: Some("Never".into()),
    };
    api.write_kubeconfig(&kubeconfig, &exec).unwrap();
    let authn = s.path("authn.yaml");
    let write = [format!("--write-authentication-config={}", authn.display())];
    let mut env = s.env();
    env.push(("KUBECONFIG", kubeconfig.display().to_string()));
    let run = |env: &[(&str, String)]| {
        let mut args = vec!["setup".to_string()];
        args.extend(s.login_flags());
        args.extend(write.iter().cloned());
        run_plugin(&args, env).unwrap()
    };
    // The stand-in says 1.32 on /version: the beta API.
    let out = run(&env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = std::fs::read_to_string(&authn).unwrap();
    assert!(
        text.starts_with("apiVersion: apiserver.config.k8s.io/v1beta1\n"),
        "{text}"
    );

    // Without anonymous access to /version: refused before any login, naming the flag.
    settings.anonymous_public_info = false;
    let closed = ApiServer::start(settings).unwrap();
    closed.write_kubeconfig(&kubeconfig, &exec).unwrap();
    let logins = s.idp.token_grants("authorization_code");
    let out = run(&env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("answered HTTP 401: give --kubernetes-version"),
        "{err}"
    );
    assert_eq!(s.idp.token_grants("authorization_code"), logins);

    // A kubeconfig that is not YAML is left as it was, before any login.
    let broken = s.path("broken");
    std::fs::write(&broken, "users: [\n").unwrap();
    let (out, err) = s.plugin(
        "setup",
        &[format!("--write-kubeconfig={}", broken.display())],
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.starts_with("error: ") && err.contains("not a kubeconfig"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), "users: [\n");
    assert_eq!(s.idp.token_grants("authorization_code"), logins);
}
