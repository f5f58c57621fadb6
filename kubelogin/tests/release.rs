//! `scripts/release.sh` packs the binary cargo built (so the test stays fast) and writes the
//! krew manifest; the manifest is read back with a YAML parser and its sha256 checked against
//! the archive with an independent SHA-256 (the `sha2` crate; the script uses sha256sum).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-oidc_login");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The test binary without its debug information (a release build is stripped too): packing
/// the 100+ MB debug build would take minutes on a busy machine.
fn stripped(dir: &Path) -> PathBuf {
    let out = dir.join("kubectl-oidc_login");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(BIN)
        .status()
        .unwrap();
    assert!(st.success(), "strip (binutils) failed");
    out
}

fn release(binary: &Path, out: &Path, manifest: &Path) -> String {
    let o = Command::new(repo().join("scripts/release.sh"))
        .arg("--binary")
        .arg(binary)
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
    assert_eq!(p["files"][0]["from"], "kubectl-oidc_login");
    assert_eq!(p["files"][0]["to"], ".");
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
    let binary = stripped(tmp.path());
    release(&binary, &out, &manifest);
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

    // The archive holds exactly the binary, executable, byte for byte.
    let list = Command::new("tar")
        .arg("-tvzf")
        .arg(&archive)
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.starts_with("-rwxr-xr-x 0/0"), "{list}");
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
    assert_eq!(
        std::fs::read(x.join("kubectl-oidc_login")).unwrap(),
        std::fs::read(&binary).unwrap()
    );

    // Reproducible: the same binary packs to the same archive.
    let again = tmp.path().join("again");
    release(&binary, &again, &tmp.path().join("again.yaml"));
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
