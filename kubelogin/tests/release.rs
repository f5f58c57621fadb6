//! `scripts/release.sh` packs the two binaries cargo built (so the test stays fast) and writes
//! the krew manifest; the manifest is read back with a YAML parser and its sha256 checked against
//! the archive with an independent SHA-256 (the `sha2` crate; the script uses sha256sum).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The archive's files: the shim kubectl runs and the full binary it execs.
const BINS: [(&str, &str); 2] = [
    (
        "kubectl-oidc_login",
        env!("CARGO_BIN_EXE_kubectl-oidc_login"),
    ),
    ("kubelogin-rs", env!("CARGO_BIN_EXE_kubelogin-rs")),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The test binaries without their debug information (a release build is stripped too), in a
/// directory of their own: packing the 100+ MB debug builds would take minutes on a busy
/// machine.
fn stripped(dir: &Path) -> PathBuf {
    let bin_dir = dir.join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    for (name, built) in BINS {
        let st = Command::new("strip")
            .arg("-o")
            .arg(bin_dir.join(name))
            .arg(built)
            .status()
            .unwrap();
        assert!(st.success(), "strip (binutils) failed");
    }
    bin_dir
}

fn release(bin_dir: &Path, out: &Path, manifest: &Path) -> String {
    let o = Command::new(repo().join("scripts/release.sh"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .args(["--base-url", "https://dl.example/kl/"])
        .arg("--out")
        .arg(out)
        .arg("--manifest")
        .arg(manifest)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The fields krew reads, with the plugin name of our own.
fn check_manifest(m: &serde_json::Value) -> &serde_json::Value {
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(
        m["metadata"]["name"], "oidc-login-rs",
        "int128/kubelogin holds oidc-login in the krew index"
    );
    assert_eq!(
        m["spec"]["version"],
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(m["spec"]["shortDescription"].as_str().unwrap().len() < 80);
    let platforms = m["spec"]["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 1, "only linux/amd64 is built here");
    let p = &platforms[0];
    assert_eq!(p["selector"]["matchLabels"]["os"], "linux");
    assert_eq!(p["selector"]["matchLabels"]["arch"], "amd64");
    assert_eq!(p["bin"], "kubectl-oidc_login");
    // Both files, side by side: the shim finds kubelogin-rs next to itself.
    let files = p["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    for (file, (name, _)) in files.iter().zip(BINS) {
        assert_eq!(file["from"], name);
        assert_eq!(file["to"], ".");
    }
    let sha = p["sha256"].as_str().unwrap();
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    assert_ne!(sha, "0".repeat(64));
    p
}

fn read_yaml(path: &Path) -> serde_json::Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn release_script_writes_a_manifest_whose_sha256_matches_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let manifest = tmp.path().join("plugin.yaml");
    let bin_dir = stripped(tmp.path());
    release(&bin_dir, &out, &manifest);
    let archive = out.join("kubectl-oidc_login_linux_amd64.tar.gz");
    let m = read_yaml(&manifest);
    let p = check_manifest(&m);
    assert_eq!(p["sha256"], sha256_hex(&archive));
    assert_eq!(
        p["uri"],
        format!(
            "https://dl.example/kl/v{}/kubectl-oidc_login_linux_amd64.tar.gz",
            env!("CARGO_PKG_VERSION")
        )
    );

    // The archive holds exactly the two binaries, executable, byte for byte.
    let list = Command::new("tar")
        .arg("-tvzf")
        .arg(&archive)
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    for (line, (name, _)) in list.lines().zip(BINS) {
        assert!(line.starts_with("-rwxr-xr-x 0/0"), "{list}");
        assert!(line.ends_with(&format!(" {name}")), "{list}");
    }
    let x = tmp.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    for (name, _) in BINS {
        assert_eq!(
            std::fs::read(x.join(name)).unwrap(),
            std::fs::read(bin_dir.join(name)).unwrap(),
            "{name}"
        );
    }
    // Unpacked, the shim finds the full binary beside it: `version` is answered by kubelogin-rs.
    let v = Command::new(x.join("kubectl-oidc_login"))
        .arg("version")
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");
    assert!(
        String::from_utf8_lossy(&v.stderr).starts_with("kubectl-oidc_login version "),
        "{v:?}"
    );

    // Reproducible: the same binary packs to the same archive.
    let again = tmp.path().join("again");
    release(&bin_dir, &again, &tmp.path().join("again.yaml"));
    assert_eq!(
        sha256_hex(&again.join("kubectl-oidc_login_linux_amd64.tar.gz")),
        sha256_hex(&archive)
    );
}

/// The committed manifest is one the script wrote (for the release archive built from
/// kubelogin/release.toml), not a placeholder.
#[test]
fn committed_krew_manifest_has_our_name_and_a_real_hash() {
    let path = repo().join("examples/krew/oidc-login-rs.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("written by scripts/release.sh"));
    check_manifest(&read_yaml(&path));
    assert!(!repo().join("examples/krew/oidc-login.yaml").exists());
}
