//! The protocol decisions of the store as pure functions: no I/O, no SQL, no async. The login
//! throttle's counters are here too (`throttle`).
//!
//! A backend locks what the operation needs, loads the rows, asks the rule here what to do and
//! writes what the rule decided, all in one transaction. Every backend calls the same rules, so
//! refresh reuse, code replay, device polling and what a revocation ends are decided in one
//! place and tested without a database (the tests below), and the conformance suite
//! (`tests/store.rs`) only checks that a backend applies them atomically.

use super::{AuthCode, DeviceCode, DevicePoll, DeviceStatus, Family, RefreshToken};

// The login throttle's lock state machine (a file of its own: it is a different subject).
mod throttle;
pub use throttle::*;

/// What to do with a refresh token presented for rotation.
#[derive(Debug, Clone, PartialEq)]
pub enum RotationRule {
    /// The token belongs to another client: refuse, write nothing.
    WrongClient,
    /// Unknown, expired or revoked: refuse, write nothing.
    Invalid,
    /// The family's user is disabled: revoke the family, then refuse.
    RevokeAndRefuse,
    /// Rotated moments ago: a retry after a lost response. Hand back the kept successor (still
    /// encrypted; `None` once purged), write nothing.
    WithinGrace(Option<String>),
    /// Rotated before the grace window: reuse of a stolen or replayed token. Revoke the family.
    Reused,
    /// Current: mark it rotated, store the successor, record the audit event.
    Rotate,
}

/// Decides a refresh-token rotation (RFC 6749 §6, RFC 9700 §4.14.2).
///
/// `successor` is the kept (encrypted) successor of the token if it was rotated before.
pub fn rotation(
    token: &RefreshToken,
    family: &Family,
    successor: Option<&str>,
    presented_by: &str,
    user_disabled: bool,
    now: u64,
    grace_secs: u64,
) -> RotationRule {
    // RFC 6749 §6: the token must have been issued to the authenticated client; a foreign client
    // must not be able to burn it, so nothing is written.
    if family.client_id != presented_by {
        return RotationRule::WrongClient;
    }
    if family.revoked_at.is_some() || token.expires_at <= now {
        return RotationRule::Invalid;
    }
    if user_disabled {
        return RotationRule::RevokeAndRefuse;
    }
    match token.rotated_at {
        None => RotationRule::Rotate,
        // RFC 9700 §4.14.2: a refresh token used twice means one of the two users is not the
        // client; outside a short window for a lost response, the whole family is revoked.
        Some(at) if now.saturating_sub(at) <= grace_secs => {
            RotationRule::WithinGrace(successor.map(str::to_string))
        }
        Some(_) => RotationRule::Reused,
    }
}

/// An authorization code as stored: the code and what redeeming it left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCode {
    pub code: AuthCode,
    pub used_at: Option<u64>,
    /// The refresh family its first redemption produced.
    pub family_id: Option<String>,
}

/// What to do with an authorization code presented at the token endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum RedemptionRule {
    NotFound,
    /// Past its lifetime: refuse, write nothing.
    Expired,
    /// Used before: revoke the family it produced, if any (RFC 6749 §4.1.2: "the authorization
    /// server ... SHOULD revoke (when possible) all tokens previously issued based on that
    /// authorization code").
    Replayed {
        revoke_family: Option<String>,
    },
    /// First use: mark it used.
    Redeem,
}

/// Decides a code redemption (RFC 6749 §4.1.2: a code is used at most once).
pub fn redemption(stored: Option<&StoredCode>, now: u64) -> RedemptionRule {
    let Some(s) = stored else {
        return RedemptionRule::NotFound;
    };
    if s.used_at.is_some() {
        return RedemptionRule::Replayed {
            revoke_family: s.family_id.clone(),
        };
    }
    if s.code.expires_at <= now {
        return RedemptionRule::Expired;
    }
    RedemptionRule::Redeem
}

/// What a poll writes back to the device code's row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceUpdate {
    pub last_polled_at: u64,
    pub interval: u64,
    pub status: DeviceStatus,
}

