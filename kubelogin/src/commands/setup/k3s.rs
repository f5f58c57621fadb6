//! k3s's `/etc/rancher/k3s/config.yaml`: its `kube-apiserver-arg` list carries kube-apiserver's
//! flags without the leading `--` (k3s docs, "Configuration File"). Setup owns the `oidc-*` and
//! `authentication-config` entries: they are replaced, every other entry and key is kept.

use serde_norway::{Mapping, Value};

use super::write::Mapping as OidcMapping;

const KEY: &str = "kube-apiserver-arg";

/// Before Kubernetes 1.30: the `--oidc-*` flags.
pub fn flag_args(m: &OidcMapping) -> Vec<String> {
    let mut args = vec![
        format!("oidc-issuer-url={}", m.issuer),
        format!("oidc-client-id={}", m.client_id),
        format!("oidc-username-claim={}", m.username_claim),
        // An empty prefix is written as "-", which disables kube-apiserver's default
        // `<issuer>#` prefix for claims other than email.
        format!(
            "oidc-username-prefix={}",
            if m.username_prefix.is_empty() {
                "-"
            } else {
                &m.username_prefix
            }
        ),
    ];
    if let Some(g) = &m.groups_claim {
        args.push(format!("oidc-groups-claim={g}"));
        args.push(format!("oidc-groups-prefix={}", m.groups_prefix));
    }
    if let Some(ca) = &m.ca_file {
        args.push(format!("oidc-ca-file={ca}"));
    }
    args
}

/// From Kubernetes 1.30: `--authentication-config` (which excludes every `--oidc-*` flag).
pub fn config_file_args(path: &std::path::Path) -> Vec<String> {
    vec![format!("authentication-config={}", path.display())]
}

/// Whether setup owns this `kube-apiserver-arg` entry.
fn owned(arg: &str) -> bool {
    let arg = arg.trim_start_matches('-');
    arg.starts_with("oidc-") || arg.starts_with("authentication-config=")
}

/// The config `existing` (or a new one) with `args` as setup's `kube-apiserver-arg` entries.
pub fn update(existing: Option<&str>, args: &[String]) -> Result<String, String> {
    let mut doc = match existing.filter(|t| !t.trim().is_empty()) {
        Some(text) => serde_norway::from_str::<Value>(text)
            .map_err(|e| format!("not a k3s config (YAML): {e}"))?,
        None => Value::Mapping(Mapping::new()),
    };
    let root = doc
        .as_mapping_mut()
        .ok_or("not a k3s config: the document is not a mapping")?;
    let mut list: Vec<Value> = match root.remove(KEY) {
        None | Some(Value::Null) => Vec::new(),
        // k3s accepts a single string as well as a list.
        Some(Value::String(s)) => vec![Value::String(s)],
        Some(Value::Sequence(s)) => s,
        Some(_) => return Err(format!("`{KEY}` is neither a string nor a list")),
    };
    list.retain(|v| !v.as_str().is_some_and(owned));
    list.extend(args.iter().map(|a| Value::String(a.clone())));
    root.insert(KEY.into(), Value::Sequence(list));
    serde_norway::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_its_entries_and_keeps_the_others() {
        let existing = "write-kubeconfig-mode: \"0644\"\nkube-apiserver-arg:\n- audit-log-path=/var/log/audit.log\n- oidc-issuer-url=https://old.example\ntls-san: [a.example]\n";
        let out = update(
            Some(existing),
            &config_file_args(std::path::Path::new("/etc/rancher/k3s/authn.yaml")),
        )
        .unwrap();
        let doc: Value = serde_norway::from_str(&out).unwrap();
        let args: Vec<&str> = doc[KEY]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            args,
            vec![
                "audit-log-path=/var/log/audit.log",
                "authentication-config=/etc/rancher/k3s/authn.yaml"
            ]
        );
        assert_eq!(doc["write-kubeconfig-mode"].as_str(), Some("0644"));
        assert_eq!(doc["tls-san"][0].as_str(), Some("a.example"));
        assert_eq!(
            update(
                Some(&out),
                &config_file_args(std::path::Path::new("/etc/rancher/k3s/authn.yaml"))
            )
            .unwrap(),
            out
        );
    }

    #[test]
    fn a_single_string_and_an_empty_file() {
        let out = update(
            Some("kube-apiserver-arg: v=2\n"),
            &["oidc-client-id=k".into()],
        )
        .unwrap();
        assert!(out.contains("- v=2\n- oidc-client-id=k\n"), "{out}");
        let out = update(None, &["oidc-client-id=k".into()]).unwrap();
        assert_eq!(out, "kube-apiserver-arg:\n- oidc-client-id=k\n");
        assert!(update(Some("kube-apiserver-arg: {a: 1}\n"), &[]).is_err());
    }
}
