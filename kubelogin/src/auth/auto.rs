//! `--grant-type=auto` without `--username`: which flow fits this machine (issue 11 item 4;
//! kubelogin #535, #942, #717: over SSH, in WSL or in a container the browser cannot open).
//!
//! [`display`] is a pure function of the injected [`Host`] (environment variables, files,
//! programs on `PATH`), so each environment has its unit test; [`choose`] adds what the user
//! and the provider said. Both run only when a login is needed, never on a cache hit.

use super::GrantType;
use crate::deps::Host;

/// Whether a browser can be opened here, and why we think so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Display {
    /// A browser can be opened on this machine.
    Browser(String),
    /// There is clearly no display to open a browser on.
    None(String),
}

/// The flow picked and the reason, as said on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub grant: GrantType,
    pub why: String,
    /// Whether a browser launch is pointless (no display): the URL is printed instead.
    pub no_display: bool,
}

impl Choice {
    /// The stderr line: the flow, why, and how to choose another.
    pub fn message(&self) -> String {
        let flow = match self.grant {
            GrantType::Authcode => "the browser login (authcode)",
            GrantType::DeviceCode => "the device code flow (device-code)",
            GrantType::AuthcodeKeyboard => "the login by typed code (authcode-keyboard)",
            GrantType::Password => "the password grant",
            GrantType::ClientCredentials => "the client credentials grant",
            GrantType::Auto => "auto",
        };
        format!(
            "Using {flow}: {}. To choose another, pass --grant-type=authcode, authcode-keyboard or device-code.",
            self.why
        )
    }
}

/// What the user asked for besides `--grant-type=auto`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    /// `--browser-command` is set: the user named how a URL gets opened.
    pub browser_command: bool,
    /// `--skip-open-browser`: the user opens the loopback URL (kubelogin documents this with
    /// SSH port forwarding of the loopback port).
    pub skip_open_browser: bool,
}

/// Container hints in `/proc/1/cgroup` (cgroup v1 paths name the runtime).
const CGROUP_HINTS: [&str; 6] = [
    "docker",
    "kubepods",
    "containerd",
    "lxc",
    "libpod",
    "garden",
];

/// Whether a browser can be opened, from the environment alone. Checked in this order:
/// 1. SSH without a forwarded display (`SSH_CONNECTION`/`SSH_TTY` set, `DISPLAY` unset): a
///    launcher would open the browser on the remote machine's console, if anywhere;
/// 2. WSL (`WSL_DISTRO_NAME`, or "microsoft" in `/proc/version`): the Windows browser is
///    reachable only through `wslview` (wslu);
/// 3. a container (`/.dockerenv`, `/run/.containerenv`, the `container` variable that podman
///    and systemd-nspawn set, `KUBERNETES_SERVICE_HOST`, cgroup paths) without a display passed
///    through (toolbox and distrobox do pass `DISPLAY` through);
/// 4. Linux and the BSDs without `DISPLAY` or `WAYLAND_DISPLAY`;
/// 5. anything else (a desktop, macOS, Windows) can open a browser.
pub fn display(host: &dyn Host) -> Display {
    let has_x = host.var("DISPLAY").is_some();
    let has_display = has_x || host.var("WAYLAND_DISPLAY").is_some();
    let ssh = ["SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT"]
        .into_iter()
        .find(|v| host.var(v).is_some());
    if let (Some(var), false) = (ssh, has_x) {
        return Display::None(format!(
            "this is an SSH session ({var} is set) without a forwarded display (DISPLAY is not set)"
        ));
    }
    if let Some(why) = wsl(host) {
        return if host.on_path("wslview") {
            Display::Browser(format!("{why}, and wslview opens the Windows browser"))
        } else {
            Display::None(format!(
                "{why} without wslview on PATH to open the Windows browser (install wslu)"
            ))
        };
    }
    let os = host.os();
    if matches!(os, "macos" | "windows" | "ios" | "android") {
        return Display::Browser(format!("{os} opens the default browser"));
    }
    if let (Some(why), false) = (container(host), has_display) {
        return Display::None(format!(
            "{why} without a display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
        ));
    }
    if !has_display {
        return Display::None("neither DISPLAY nor WAYLAND_DISPLAY is set".into());
    }
    Display::Browser(if has_x {
        "DISPLAY is set".into()
    } else {
        "WAYLAND_DISPLAY is set".into()
    })
}