/// Decides one device-code poll (RFC 8628 §3.5). `None` (not found) and a consumed code answer
/// `NotFound`; an expired one `Expired`, both without a write. Every other poll records its time,
/// the (possibly raised) interval and the new status: an approval or a denial is consumed by the
/// poll that reports it, so two pollers cannot both get tokens.
pub fn device_poll(code: Option<&DeviceCode>, now: u64) -> (DevicePoll, Option<DeviceUpdate>) {
    let Some(d) = code else {
        return (DevicePoll::NotFound, None);
    };
    if d.status == DeviceStatus::Consumed {
        return (DevicePoll::NotFound, None);
    }
    if d.expires_at <= now {
        return (DevicePoll::Expired, None);
    }
    // RFC 8628 §3.5: a client polling faster than the interval gets slow_down, and "the interval
    // MUST be increased by 5 seconds for this and all subsequent requests".
    let too_fast = d
        .last_polled_at
        .is_some_and(|t| now < t.saturating_add(d.interval));
    let (outcome, interval, status) = match d.status {
        DeviceStatus::Pending if too_fast => (
            DevicePoll::SlowDown,
            d.interval
                .saturating_add(shared::device::SLOW_DOWN_INCREMENT_SECS),
            DeviceStatus::Pending,
        ),
        DeviceStatus::Pending => (DevicePoll::Pending, d.interval, DeviceStatus::Pending),
        DeviceStatus::Denied => (DevicePoll::Denied, d.interval, DeviceStatus::Consumed),
        DeviceStatus::Approved => (
            DevicePoll::Approved(Box::new(d.clone())),
            d.interval,
            DeviceStatus::Consumed,
        ),
        DeviceStatus::Consumed => return (DevicePoll::NotFound, None),
    };
    let update = DeviceUpdate {
        last_polled_at: now,
        interval,
        status,
    };
    (outcome, Some(update))
}

/// An administrative or self-service change that ends access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessChange {
    /// `user disable`: whoever holds the user's tokens or sessions is out.
    DisableUser,
    /// `user enable`: nothing is given back.
    EnableUser,
    /// A new password: whoever knew the old one is out.
    PasswordReset,
    /// The user's families go with the user.
    DeleteUser,
    /// `client revoke-all` (forced re-authentication).
    ClientRevokeAll,
    /// A user withdraws their authorization of one client (account page).
    RevokeAuthorization,
}

/// Whose rows a step of a [`RevocationPlan`] touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Nothing,
    /// Every row of the user.
    User,
    /// Every row of the client.
    Client,
    /// The user's rows at the client.
    UserAtClient,
    /// The sessions of every user who has a family of, or a consent to, the client.
    UsersOfClient,
}

/// What a backend does, in one transaction with the change itself, to end access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationPlan {
    /// Refresh families marked revoked (kept for the audit trail and replay detection).
    pub revoke_families: Scope,
    /// Refresh families deleted with their tokens.
    pub delete_families: Scope,
    /// Browser sessions ended.
    pub end_sessions: Scope,
    /// Consents forgotten, so the next authorization asks again.
    pub forget_consents: Scope,
    /// The client's `tokens_valid_after` becomes now: access tokens issued before are refused.
    pub invalidate_client_tokens: bool,
}

const NOTHING: RevocationPlan = RevocationPlan {
    revoke_families: Scope::Nothing,
    delete_families: Scope::Nothing,
    end_sessions: Scope::Nothing,
    forget_consents: Scope::Nothing,
    invalidate_client_tokens: false,
};

