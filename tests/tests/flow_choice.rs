//! The flow picked by `--grant-type=auto`, a browser launcher that fails, and the device code on
//! a terminal: the built plugin against the real IdP, the device code approved at the IdP's own
//! page (`idp::testing::Browser`), and the terminal a real pty from `script(1)`.

use idp::testing::{TestIdp, ALICE, ALICE_PASSWORD};
use std::io::{BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each test is bounded by this, not by sleeps.
const DEADLINE: Duration = Duration::from_secs(60);

/// The plugin's stderr (or the terminal's output), filled by a reader thread.
struct Output {
    text: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Output {
    fn read_from(mut source: impl std::io::Read + Send + 'static) -> Output {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = source.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Output { text, reader }
    }

    /// Everything, once the source has closed.
    fn finish(self) -> String {
        let Output { text, reader } = self;
        reader.join().unwrap();
        let all = text.lock().unwrap();
        String::from_utf8_lossy(&all).to_string()
    }

    fn now(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).to_string()
    }

    /// Waits until `done` holds on the output so far, or fails with it.
    fn wait_for(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = self.now();
            if done(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "output so far: {text}");
            // Polling a buffer another thread fills; the deadline bounds the test.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_exit(child: &mut Child, out: &Output) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the plugin did not finish: {}", out.now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Approves `user_code` at the IdP's device page as alice, as a person on a phone does.
fn approve(idp: &TestIdp, user_code: &str) {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    idp::testing::Browser::new(client)
        .device(&idp.issuer(), user_code, ALICE, ALICE_PASSWORD, true)
        .unwrap();
}

fn base_args(idp: &TestIdp, cache: &std::path::Path) -> Vec<String> {
    vec![
        "get-token".into(),
        format!("--oidc-issuer-url={}", idp.issuer()),
        "--oidc-client-id=kubelogin".into(),
        "--oidc-extra-scope=email".into(),
        format!("--token-cache-dir={}", cache.display()),
        "--listen-address=127.0.0.1:0".into(),
    ]
}

/// The plugin as kubectl runs it (stdin closed, stdout captured), on a machine without a
/// display: no DISPLAY, WAYLAND_DISPLAY or WSL marker in its environment.
fn spawn_headless(args: &[String]) -> Child {
    let mut c = Command::new(e2e::plugin_path());
    c.args(args)
        .env("KUBERNETES_EXEC_INFO", e2e::EXEC_INFO_V1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in ["DISPLAY", "WAYLAND_DISPLAY", "WSL_DISTRO_NAME"] {
        c.env_remove(v);
    }
    c.spawn().unwrap()
}

#[test]
fn auto_picks_device_code_without_a_display_and_says_why() {
    let idp = TestIdp::start();
    let dir = tempfile::tempdir().unwrap();
    // No --grant-type: kubelogin's default `auto`.
    let mut child = spawn_headless(&base_args(&idp, &dir.path().join("cache")));
    let stdout = child.stdout.take().unwrap();
    let err = Output::read_from(child.stderr.take().unwrap());
    let text = err.wait_for(|t| t.contains("(code "));
    assert!(
        text.contains("Using the device code flow (device-code): "),
        "{text}"
    );
    assert!(
        text.contains("pass --grant-type=authcode, authcode-keyboard or device-code"),
        "says how to override: {text}"
    );
    // stderr is not a terminal: no QR code, no countdown, no escape sequence.
    assert!(
        !text.contains('\u{2580}') && !text.contains('\x1b') && !text.contains(" left"),
        "{text:?}"
    );
    let user_code = text
        .split("(code ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap()
        .to_string();
    approve(&idp, &user_code);
    let status = wait_exit(&mut child, &err);
    let err = err.finish();
    let mut json = Vec::new();
    BufReader::new(stdout).read_to_end(&mut json).unwrap();
    assert!(status.success(), "{err}");
    let cred: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(cred["kind"], "ExecCredential");
    assert_eq!(idp.token_grants(shared::token::grant_type::DEVICE_CODE), 1);
    assert_eq!(idp.token_grants("authorization_code"), 0);
}

#[test]
fn a_failing_browser_launcher_is_reported_at_once() {
    let idp = TestIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let mut args = base_args(&idp, &dir.path().join("cache"));
    // /bin/false starts and exits 1: a launcher that fails, as xdg-open without a browser.
    args.push("--browser-command=/bin/false".into());
    args.push("--authentication-timeout-sec=600".into());
    let mut child = spawn_headless(&args);
    let err = Output::read_from(child.stderr.take().unwrap());
    // Bounded by DEADLINE (60 s), a tenth of the authentication timeout.
    let text = err.wait_for(|t| t.contains("--grant-type=device-code"));
    // Said while the plugin still waits for the login: long before the 600 s timeout.
    assert!(child.try_wait().unwrap().is_none(), "still waiting: {text}");
    child.kill().unwrap();
    child.wait().unwrap();
    err.finish();
    assert!(
        text.contains("Using the browser login (authcode): --browser-command is set"),
        "{text}"
    );
    assert!(
        text.contains("Please visit the following URL in your browser: http://localhost:"),
        "the URL is always printed: {text}"
    );
    assert!(
        text.contains("the browser did not open (/bin/false exited with exit status: 1)"),
        "{text}"
    );
    assert!(
        text.contains("Open this URL in a browser on this machine yourself: http://localhost:"),
        "{text}"
    );
    assert_eq!(idp.token_grants("authorization_code"), 0);
}

/// Single-quotes a word for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The terminal's text without ECMA-48 control sequences (CSI ... final byte) and carriage
/// returns.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for f in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&f) {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Reads the half-block drawing back into modules and decodes it with rqrr (an independent
/// decoder): each character is two modules stacked, U+2580 upper, U+2584 lower, U+2588 both.
fn decode_qr(terminal: &str) -> String {
    let is_qr_line = |l: &str| {
        l.chars().count() > 20 && l.chars().all(|c| " \u{2580}\u{2584}\u{2588}".contains(c))
    };
    let plain = strip_escapes(terminal);
    let rows: Vec<&str> = plain
        .lines()
        .skip_while(|l| !is_qr_line(l))
        .take_while(|l| is_qr_line(l))
        .collect();
    assert!(rows.len() > 10, "no QR drawing in: {plain}");
    let mut modules: Vec<Vec<bool>> = Vec::new();
    for row in rows {
        let (top, bottom): (Vec<bool>, Vec<bool>) = row
            .chars()
            .map(|c| match c {
                '\u{2588}' => (true, true),
                '\u{2580}' => (true, false),
                '\u{2584}' => (false, true),
                _ => (false, false),
            })
            .unzip();
        modules.push(top);
        modules.push(bottom);
    }
    const SCALE: usize = 4;
    let (w, h) = (modules[0].len() * SCALE, modules.len() * SCALE);
    let mut img = rqrr::PreparedImage::prepare_from_bitmap(w, h, |x, y| {
        modules[y / SCALE].get(x / SCALE).copied().unwrap_or(false)
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().unwrap().1
}

#[test]
fn device_code_on_a_terminal_shows_a_qr_code_of_the_complete_uri_and_a_countdown() {
    let idp = TestIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let out_json = dir.path().join("exec-credential.json");
    let mut args = base_args(&idp, &dir.path().join("cache"));
    args.push("--grant-type=device-code".into());
    args.push("--skip-open-browser".into());
    let mut plugin = vec![e2e::plugin_path().display().to_string()];
    plugin.extend(args);
    let plugin = plugin
        .iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    // `script` gives the plugin a terminal on stderr; stdout goes to a file.
    let mut term = Command::new("script")
        .args(["-q", "-e", "-f", "-c"])
        .arg(format!(
            "{plugin} > {}",
            sh_quote(&out_json.display().to_string())
        ))
        .arg("/dev/null")
        .env("KUBERNETES_EXEC_INFO", e2e::EXEC_INFO_V1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs the plugin in a pty");
    let out = Output::read_from(term.stdout.take().unwrap());
    let text = out.wait_for(|t| t.contains("left"));
    // The user code, set apart in bold on its own line.
    let user_code = text
        .split("\x1b[1m")
        .nth(1)
        .and_then(|r| r.split("\x1b[0m").next())
        .unwrap_or_else(|| panic!("no bold user code in {text:?}"))
        .to_string();
    // RFC 8628 §3.3.1: verification_uri_complete is verification_uri with the user code.
    let mut complete = url::Url::parse(&format!("{}/device", idp.issuer())).unwrap();
    complete
        .query_pairs_mut()
        .append_pair("user_code", &user_code);
    let decoded = decode_qr(&text);
    assert_eq!(decoded, complete.to_string());
    assert!(text.contains("Waiting for approval: "), "{text:?}");
    // What the phone would open: the code from the scanned URI.
    let scanned = url::Url::parse(&decoded).unwrap();
    let code = scanned
        .query_pairs()
        .find(|(k, _)| k == "user_code")
        .unwrap()
        .1
        .to_string();
    approve(&idp, &code);
    let status = wait_exit(&mut term, &out);
    drop(term.stdin.take());
    let all = out.finish();
    assert!(status.success(), "{all}");
    let cred: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    assert_eq!(cred["kind"], "ExecCredential");
    // The countdown decreases on the terminal.
    let lefts: Vec<u64> = strip_escapes(&all)
        .split("Waiting for approval: ")
        .skip(1)
        .filter_map(|r| {
            let t = r.split(" left").next()?;
            let (m, s) = t.split_once(':')?;
            Some(m.parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?)
        })
        .collect();
    assert!(
        !lefts.is_empty() && lefts.windows(2).all(|w| w[0] >= w[1]),
        "{lefts:?}"
    );
    assert!(
        lefts[0] <= 180,
        "bounded by --authentication-timeout-sec: {lefts:?}"
    );
}