/// The flow for `--grant-type=auto` (without `--username`, which means the password grant as
/// in kubelogin): the browser when one can be opened or the user said how; else device code
/// when the provider supports it (RFC 8628 §4: `device_authorization_endpoint` in discovery, or
/// `--oidc-device-authorization-endpoint`); else the code typed back on the terminal.
pub fn choose(host: &dyn Host, asked: Asked, device_supported: bool) -> Choice {
    if asked.browser_command {
        return browser("--browser-command is set");
    }
    if asked.skip_open_browser {
        return browser("--skip-open-browser is set (open the URL yourself)");
    }
    match display(host) {
        Display::Browser(why) => browser(&why),
        Display::None(why) if device_supported => Choice {
            grant: GrantType::DeviceCode,
            why: format!("{why}, and the provider supports device authorization"),
            no_display: true,
        },
        Display::None(why) => Choice {
            grant: GrantType::AuthcodeKeyboard,
            why: format!("{why}, and the provider has no device authorization endpoint"),
            no_display: true,
        },
    }
}

fn browser(why: &str) -> Choice {
    Choice {
        grant: GrantType::Authcode,
        why: why.to_string(),
        no_display: false,
    }
}

fn wsl(host: &dyn Host) -> Option<String> {
    if let Some(distro) = host.var("WSL_DISTRO_NAME") {
        return Some(format!("this is WSL ({distro})"));
    }
    host.read("/proc/version")
        .filter(|v| v.to_ascii_lowercase().contains("microsoft"))
        .map(|_| "this is WSL (/proc/version says Microsoft)".to_string())
}

