//! Random secrets, hashes for secrets at rest, argon2id passwords, and the key that encrypts
//! signing keys at rest.
//!
//! High-entropy secrets (codes, refresh tokens, client secrets, session ids) are stored as their
//! SHA-256: they cannot be guessed, so a slow hash adds nothing and would cost every token
//! request. Passwords are low-entropy and get argon2id (RFC 9106). Private signing keys must be
//! read back, so they are encrypted instead, when the operator gives a key encryption key.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::elliptic_curve::zeroize::Zeroizing;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use std::path::Path;

use crate::error::IdpError;

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

/// The environment variable (and, as `--key-encryption-key-file`, the flag) naming the file with
/// the key that encrypts signing keys at rest.
pub const KEK_VARIABLE: &str = "KEY_ENCRYPTION_KEY_FILE";
/// How a signing key encrypted at rest starts in the database: a version, so the format can
/// change, then base64url(nonce || ciphertext || tag).
pub const SEALED_PREFIX: &str = "enc:v1:";
/// What every sealed format, present or future, starts with.
const SEALED_MARK: &str = "enc:";
/// The file holds base64 of 32 bytes, and some whitespace; anything much larger is not a KEK.
const KEK_FILE_MAX_BYTES: u64 = 1024;
const KEK_HOW_TO: &str =
    "it must hold the base64 of 32 random bytes; make one with `head -c32 /dev/urandom | base64 > kek && chmod 600 kek`";

/// Whether a stored signing key is encrypted (in this or any later format).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_MARK)
}

/// The key encryption key (KEK): AES-256-GCM (NIST SP 800-38D) from ring, a random 96-bit
/// nonce per sealed key (few keys are ever sealed under one KEK, far below the 2^32 random
/// nonces SP 800-38D §8.3 allows), and the kid as associated data so a sealed key cannot be
/// moved to another row.
pub struct KeyEncryptionKey {
    key: LessSafeKey,
}

/// Key material never reaches logs.
impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey(..)")
    }
}

impl KeyEncryptionKey {
    /// Reads a KEK file: base64 of exactly 32 bytes, not readable or writable by other users.
    pub fn from_file(path: &Path) -> Result<Self, IdpError> {
        let refuse =
            |why: String| IdpError::Config(format!("{KEK_VARIABLE} {}: {why}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                return Err(refuse(format!(
                    "other users can access it (mode {mode:03o}); `chmod 600` it"
                )));
            }
        }
        if !meta.is_file() || meta.len() > KEK_FILE_MAX_BYTES {
            return Err(refuse(format!("not a key file; {KEK_HOW_TO}")));
        }
        let text = Zeroizing::new(std::fs::read(path).map_err(|e| refuse(e.to_string()))?);
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim_ascii())
                .map_err(|_| refuse(format!("not base64; {KEK_HOW_TO}")))?,
        );
        let bytes: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| refuse(format!("holds {} bytes, not 32; {KEK_HOW_TO}", bytes.len())))?;
        Self::from_bytes(bytes)
    }

    /// A KEK from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, IdpError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| IdpError::Config("cannot use the key encryption key".into()))?;
        Ok(KeyEncryptionKey {
            key: LessSafeKey::new(key),
        })
    }

    /// Encrypts `plaintext`, bound to `kid`, into `enc:v1:<base64url(nonce || ciphertext || tag)>`.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<String, IdpError> {
        let failed = || IdpError::Config("encrypting a signing key failed".into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| failed())?;
        let mut body = Zeroizing::new(plaintext.to_vec());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                body.as_mut_slice(),
            )
            .map_err(|_| failed())?;
        let mut out = Vec::with_capacity(NONCE_LEN + body.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&out)))
    }

    /// Decrypts what `seal` made for `kid`. Fails for another KEK, another kid, or any change.
    pub fn open(&self, kid: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, IdpError> {
        let Some(b64) = sealed.strip_prefix(SEALED_PREFIX) else {
            let format = sealed.split(':').take(2).collect::<Vec<_>>().join(":");
            return Err(IdpError::Config(format!(
                "signing key {kid} is encrypted in format {format:?}, which this kubelogin-idp                  does not know; upgrade it"
            )));
        };
        let corrupt = || {
            IdpError::Config(format!(
                "signing key {kid} cannot be decrypted with {KEK_VARIABLE}: the file is not the                  key it was encrypted with, or the database row was altered"
            ))
        };
        let mut data = Zeroizing::new(URL_SAFE_NO_PAD.decode(b64).map_err(|_| corrupt())?);
        if data.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(corrupt());
        }
        let (nonce, body) = data.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), body)
            .map_err(|_| corrupt())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
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

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes(&[byte; 32]).unwrap()
    }

    const PEM: &[u8] = b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n";

    #[test]
    fn sealed_keys_round_trip_and_hold_no_plaintext() {
        let k = kek(1);
        let sealed = k.seal("kid-1", PEM).unwrap();
        assert!(sealed.starts_with("enc:v1:"), "{sealed}");
        assert!(is_sealed(&sealed) && !is_sealed(std::str::from_utf8(PEM).unwrap()));
        assert!(!sealed.contains("PRIVATE KEY") && !sealed.contains("secret"));
        assert_eq!(k.open("kid-1", &sealed).unwrap().as_slice(), PEM);
        // A fresh random nonce every time: sealing twice gives two texts.
        assert_ne!(sealed, k.seal("kid-1", PEM).unwrap());
    }

    #[test]
    fn opening_fails_for_another_kek_kid_or_any_change() {
        let sealed = kek(1).seal("kid-1", PEM).unwrap();
        // One ciphertext character changed (base64url of a byte in the middle).
        let mid = sealed.len() / 2;
        let flipped = if &sealed[mid..=mid] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &sealed[..mid], &sealed[mid + 1..]);
        for (k, kid, text) in [
            (kek(2), "kid-1", sealed.clone()),
            (kek(1), "kid-2", sealed.clone()),
            (kek(1), "kid-1", tampered),
            (kek(1), "kid-1", "enc:v1:AAAA".to_string()),
            (kek(1), "kid-1", "enc:v1:!!".to_string()),
        ] {
            let err = k.open(kid, &text).unwrap_err().to_string();
            assert!(
                err.contains("KEY_ENCRYPTION_KEY_FILE") && err.contains(kid),
                "{err}"
            );
        }
        let err = kek(1).open("kid-1", "enc:v9:xyz").unwrap_err().to_string();
        assert!(err.contains("enc:v9") && err.contains("upgrade"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn kek_file_format_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let good = write("good", &format!("{}\n", STANDARD.encode([9u8; 32])), 0o600);
        let k = KeyEncryptionKey::from_file(&good).unwrap();
        let sealed = k.seal("kid", PEM).unwrap();
        assert_eq!(kek(9).open("kid", &sealed).unwrap().as_slice(), PEM);
        assert_eq!(format!("{k:?}"), "KeyEncryptionKey(..)");

        let cases = [
            (
                write("world", &STANDARD.encode([9u8; 32]), 0o644),
                "chmod 600",
            ),
            (
                write("short", &STANDARD.encode([9u8; 16]), 0o600),
                "16 bytes, not 32",
            ),
            (write("text", "not base64 at all!", 0o400), "not base64"),
            (write("big", &"A".repeat(4096), 0o600), "not a key file"),
            (dir.path().join("missing"), "No such file"),
        ];
        for (path, why) in cases {
            let err = KeyEncryptionKey::from_file(&path).unwrap_err().to_string();
            assert!(
                err.contains("KEY_ENCRYPTION_KEY_FILE") && err.contains(why),
                "{err}"
            );
        }
    }
}
