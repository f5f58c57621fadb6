//! RBAC for the OIDC user and groups: a ClusterRoleBinding (or, in a namespace, a RoleBinding)
//! per subject, with the username and groups exactly as kube-apiserver will derive them
//! (prefixes included). Kubernetes docs, "Using RBAC Authorization" > "RoleBinding and
//! ClusterRoleBinding": a subject of kind User or Group is matched by its string.

use serde_json::json;

/// The roles bound, and where.
pub struct Roles<'a> {
    /// The ClusterRole bound to the user.
    pub user: &'a str,
    /// The ClusterRole bound to each group.
    pub group: &'a str,
    /// RoleBindings in this namespace instead of ClusterRoleBindings.
    pub namespace: Option<&'a str>,
}

/// `(object name, YAML)` for the user and each group.
pub fn bindings(username: &str, groups: &[String], roles: &Roles) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut one = |prefix: &str, kind: &str, subject: &str, role: &str| {
        let name = format!("{prefix}-{}", object_name(subject));
        let mut metadata = json!({"name": name});
        let binding_kind = match roles.namespace {
            Some(ns) => {
                metadata["namespace"] = json!(ns);
                "RoleBinding"
            }
            None => "ClusterRoleBinding",
        };
        let object = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": binding_kind,
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
        });
        if let Ok(yaml) = serde_norway::to_string(&object) {
            out.push((name, yaml));
        }
    };
    one("oidc-user", "User", username, roles.user);
    for g in groups {
        one("oidc-group", "Group", g, roles.group);
    }
    out
}

/// An object name (RFC 1123 subdomain characters, at most 253) from a username or group.
fn object_name(s: &str) -> String {
    let name = name_chars(s, 200);
    if name.is_empty() {
        "x".to_string()
    } else {
        name
    }
}

/// The first `max` characters of `s` as RFC 1123 name characters: ASCII letters and digits
/// lower-cased, anything else a `-`, with no `-` at either end.
pub(super) fn name_chars(s: &str, max: usize) -> String {
    let name: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    name.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_binding_per_subject_with_the_prefixed_names() {
        let roles = Roles {
            user: "cluster-admin",
            group: "view",
            namespace: None,
        };
        let b = bindings("oidc:alice@example.com", &["oidc:dev".into()], &roles);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].0, "oidc-user-oidc-alice-example-com");
        let doc: serde_norway::Value = serde_norway::from_str(&b[0].1).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("ClusterRoleBinding"));
        assert_eq!(
            doc["subjects"][0]["name"].as_str(),
            Some("oidc:alice@example.com")
        );
        assert_eq!(doc["roleRef"]["name"].as_str(), Some("cluster-admin"));
        let doc: serde_norway::Value = serde_norway::from_str(&b[1].1).unwrap();
        assert_eq!(doc["subjects"][0]["kind"].as_str(), Some("Group"));
        let ns = Roles {
            namespace: Some("team"),
            ..roles
        };
        let b = bindings("u", &[], &ns);
        let doc: serde_norway::Value = serde_norway::from_str(&b[0].1).unwrap();
        assert_eq!(
            (doc["kind"].as_str(), doc["metadata"]["namespace"].as_str()),
            (Some("RoleBinding"), Some("team"))
        );
    }
}