fn container(host: &dyn Host) -> Option<String> {
    for file in ["/.dockerenv", "/run/.containerenv"] {
        if host.exists(file) {
            return Some(format!("this is a container ({file} exists)"));
        }
    }
    if let Some(kind) = host.var("container") {
        return Some(format!("this is a container (container={kind})"));
    }
    if host.var("KUBERNETES_SERVICE_HOST").is_some() {
        return Some("this is a Kubernetes pod (KUBERNETES_SERVICE_HOST is set)".into());
    }
    let cgroup = host.read("/proc/1/cgroup")?;
    CGROUP_HINTS
        .into_iter()
        .find(|hint| cgroup.contains(hint))
        .map(|hint| format!("this is a container (/proc/1/cgroup names {hint})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    fn pick(host: &FakeHost, device: bool) -> Choice {
        choose(host, Asked::default(), device)
    }

    #[test]
    fn desktop_with_a_display_opens_the_browser() {
        let h = FakeHost::default();
        h.var("DISPLAY", ":0");
        let c = pick(&h, true);
        assert_eq!(c.grant, GrantType::Authcode);
        assert!(!c.no_display);
        assert!(c.message().contains("DISPLAY is set"), "{}", c.message());
        let w = FakeHost::default();
        w.var("WAYLAND_DISPLAY", "wayland-0");
        assert_eq!(pick(&w, true).grant, GrantType::Authcode);
    }

    #[test]
    fn ssh_without_a_forwarded_display_uses_device_code() {
        let h = FakeHost::default();
        h.var("SSH_CONNECTION", "10.0.0.1 5000 10.0.0.2 22")
            .var("WAYLAND_DISPLAY", "wayland-0");
        let c = pick(&h, true);
        assert_eq!(c.grant, GrantType::DeviceCode);
        assert!(c.no_display);
        let m = c.message();
        assert!(m.contains("SSH session (SSH_CONNECTION is set)"), "{m}");
        assert!(m.contains("--grant-type="), "names the override: {m}");
        // With X forwarding (ssh -X) the browser opens on the user's screen.
        h.var("DISPLAY", "localhost:10.0");
        assert_eq!(pick(&h, true).grant, GrantType::Authcode);
        // SSH_TTY alone, on macOS too.
        let mac = FakeHost::default();
        mac.set_os("macos").var("SSH_TTY", "/dev/ttys001");
        assert_eq!(pick(&mac, true).grant, GrantType::DeviceCode);
    }

    #[test]
    fn linux_without_display_uses_device_code_or_the_keyboard() {
        let h = FakeHost::default();
        let c = pick(&h, true);
        assert_eq!(c.grant, GrantType::DeviceCode);
        assert!(
            c.why.contains("neither DISPLAY nor WAYLAND_DISPLAY"),
            "{c:?}"
        );
        // The provider has no device endpoint: the code typed back.
        let c = pick(&h, false);
        assert_eq!(c.grant, GrantType::AuthcodeKeyboard);
        assert!(c.why.contains("no device authorization endpoint"), "{c:?}");
        // The same on FreeBSD.
        h.set_os("freebsd");
        assert_eq!(pick(&h, true).grant, GrantType::DeviceCode);
    }

    #[test]
    fn containers_are_recognised_unless_a_display_is_passed_through() {
        for (setup, words) in [
            (
                Box::new(|h: &FakeHost| {
                    h.file("/.dockerenv", "");
                }) as Box<dyn Fn(&FakeHost)>,
                "/.dockerenv exists",
            ),
            (
                Box::new(|h: &FakeHost| {
                    h.file("/run/.containerenv", "");
                }),
                "/run/.containerenv",
            ),
            (
                Box::new(|h: &FakeHost| {
                    h.var("container", "podman");
                }),
                "container=podman",
            ),
            (
                Box::new(|h: &FakeHost| {
                    h.var("KUBERNETES_SERVICE_HOST", "10.96.0.1");
                }),
                "Kubernetes pod",
            ),
            (
                Box::new(|h: &FakeHost| {
                    h.file("/proc/1/cgroup", "12:pids:/kubepods/besteffort/pod1\n");
                }),
                "cgroup names kubepods",
            ),
        ] {
            let h = FakeHost::default();
            setup(&h);
            let c = pick(&h, true);
            assert_eq!(c.grant, GrantType::DeviceCode, "{words}");
            assert!(c.why.contains(words), "{words}: {c:?}");
            // toolbox/distrobox pass the display through.
            h.var("DISPLAY", ":0");
            assert_eq!(pick(&h, true).grant, GrantType::Authcode, "{words}");
        }
    }

    #[test]
    fn wsl_needs_wslview() {
        let h = FakeHost::default();
        // WSLg sets DISPLAY, but the Windows browser is what the user has.
        h.var("WSL_DISTRO_NAME", "Ubuntu").var("DISPLAY", ":0");
        let c = pick(&h, true);
        assert_eq!(c.grant, GrantType::DeviceCode);
        assert!(c.why.contains("WSL (Ubuntu) without wslview"), "{c:?}");
        h.program("wslview");
        let c = pick(&h, true);
        assert_eq!(c.grant, GrantType::Authcode);
        assert!(c.why.contains("wslview"), "{c:?}");
        // Recognised by the kernel version string too.
        let k = FakeHost::default();
        k.file(
            "/proc/version",
            "Linux version 5.15.153.1-microsoft-standard-WSL2 (gcc)",
        );
        assert!(pick(&k, true).why.contains("/proc/version says Microsoft"));
    }

    #[test]
    fn macos_and_windows_open_the_browser_without_display_variables() {
        for os in ["macos", "windows"] {
            let h = FakeHost::default();
            h.set_os(os);
            assert_eq!(pick(&h, true).grant, GrantType::Authcode, "{os}");
        }
    }

    #[test]
    fn explicit_browser_flags_keep_the_browser_login() {
        let headless = FakeHost::default();
        headless.var("SSH_TTY", "/dev/pts/0");
        for asked in [
            Asked {
                browser_command: true,
                ..Asked::default()
            },
            Asked {
                skip_open_browser: true,
                ..Asked::default()
            },
        ] {
            let c = choose(&headless, asked, true);
            assert_eq!(c.grant, GrantType::Authcode, "{asked:?}");
            assert!(c.why.contains("is set"), "{c:?}");
        }
    }
}
