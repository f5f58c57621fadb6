//! The built binary's admin commands that the admin layer added: `user edit`, a user's
//! sessions and authorizations, `user list` search and paging, `client tokens` and
//! `force-reauth`, `audit list` filters and paging, `audit export`, and the `cli:<unix user>`
//! actor. Rows the command line cannot make (sessions, refresh families, many audit events)
//! are written with the store on the same database file.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers a test module
// shares; failing loudly is what a test helper should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::cli::{field, users, Idp, Run};
use idp::clock::{Clock, SystemClock};
use idp::store::{AuditEvent, Family, RefreshToken, Session, SqliteStore, Store};

/// Runs `f` on the installation's database (the binary must have created it already).
fn with_store<T>(idp: &Idp, f: impl AsyncFnOnce(&SqliteStore) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!(
            "sqlite://{}",
            idp.data_dir().join("kubelogin-idp.db").display()
        );
        let store = SqliteStore::open(&url).await.unwrap();
        let out = f(&store).await;
        store.close().await;
        out
    })
}

fn user_id(idp: &Idp, name: &str) -> String {
    field(&idp.ok(&["user", "show", name]), "sub:")
        .unwrap()
        .to_string()
}

async fn live_family(s: &SqliteStore, id: &str, client_id: &str, user_id: &str) {
    let now = SystemClock.now();
    let f = Family {
        id: id.into(),
        client_id: client_id.into(),
        user_id: user_id.into(),
        scope: "openid groups".into(),
        auth_time: now,
        created_at: now,
        revoked_at: None,
    };
    let t = RefreshToken {
        token_hash: format!("hash-{id}"),
        family_id: id.into(),
        created_at: now,
        expires_at: now + 3600,
        rotated_at: None,
    };
    s.create_family(f, t).await.unwrap();
}

/// The `actor=` of each `audit list` line, newest first.
fn actors(idp: &Idp) -> Vec<String> {
    idp.ok(&["audit", "list"])
        .lines()
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("actor="))
                .unwrap()
                .to_string()
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn the_actor_of_a_command_is_the_unix_user() {
    use std::os::unix::fs::MetadataExt as _;
    let idp = Idp::new();
    let run = |env: &[(&str, &str)], group: &str| {
        let mut c = idp.cmd(&["group", "add", group]);
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.output().unwrap()).ok().to_string()
    };
    run(&[("USER", "carol"), ("LOGNAME", "other")], "a");
    run(&[("LOGNAME", "dave")], "b");
    run(&[("USER", "eve\nactor=root")], "c");
    run(&[], "d");
    // A file this process made belongs to the uid the binary runs as.
    let probe = idp.path().join("uid-probe");
    std::fs::write(&probe, "").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    assert_eq!(
        actors(&idp),
        [
            format!("cli:#{uid}"),
            "cli:eve_actor_root".to_string(),
            "cli:dave".to_string(),
            "cli:carol".to_string(),
        ]
    );
    let mine = idp.ok(&["audit", "list", "--actor", "cli:carol"]);
    assert_eq!(mine.lines().count(), 1, "{mine}");
    assert!(mine.contains("subject=a"), "{mine}");
}

#[test]
fn user_edit_changes_email_name_and_groups() {
    let idp = Idp::new();
    idp.ok(&["group", "add", "devs"]);
    idp.ok(&["group", "add", "ops"]);
    idp.ok(&[
        "user",
        "add",
        "alice",
        "--email",
        "a@example.com",
        "--group",
        "devs",
    ]);
    let out = idp.ok(&[
        "user",
        "edit",
        "alice",
        "--email",
        "alice@corp.example",
        "--name",
        "Alice L.",
        "--group",
        "ops",
        "--group",
        "devs",
    ]);
    assert!(out.starts_with("updated alice\n"), "{out}");
    assert_eq!(field(&out, "email:"), Some("alice@corp.example"));
    assert_eq!(field(&out, "name:"), Some("Alice L."));
    assert_eq!(field(&out, "groups:"), Some("devs ops"));
    let out = idp.ok(&["user", "edit", "alice", "--no-groups"]);
    assert_eq!(field(&out, "groups:"), Some(""));
    assert_eq!(field(&out, "email:"), Some("alice@corp.example"));

    let err = idp.fails(&["user", "edit", "alice", "--email", "nope", "--group", "ops"]);
    assert!(err.contains("email"), "{err}");
    assert!(idp
        .fails(&["user", "edit", "alice", "--group", "nope"])
        .contains("nope"));
    assert!(idp
        .fails(&["user", "edit", "bob", "--name", "B"])
        .contains("bob"));
    let show = idp.ok(&["user", "show", "alice"]);
    assert_eq!(
        field(&show, "groups:"),
        Some(""),
        "a refused edit changed nothing"
    );
    let updated = idp.ok(&["audit", "list", "--event", "user_updated"]);
    assert_eq!(updated.lines().count(), 2, "{updated}");
    assert!(
        updated
            .lines()
            .last()
            .unwrap()
            .ends_with(" email name groups"),
        "{updated}"
    );
}

