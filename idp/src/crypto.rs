//! Random secrets, hashes for secrets at rest, and argon2id passwords.
//!
//! High-entropy secrets (codes, refresh tokens, client secrets, session ids) are stored as their
//! SHA-256: they cannot be guessed, so a slow hash adds nothing and would cost every token
//! request. Passwords are low-entropy and get argon2id (RFC 9106).

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `bytes` random bytes from the OS generator, base64url encoded.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    shared::jwt::b64url(&buf)
}

/// A random string of `len` characters drawn uniformly from `alphabet` (rejection sampling, so
/// no character is more likely than another).
pub fn random_from_alphabet(alphabet: &[u8], len: usize) -> String {
    let n = alphabet.len();
    let limit = 256 - (256 % n);
    let mut out = String::with_capacity(len);
    let mut rng = rand::rngs::OsRng;
    while out.len() < len {
        let mut b = [0u8; 1];
        rng.fill_bytes(&mut b);
        let v = b[0] as usize;
        if v < limit {
            out.push(alphabet[v % n] as char);
        }
    }
    out
}

/// The hex SHA-256 under which a high-entropy secret is stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality for secrets compared in memory.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// An argon2id PHC string for a password (RFC 9106 with the argon2 crate's OWASP defaults).
pub fn hash_password(password: &str) -> Result<String, crate::error::IdpError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| crate::error::IdpError::PasswordHash)
}

/// Checks a password against a stored PHC string; false on any mismatch or malformed hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        parsed.algorithm.as_str().parse::<Algorithm>(),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let memory = argon2_memory(params.block_count());
    if Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
        .is_err()
    {
        return false;
    }
    out.as_slice().ct_eq(expected.as_bytes()).into()
}

/// Working memory for one argon2 computation (19 MiB with the default parameters). glibc keeps
/// freed blocks of that size in its arenas, so a few logins used to leave the server at 100+
/// MiB; a request above glibc's largest mmap threshold (32 MiB on 64-bit) is always served by
/// mmap and unmapped on free, and only the blocks argon2 writes become resident.
fn argon2_memory(blocks: usize) -> Vec<Block> {
    const ALWAYS_MMAPPED: usize = 33 << 20;
    let mut v = Vec::with_capacity(blocks.max(ALWAYS_MMAPPED / std::mem::size_of::<Block>()));
    v.resize(blocks, Block::default());
    v
}

/// A hash to verify against when the account does not exist, so that a login for an unknown
/// user costs as much as one for a known user (no user enumeration by timing).
pub fn dummy_password_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Kq5cW8rc3WcB7w8xqzv1i8bH2ZbK4y3rJzv8v0n7dXg"
}

/// A generated password for new accounts: 20 characters from an unambiguous alphabet.
pub fn generate_password() -> String {
    random_from_alphabet(
        b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789",
        20,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn verifies_hashes_made_with_other_parameters() {
        let params = Params::new(8192, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw-with-other-params", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("pw-with-other-params", &phc));
        assert!(!verify_password("pw-with-other-paramz", &phc));
    }

    #[test]
    fn dummy_hash_is_well_formed_and_matches_nothing_likely() {
        assert!(PasswordHash::new(dummy_password_hash()).is_ok());
        assert!(!verify_password("", dummy_password_hash()));
    }

    #[test]
    fn alphabet_sampling_uses_only_the_alphabet() {
        let s = random_from_alphabet(b"AB", 64);
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| b == b'A' || b == b'B'));
    }
}
