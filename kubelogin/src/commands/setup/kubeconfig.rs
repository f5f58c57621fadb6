//! The kubeconfig, edited as a YAML document (kubectl's `Config`: `clusters`, `contexts`,
//! `users`, `current-context`): the one user entry (and context) setup owns is added or
//! replaced, every other entry and key is kept in its order. Comments are not kept (kubectl
//! drops them too when it writes the file).

use serde_json::Value as Json;
use serde_norway::{Mapping, Value};

/// The kubeconfig `existing` (or a new one) with the user `user` running `exec`, and the
/// context `(name, cluster)` joining it to a cluster when given; a new file's current context
/// is that context.
pub fn update(
    existing: Option<&str>,
    user: &str,
    exec: Json,
    context: Option<(&str, &str)>,
) -> Result<String, String> {
    let mut doc = match existing.filter(|t| !t.trim().is_empty()) {
        Some(text) => serde_norway::from_str::<Value>(text)
            .map_err(|e| format!("not a kubeconfig (YAML): {e}"))?,
        None => empty(),
    };
    let root = doc
        .as_mapping_mut()
        .ok_or("not a kubeconfig: the document is not a mapping")?;
    let exec: Value = serde_norway::to_value(exec).map_err(|e| e.to_string())?;
    let mut user_body = Mapping::new();
    user_body.insert("exec".into(), exec);
    upsert(root, "users", user, "user", Value::Mapping(user_body))?;
    if let Some((name, cluster)) = context {
        let mut body = Mapping::new();
        body.insert("cluster".into(), cluster.into());
        body.insert("user".into(), user.into());
        upsert(root, "contexts", name, "context", Value::Mapping(body))?;
        let current = root
            .get("current-context")
            .and_then(Value::as_str)
            .unwrap_or("");
        if current.is_empty() {
            root.insert("current-context".into(), name.into());
        }
    }
    serde_norway::to_string(&doc).map_err(|e| e.to_string())
}

fn empty() -> Value {
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "Config".into());
    m.insert("clusters".into(), Value::Sequence(Vec::new()));
    m.insert("contexts".into(), Value::Sequence(Vec::new()));
    m.insert("users".into(), Value::Sequence(Vec::new()));
    m.insert("current-context".into(), "".into());
    m.insert("preferences".into(), Value::Mapping(Mapping::new()));
    Value::Mapping(m)
}

/// Replaces the body (`field`) of the entry named `name` in the list `list`, or appends one.
fn upsert(
    root: &mut Mapping,
    list: &str,
    name: &str,
    field: &str,
    body: Value,
) -> Result<(), String> {
    let entries = root
        .entry(list.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if entries.is_null() {
        *entries = Value::Sequence(Vec::new());
    }
    let entries = entries
        .as_sequence_mut()
        .ok_or(format!("`{list}` is not a list"))?;
    for entry in entries.iter_mut() {
        if entry.get("name").and_then(Value::as_str) == Some(name) {
            let m = entry
                .as_mapping_mut()
                .ok_or(format!("an entry of `{list}` is not a mapping"))?;
            m.insert(field.into(), body);
            return Ok(());
        }
    }
    let mut m = Mapping::new();
    m.insert("name".into(), name.into());
    m.insert(field.into(), body);
    entries.push(Value::Mapping(m));
    Ok(())
}

/// A kubeconfig cluster: where its API server is and how to trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub server: String,
    pub ca_file: Option<String>,
    /// `certificate-authority-data`: base64 of PEM.
    pub ca_data: Option<String>,
    pub insecure: bool,
}

/// The cluster named `name`, else the current context's.
pub fn cluster(text: &str, name: Option<&str>) -> Result<Cluster, String> {
    let doc: Value =
        serde_norway::from_str(text).map_err(|e| format!("not a kubeconfig (YAML): {e}"))?;
    let named = |list: &str, n: &str| {
        doc.get(list)
            .and_then(Value::as_sequence)
            .and_then(|s| {
                s.iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some(n))
            })
            .cloned()
    };
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let current = doc
                .get("current-context")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .ok_or("no --cluster and no current context")?;
            named("contexts", current)
                .and_then(|c| {
                    c.get("context")?
                        .get("cluster")?
                        .as_str()
                        .map(str::to_string)
                })
                .ok_or(format!("the current context {current:?} has no cluster"))?
        }
    };
    let c = named("clusters", &name).ok_or(format!("no cluster {name:?}"))?;
    let c = c
        .get("cluster")
        .ok_or(format!("cluster {name:?} is empty"))?;
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Cluster {
        server: s("server").ok_or(format!("cluster {name:?} has no server"))?,
        ca_file: s("certificate-authority"),
        ca_data: s("certificate-authority-data"),
        insecure: c
            .get("insecure-skip-tls-verify")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXISTING: &str = "apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://prod.example:6443
    certificate-authority-data: Q0E=
contexts:
- name: admin@prod
  context:
    cluster: prod
    user: admin
current-context: admin@prod
users:
- name: admin
  user:
    token: keep-me
- name: oidc
  user:
    exec:
      command: old
";

    #[test]
    fn replaces_its_user_and_keeps_everything_else() {
        let exec = serde_json::json!({"apiVersion": "client.authentication.k8s.io/v1", "command": "kubectl", "args": ["oidc-login", "get-token"], "interactiveMode": "Never"});
        let out = update(Some(EXISTING), "oidc", exec, Some(("oidc@prod", "prod"))).unwrap();
        let doc: Value = serde_norway::from_str(&out).unwrap();
        let users = doc["users"].as_sequence().unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0]["user"]["token"].as_str(), Some("keep-me"));
        assert_eq!(
            users[1]["user"]["exec"]["command"].as_str(),
            Some("kubectl")
        );
        assert_eq!(doc["contexts"].as_sequence().unwrap().len(), 2);
        assert_eq!(doc["current-context"].as_str(), Some("admin@prod"));
        assert!(
            out.find("clusters:").unwrap() < out.find("users:").unwrap(),
            "order kept"
        );
        let again = update(Some(&out), "oidc", serde_json::json!({"apiVersion": "client.authentication.k8s.io/v1", "command": "kubectl", "args": ["oidc-login", "get-token"], "interactiveMode": "Never"}), Some(("oidc@prod", "prod"))).unwrap();
        assert_eq!(again, out, "a second run changes nothing");
    }

    #[test]
    fn a_new_file_gets_the_context_as_current() {
        let out = update(
            None,
            "oidc",
            serde_json::json!({"command": "kubectl"}),
            Some(("c", "k")),
        )
        .unwrap();
        let doc: Value = serde_norway::from_str(&out).unwrap();
        assert_eq!(doc["current-context"].as_str(), Some("c"));
        assert_eq!(doc["kind"].as_str(), Some("Config"));
    }

    #[test]
    fn refuses_what_is_not_a_kubeconfig() {
        assert!(update(Some("- a\n- b\n"), "oidc", Json::Null, None).is_err());
        assert!(update(Some("users: 3\n"), "oidc", Json::Null, None).is_err());
        assert!(update(Some("a: [\n"), "oidc", Json::Null, None).is_err());
    }

    #[test]
    fn finds_the_current_cluster() {
        let c = cluster(EXISTING, None).unwrap();
        assert_eq!(c.server, "https://prod.example:6443");
        assert_eq!(c.ca_data.as_deref(), Some("Q0E="));
        assert!(cluster(EXISTING, Some("nope")).is_err());
    }
}
