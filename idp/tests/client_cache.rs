//! The client cache (`state::ClientCache`): a client change made through this process's store is
//! seen at once; one made by another replica on the same database within a second.

use super::common::*;
use axum::http::StatusCode;
use idp::testing::CONFIDENTIAL_CLIENT;

async fn client_credentials(h: &Harness, secret: &str) -> StatusCode {
    h.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", CONFIDENTIAL_CLIENT),
        ("client_secret", secret),
    ])
    .await
    .status
}

#[tokio::test]
async fn a_client_change_on_another_replica_is_seen_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    // Two replicas: two stores and states on one database, as two `serve` processes have.
    let a = harness_on(&url).await;
    let b = harness_on(&url).await;
    let old = idp::testing::seed(a.state.store.as_ref(), a.clock_now()).await;
    assert_eq!(client_credentials(&a, &old).await, StatusCode::OK);
    assert_eq!(client_credentials(&b, &old).await, StatusCode::OK);

    // The secret is rotated on B: B refuses the old one at once.
    let new = "a-new-client-secret-of-enough-length";
    b.state
        .store
        .set_client_secret_hash(CONFIDENTIAL_CLIENT, &idp::crypto::hash_secret(new))
        .await
        .unwrap();
    assert_eq!(client_credentials(&b, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(client_credentials(&b, new).await, StatusCode::OK);

    // A kept the client it read; a second later it has compared the version and read it again.
    a.clock.advance(1);
    assert_eq!(client_credentials(&a, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(client_credentials(&a, new).await, StatusCode::OK);
}