#[test]
fn a_users_sessions_and_authorizations_with_revoke() {
    let idp = Idp::new();
    idp.ok(&[
        "client",
        "add",
        "kubectl",
        "--public",
        "--redirect-uri",
        "http://127.0.0.1:8000",
    ]);
    idp.ok(&["user", "add", "alice", "--email", "a@example.com"]);
    let sub = user_id(&idp, "alice");
    with_store(&idp, async |s| {
        let now = SystemClock.now();
        for id in ["aaaa1111", "bbbb2222"] {
            let session = Session {
                id_hash: id.into(),
                user_id: sub.clone(),
                auth_time: now,
                created_at: now,
                expires_at: now + 3600,
                last_used_at: now,
                ip: "203.0.113.9".into(),
                user_agent: "Mozilla/5.0 (X11; Linux x86_64)".into(),
            };
            s.create_session(session).await.unwrap();
        }
        s.save_consent(&sub, "kubectl", &["openid".into(), "groups".into()], now)
            .await
            .unwrap();
        live_family(s, "f1", "kubectl", &sub).await;
    });

    let out = idp.ok(&["user", "sessions", "alice"]);
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("SESSION"), "{out}");
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[1].contains("203.0.113.9") && rows[1].ends_with("(X11; Linux x86_64)"),
        "{out}"
    );
    assert!(idp
        .ok(&["user", "revoke-session", "alice", "aaaa1111"])
        .contains("ended session aaaa1111 of alice"));
    let out = idp.ok(&["user", "sessions", "alice"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("bbbb2222") && !out.contains("aaaa1111"),
        "{out}"
    );
    assert!(idp
        .fails(&["user", "revoke-session", "alice", "aaaa1111"])
        .contains("no session"));

    let out = idp.ok(&["user", "authorizations", "alice"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "kubectl");
    assert_eq!(row[2], "1", "one live family: {out}");
    assert_eq!(row[3..], ["openid", "groups"]);
    let out = idp.ok(&["user", "revoke-authorization", "alice", "kubectl"]);
    assert!(out.contains("1 refresh token families"), "{out}");
    assert_eq!(
        idp.ok(&["user", "authorizations", "alice"]).lines().count(),
        1
    );
    assert!(idp
        .fails(&["user", "revoke-authorization", "alice", "kubectl"])
        .contains("not authorized"));
    let events = idp.ok(&["audit", "list", "--subject", "alice"]);
    assert!(
        events
            .lines()
            .next()
            .unwrap()
            .contains(" authorization_revoked "),
        "{events}"
    );
    assert!(events.contains(" session_revoked "), "{events}");
}

#[test]
fn user_list_searches_and_pages() {
    let idp = Idp::new();
    for name in ["alice", "bob", "carol"] {
        idp.ok(&[
            "user",
            "add",
            name,
            "--email",
            &format!("{name}@example.com"),
        ]);
    }
    let names = |run: &Run| -> Vec<String> {
        run.ok()
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&idp.run(&["user", "list", "--search", "ARO"])),
        ["carol"]
    );
    let first = idp.run(&["user", "list", "--limit", "2"]);
    assert_eq!(names(&first), ["alice", "bob"]);
    assert!(
        first.stderr.contains("more users: --after bob"),
        "{first:#?}"
    );
    let rest = idp.run(&["user", "list", "--limit", "2", "--after", "bob"]);
    assert_eq!(names(&rest), ["carol"]);
    assert!(!rest.stderr.contains("more users"), "{rest:#?}");
    assert_eq!(users(&idp).len(), 3, "no flags: every user");
}

#[test]
fn client_tokens_and_forced_reauthentication() {
    let idp = Idp::new();
    idp.ok(&[
        "client",
        "add",
        "kubectl",
        "--public",
        "--redirect-uri",
        "http://127.0.0.1:8000",
    ]);
    idp.ok(&["user", "add", "alice", "--email", "a@example.com"]);
    let sub = user_id(&idp, "alice");
    with_store(&idp, async |s| live_family(s, "f1", "kubectl", &sub).await);
    let out = idp.ok(&["client", "tokens", "kubectl"]);
    assert_eq!(field(&out, "live refresh token families:"), Some("1"));
    assert!(out.lines().nth(2).unwrap().starts_with("alice "), "{out}");

    let out = idp.ok(&["client", "force-reauth", "kubectl"]);
    assert!(
        out.contains("revoked 1 sessions of client kubectl"),
        "{out}"
    );
    let out = idp.ok(&["client", "tokens", "kubectl"]);
    assert_eq!(field(&out, "live refresh token families:"), Some("0"));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(idp.fails(&["client", "tokens", "nope"]).contains("nope"));
    let ev = idp.ok(&["audit", "list", "--client", "kubectl"]);
    assert!(
        ev.lines()
            .next()
            .unwrap()
            .contains(" client_tokens_revoked "),
        "{ev}"
    );
}