/// What `change` ends.
pub fn revocation_plan(change: AccessChange) -> RevocationPlan {
    match change {
        AccessChange::EnableUser => NOTHING,
        // One rule for disable and password reset: every family revoked, every session ended.
        AccessChange::DisableUser | AccessChange::PasswordReset => RevocationPlan {
            revoke_families: Scope::User,
            end_sessions: Scope::User,
            ..NOTHING
        },
        AccessChange::DeleteUser => RevocationPlan {
            delete_families: Scope::User,
            end_sessions: Scope::User,
            forget_consents: Scope::User,
            ..NOTHING
        },
        // Forced re-authentication also signs out every user who used the client and forgets
        // consent, so the next authorization goes through the login page. The sessions are
        // ended before the consents are forgotten (the plan's order is the order to apply).
        AccessChange::ClientRevokeAll => RevocationPlan {
            revoke_families: Scope::Client,
            end_sessions: Scope::UsersOfClient,
            forget_consents: Scope::Client,
            invalidate_client_tokens: true,
            ..NOTHING
        },
        AccessChange::RevokeAuthorization => RevocationPlan {
            revoke_families: Scope::UserAtClient,
            forget_consents: Scope::UserAtClient,
            ..NOTHING
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(revoked_at: Option<u64>) -> Family {
        Family {
            id: "f1".into(),
            client_id: "kubectl".into(),
            user_id: "u1".into(),
            scope: "openid".into(),
            auth_time: 100,
            created_at: 100,
            revoked_at,
        }
    }

    fn token(expires_at: u64, rotated_at: Option<u64>) -> RefreshToken {
        RefreshToken {
            token_hash: "h".into(),
            family_id: "f1".into(),
            created_at: 100,
            expires_at,
            rotated_at,
            ip: String::new(),
            user_agent: String::new(),
        }
    }

    #[test]
    fn a_current_token_rotates() {
        let r = rotation(
            &token(1000, None),
            &family(None),
            None,
            "kubectl",
            false,
            500,
            10,
        );
        assert_eq!(r, RotationRule::Rotate);
    }

    #[test]
    fn another_client_cannot_burn_a_token_even_a_dead_one() {
        let t = token(1000, Some(200));
        let r = rotation(&t, &family(Some(300)), None, "other", false, 500, 10);
        assert_eq!(r, RotationRule::WrongClient);
    }

    #[test]
    fn expired_and_revoked_tokens_are_invalid() {
        let r = rotation(
            &token(500, None),
            &family(None),
            None,
            "kubectl",
            false,
            500,
            10,
        );
        assert_eq!(r, RotationRule::Invalid, "expiry at now is expired");
        let r = rotation(
            &token(1000, None),
            &family(Some(400)),
            None,
            "kubectl",
            false,
            500,
            10,
        );
        assert_eq!(r, RotationRule::Invalid);
        // A revoked family is not revoked again, even when its user is disabled.
        let r = rotation(
            &token(1000, None),
            &family(Some(400)),
            None,
            "kubectl",
            true,
            500,
            10,
        );
        assert_eq!(r, RotationRule::Invalid);
    }

    #[test]
    fn a_disabled_users_family_is_revoked() {
        let r = rotation(
            &token(1000, None),
            &family(None),
            None,
            "kubectl",
            true,
            500,
            10,
        );
        assert_eq!(r, RotationRule::RevokeAndRefuse);
        let r = rotation(
            &token(1000, Some(499)),
            &family(None),
            Some("s"),
            "kubectl",
            true,
            500,
            10,
        );
        assert_eq!(
            r,
            RotationRule::RevokeAndRefuse,
            "no successor for a disabled user"
        );
    }

    #[test]
    fn a_retry_within_grace_gets_the_kept_successor() {
        let t = token(1000, Some(490));
        let r = rotation(&t, &family(None), Some("sealed"), "kubectl", false, 500, 10);
        assert_eq!(r, RotationRule::WithinGrace(Some("sealed".into())));
        let r = rotation(&t, &family(None), None, "kubectl", false, 500, 10);
        assert_eq!(r, RotationRule::WithinGrace(None), "purged successor");
    }

    #[test]
    fn reuse_after_grace_revokes() {
        let t = token(1000, Some(489));
        let r = rotation(&t, &family(None), Some("sealed"), "kubectl", false, 500, 10);
        assert_eq!(r, RotationRule::Reused);
        let r = rotation(
            &token(1000, Some(499)),
            &family(None),
            None,
            "kubectl",
            false,
            500,
            0,
        );
        assert_eq!(
            r,
            RotationRule::Reused,
            "no grace window: any reuse revokes"
        );
    }

    fn code(expires_at: u64, used_at: Option<u64>, family_id: Option<&str>) -> StoredCode {
        StoredCode {
            code: AuthCode {
                code_hash: "c".into(),
                client_id: "kubectl".into(),
                user_id: "u1".into(),
                redirect_uri: "http://127.0.0.1:8000/".into(),
                scope: "openid".into(),
                nonce: None,
                code_challenge: None,
                auth_time: 100,
                created_at: 100,
                expires_at,
            },
            used_at,
            family_id: family_id.map(str::to_string),
        }
    }

    #[test]
    fn code_redemption_branches() {
        assert_eq!(redemption(None, 100), RedemptionRule::NotFound);
        assert_eq!(
            redemption(Some(&code(200, None, None)), 150),
            RedemptionRule::Redeem
        );
        assert_eq!(
            redemption(Some(&code(200, None, None)), 200),
            RedemptionRule::Expired
        );
        assert_eq!(
            redemption(Some(&code(200, Some(150), Some("f1"))), 160),
            RedemptionRule::Replayed {
                revoke_family: Some("f1".into())
            }
        );
        // A replay is a replay even after expiry, and still revokes what the code produced.
        assert_eq!(
            redemption(Some(&code(200, Some(150), Some("f1"))), 900),
            RedemptionRule::Replayed {
                revoke_family: Some("f1".into())
            }
        );
        assert_eq!(
            redemption(Some(&code(200, Some(150), None)), 160),
            RedemptionRule::Replayed {
                revoke_family: None
            }
        );
    }

    fn device(status: DeviceStatus, last_polled_at: Option<u64>) -> DeviceCode {
        DeviceCode {
            device_code_hash: "d".into(),
            user_code: "BCDFGHJK".into(),
            client_id: "kubectl".into(),
            scope: "openid".into(),
            code_challenge: None,
            created_at: 100,
            expires_at: 700,
            interval: 5,
            last_polled_at,
            status,
            user_id: Some("u1".into()),
            auth_time: Some(100),
            request_ip: String::new(),
            request_user_agent: String::new(),
        }
    }

    fn update(interval: u64, status: DeviceStatus) -> Option<DeviceUpdate> {
        Some(DeviceUpdate {
            last_polled_at: 200,
            interval,
            status,
        })
    }

    #[test]
    fn device_poll_pending_and_slow_down() {
        let d = device(DeviceStatus::Pending, None);
        assert_eq!(
            device_poll(Some(&d), 200),
            (DevicePoll::Pending, update(5, DeviceStatus::Pending))
        );
        let d = device(DeviceStatus::Pending, Some(195));
        assert_eq!(
            device_poll(Some(&d), 200),
            (DevicePoll::Pending, update(5, DeviceStatus::Pending)),
            "exactly the interval is not too fast"
        );
        let d = device(DeviceStatus::Pending, Some(196));
        let raised = 5 + shared::device::SLOW_DOWN_INCREMENT_SECS;
        assert_eq!(
            device_poll(Some(&d), 200),
            (DevicePoll::SlowDown, update(raised, DeviceStatus::Pending))
        );
    }

    #[test]
    fn device_poll_consumes_a_decision_once() {
        let d = device(DeviceStatus::Approved, Some(196));
        assert_eq!(
            device_poll(Some(&d), 200),
            (
                DevicePoll::Approved(Box::new(d.clone())),
                update(5, DeviceStatus::Consumed)
            ),
            "an approval is not held back by slow_down"
        );
        let d = device(DeviceStatus::Denied, None);
        assert_eq!(
            device_poll(Some(&d), 200),
            (DevicePoll::Denied, update(5, DeviceStatus::Consumed))
        );
        let d = device(DeviceStatus::Consumed, None);
        assert_eq!(device_poll(Some(&d), 200), (DevicePoll::NotFound, None));
        assert_eq!(device_poll(None, 200), (DevicePoll::NotFound, None));
    }

    #[test]
    fn device_poll_after_expiry_writes_nothing() {
        let d = device(DeviceStatus::Approved, None);
        assert_eq!(device_poll(Some(&d), 700), (DevicePoll::Expired, None));
    }

    #[test]
    fn what_each_change_ends() {
        let p = revocation_plan(AccessChange::DisableUser);
        assert_eq!(p, revocation_plan(AccessChange::PasswordReset));
        assert_eq!(
            (p.revoke_families, p.end_sessions),
            (Scope::User, Scope::User)
        );
        assert_eq!(
            p.forget_consents,
            Scope::Nothing,
            "consent survives a disable"
        );
        assert_eq!(revocation_plan(AccessChange::EnableUser), NOTHING);

        let p = revocation_plan(AccessChange::DeleteUser);
        assert_eq!(p.delete_families, Scope::User);
        assert_eq!(p.end_sessions, Scope::User);

        let p = revocation_plan(AccessChange::ClientRevokeAll);
        assert_eq!(p.revoke_families, Scope::Client);
        assert_eq!(p.end_sessions, Scope::UsersOfClient);
        assert_eq!(p.forget_consents, Scope::Client);
        assert!(p.invalidate_client_tokens);

        let p = revocation_plan(AccessChange::RevokeAuthorization);
        assert_eq!(p.revoke_families, Scope::UserAtClient);
        assert_eq!(p.forget_consents, Scope::UserAtClient);
        assert_eq!(p.end_sessions, Scope::Nothing, "other clients keep working");
        assert!(!p.invalidate_client_tokens);
    }
}
