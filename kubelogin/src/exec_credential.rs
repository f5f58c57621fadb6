//! The ExecCredential kubectl reads from stdout, and the `KUBERNETES_EXEC_INFO` it sends.
//!
//! client.authentication.k8s.io v1 and v1beta1; the answer uses the apiVersion kubectl asked for.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ExecInfoError, Result};

pub const V1: &str = "client.authentication.k8s.io/v1";
pub const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// What kubectl told us in `KUBERNETES_EXEC_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    pub api_version: &'static str,
    /// `spec.interactive`; `None` when kubectl did not say (no env var).
    pub interactive: Option<bool>,
}

#[derive(Deserialize)]
struct RawExecInfo {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    spec: Option<RawSpec>,
}

#[derive(Deserialize)]
struct RawSpec {
    #[serde(default)]
    interactive: Option<bool>,
}

/// Reads `KUBERNETES_EXEC_INFO`. Unset or empty means v1beta1, as kubelogin does (kubectl
/// before 1.20 did not send it); anything else must be a supported ExecCredential.
pub fn parse_exec_info(raw: Option<&str>) -> Result<ExecInfo> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(ExecInfo {
            api_version: V1BETA1,
            interactive: None,
        });
    };
    let info: RawExecInfo =
        serde_json::from_str(raw).map_err(|e| Error::ExecInfo(ExecInfoError::NotJson(e)))?;
    let api_version = match info.api_version.as_str() {
        V1 => V1,
        V1BETA1 => V1BETA1,
        "" => return Err(Error::ExecInfo(ExecInfoError::NoApiVersion)),
        other => {
            return Err(Error::ExecInfo(ExecInfoError::UnsupportedApiVersion {
                found: other.to_string(),
                supported: [V1, V1BETA1],
            }))
        }
    };
    Ok(ExecInfo {
        api_version,
        interactive: info.spec.and_then(|s| s.interactive),
    })
}

#[derive(Serialize)]
struct ExecCredential<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    spec: Spec,
    status: Status<'a>,
}

#[derive(Serialize)]
struct Spec {
    interactive: bool,
}

#[derive(Serialize)]
struct Status<'a> {
    #[serde(
        rename = "expirationTimestamp",
        skip_serializing_if = "Option::is_none"
    )]
    expiration_timestamp: Option<String>,
    token: &'a str,
}

/// The ExecCredential JSON (one line, newline-terminated) for stdout.
pub fn render(api_version: &str, token: &str, expiry: Option<DateTime<Utc>>) -> String {
    let cred = ExecCredential {
        kind: "ExecCredential",
        api_version,
        // kubelogin (Go) always emits the zero spec; kubectl ignores it on output.
        spec: Spec { interactive: false },
        status: Status {
            expiration_timestamp: expiry.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            token,
        },
    };
    // Serialising plain strings cannot fail; an empty object is still valid output.
    let mut out = serde_json::to_string(&cred).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn empty_means_v1beta1() {
        assert_eq!(parse_exec_info(None).unwrap().api_version, V1BETA1);
        assert_eq!(parse_exec_info(Some("")).unwrap().api_version, V1BETA1);
    }

    #[test]
    fn v1_with_interactive() {
        let info = parse_exec_info(Some(
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
        ))
        .unwrap();
        assert_eq!(info.api_version, V1);
        assert_eq!(info.interactive, Some(false));
    }

    #[test]
    fn malformed_or_unknown_is_an_error() {
        assert!(parse_exec_info(Some("{")).is_err());
        assert!(parse_exec_info(Some(
            r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#
        ))
        .is_err());
        assert!(parse_exec_info(Some(r#"{"spec":{}}"#)).is_err());
    }

    #[test]
    fn renders_rfc3339_expiry() {
        let t = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        let out = render(V1, "tok", Some(t));
        assert_eq!(
            out,
            "{\"kind\":\"ExecCredential\",\"apiVersion\":\"client.authentication.k8s.io/v1\",\"spec\":{\"interactive\":false},\"status\":{\"expirationTimestamp\":\"2030-01-02T03:04:05Z\",\"token\":\"tok\"}}\n"
        );
    }
}
