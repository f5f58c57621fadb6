//! `--grant-type=authcode-keyboard` end to end, as a person does it: the plugin runs in a
//! terminal (a pty from `script`, so it may prompt) and prints the URL; headless Chromium opens
//! it, signs in, allows, and reads the code off the IdP's page; the code is typed into the
//! terminal; the plugin prints an ExecCredential.

use idp::testing::{TestIdp, ALICE, ALICE_PASSWORD};
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The whole login (Chromium start-up included) is bounded.
const DEADLINE: Duration = Duration::from_secs(90);

/// Single-quotes a word for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Waits for `done` to hold on the terminal output, or fails with what was printed.
fn wait_for(
    output: &Arc<Mutex<Vec<u8>>>,
    deadline: Instant,
    done: impl Fn(&str) -> bool,
) -> String {
    loop {
        let text = String::from_utf8_lossy(&output.lock().unwrap()).to_string();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "terminal output so far: {text}");
        // Polling a buffer another thread fills; the deadline, not the interval, bounds the test.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keyboard_flow_in_chromium_shows_a_code_that_the_terminal_accepts() {
    let idp = TestIdp::start();
    let home = tempfile::tempdir().unwrap();
    let out_json = home.path().join("exec-credential.json");
    let code_file = home.path().join("code.txt");
    let plugin = [
        e2e::plugin_path().display().to_string(),
        "get-token".into(),
        format!("--oidc-issuer-url={}", idp.issuer()),
        "--oidc-client-id=kubelogin".into(),
        "--oidc-extra-scope=email".into(),
        "--grant-type=authcode-keyboard".into(),
        format!("--token-cache-dir={}", home.path().join("cache").display()),
    ]
    .iter()
    .map(|a| sh_quote(a))
    .collect::<Vec<_>>()
    .join(" ");
    // `script` gives the plugin a terminal on stdin/stderr; stdout (the ExecCredential) goes to
    // a file, as kubectl keeps it apart from the terminal.
    let mut term = Command::new("script")
        .args(["-q", "-e", "-f", "-c"])
        .arg(format!("{plugin} > {}", sh_quote(&out_json.display().to_string())))
        .arg("/dev/null")
        // kubectl with a terminal: interactiveMode IfAvailable and spec.interactive true.
        .env(
            "KUBERNETES_EXEC_INFO",
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":true}}"#,
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs the plugin in a pty");
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut pty_out = term.stdout.take().unwrap();
    let sink = output.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pty_out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let text = wait_for(&output, deadline, |t| t.contains("Enter code:"));
    let url = text
        .split("browser: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no URL in: {text}"))
        .to_string();
    assert!(
        url.contains("redirect_uri=urn%3Aietf%3Awg%3Aoauth%3A2.0%3Aoob"),
        "{url}"
    );

    // The person opens the URL in Chromium, signs in, allows, and copies the code.
    let browser = Command::new(env!("CARGO_BIN_EXE_chromium-browser"))
        .arg(&url)
        .env("CHROMIUM_USER", ALICE)
        .env("CHROMIUM_PASSWORD", ALICE_PASSWORD)
        .env("CHROMIUM_CODE_FILE", &code_file)
        .env("CHROMIUM_TIMEOUT_SEC", "45")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        browser.status.success(),
        "chromium-browser: {}",
        String::from_utf8_lossy(&browser.stderr)
    );
    assert!(browser.stdout.is_empty());
    let code = std::fs::read_to_string(&code_file).unwrap();
    assert!(!code.trim().is_empty());

    // …and pastes it into the terminal.
    let mut stdin = term.stdin.take().unwrap();
    writeln!(stdin, "{}", code.trim()).unwrap();
    stdin.flush().unwrap();
    let status = loop {
        if let Some(s) = term.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = term.kill();
            panic!(
                "the plugin did not finish; terminal: {}",
                String::from_utf8_lossy(&output.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    reader.join().unwrap();
    let terminal = String::from_utf8_lossy(&output.lock().unwrap()).to_string();
    assert!(status.success(), "exit {status:?}; terminal: {terminal}");
    let cred: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    assert_eq!(cred["kind"], "ExecCredential");
    let token = cred["status"]["token"].as_str().unwrap();
    let claims: serde_json::Value = shared::jwt::decode_claims_unverified(token).unwrap();
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["iss"], idp.issuer());
}