#[test]
fn client_add_refuses_plain_http_off_loopback() {
    let idp = Idp::new();
    let err = idp.fails(&[
        "client",
        "add",
        "web",
        "--public",
        "--redirect-uri",
        "http://app.example/cb",
    ]);
    assert!(err.contains("https") && err.contains("loopback"), "{err}");
    let err = idp.fails(&[
        "client",
        "add",
        "web",
        "--confidential",
        "--redirect-uri",
        "https://app.example/cb",
        "--post-logout-redirect-uri",
        "http://app.example/bye",
    ]);
    assert!(err.contains("https"), "{err}");
    assert_eq!(idp.ok(&["client", "list"]), "");
    idp.ok(&[
        "client",
        "add",
        "web",
        "--confidential",
        "--redirect-uri",
        "https://app.example/cb",
    ]);
}

/// 1,500 failed logins by `=evil` (more than one CSV chunk) among 300 successes by bob, one a
/// day old, stamped around the wall clock (the CLI reads it for `--since 1h`).
fn audit_log(idp: &Idp) -> u64 {
    idp.ok(&["group", "add", "devs"]);
    let now = SystemClock.now();
    with_store(idp, async |s| {
        for i in 0..1800u64 {
            let (event, actor, ip) = if i % 6 == 0 {
                ("login_succeeded", "bob", "198.51.100.2")
            } else {
                ("login_failed", "=evil", "192.0.2.66")
            };
            let at = if i == 0 { now - 86_400 } else { now - 60 };
            let e = AuditEvent {
                at,
                event: event.into(),
                severity: "info".into(),
                actor: actor.into(),
                client_id: "kubectl".into(),
                ip: ip.into(),
                user_agent: "kubectl/1.32".into(),
                details: format!("n={i}"),
                ..Default::default()
            };
            s.record_audit(e).await.unwrap();
        }
    });
    now
}

#[test]
fn audit_list_filters_and_pages() {
    let idp = Idp::new();
    let now = audit_log(&idp);
    let count = |args: &[&str]| {
        let mut all = vec!["audit", "list", "--limit", "5000"];
        all.extend_from_slice(args);
        idp.ok(&all).lines().count()
    };
    assert_eq!(
        count(&["--outcome", "success"]),
        301,
        "bob's 300 and the group"
    );
    assert_eq!(count(&["--outcome", "failure"]), 1500, "more than one page");
    assert_eq!(count(&["--ip", "198.51.100.2"]), 300);
    assert_eq!(count(&["--user", "bob", "--since", "1h"]), 299);
    assert_eq!(
        count(&["--actor", "bob", "--until", &(now - 3600).to_string()]),
        1
    );
    assert_eq!(
        count(&["--client", "kubectl", "--event", "login_succeeded"]),
        300
    );
    assert_eq!(count(&["--subject", "devs"]), 1);
    let err = idp.fails(&["audit", "list", "--since", "last tuesday"]);
    assert!(err.contains("--since"), "{err}");

    let first = idp.run(&["audit", "list", "--limit", "2", "--actor", "bob"]);
    assert_eq!(first.ok().lines().count(), 2);
    let cursor = first
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("more events: --before "))
        .unwrap_or_else(|| panic!("a cursor on stderr: {first:#?}"))
        .to_string();
    let second = idp.ok(&[
        "audit", "list", "--limit", "2", "--actor", "bob", "--before", &cursor,
    ]);
    assert_eq!(second.lines().count(), 2);
    assert!(
        first.ok().lines().all(|l| !second.contains(l)),
        "pages do not overlap"
    );
}

#[test]
fn audit_export_is_the_whole_filtered_set_as_safe_csv() {
    let idp = Idp::new();
    audit_log(&idp);
    let csv = idp.ok(&["audit", "export", "--outcome", "failure"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,at,event,severity,actor,subject,client_id,ip,user_agent,details")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 1500, "every match, past any page size");
    assert!(rows.iter().all(|r| r.len() == 10 && r[2] == "login_failed"));
    assert!(
        rows.iter().all(|r| r[4] == "'=evil"),
        "formula escaped: {:?}",
        rows[0]
    );
    let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, each once"
    );
    // `audit list --csv` with a large enough limit prints the very same bytes.
    assert_eq!(
        idp.ok(&[
            "audit",
            "list",
            "--csv",
            "--outcome",
            "failure",
            "--limit",
            "5000"
        ]),
        csv
    );
}
