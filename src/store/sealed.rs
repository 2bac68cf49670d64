//! Secrets at rest: the signing secrets of API-managed subscriptions are sealed with
//! XChaCha20-Poly1305 under a 32-byte key from the environment (`HOOKRELAY_SECRET_KEY`, base64)
//! before they reach the store, and opened only in memory when a route is built.
//!
//! A sealed blob is `version (1 byte) ‖ nonce (24 bytes, random from the OS) ‖ ciphertext ‖ tag
//! (16 bytes)`. The associated data is the version byte and the owner's id (the subscription id),
//! so a blob copied onto another record, or with its version byte changed, does not open.
//!
//! This module never logs, prints or returns the key; its errors name the owner, never a secret.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, Key, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The environment variable that holds the key.
pub const KEY_ENV: &str = "HOOKRELAY_SECRET_KEY";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The key could not be had, or a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The key variable is set but empty.
    #[error("{KEY_ENV} is empty: set it to the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")]
    KeyEmpty,
    /// The key is not base64.
    #[error(
        "{KEY_ENV} is not valid base64 ({0}): set it to the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)"
    )]
    KeyNotBase64(String),
    /// The key decodes to the wrong number of bytes.
    #[error(
        "{KEY_ENV} decodes to {0} bytes, not 32: set it to the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)"
    )]
    KeyLength(usize),
    /// The key variable is not valid Unicode.
    #[error("{KEY_ENV} is not valid Unicode: set it to the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")]
    KeyNotUnicode,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// Encryption refused the input (far too long).
    #[error("cannot seal the secret of {owner}: it is too long")]
    Seal {
        /// Whose secret.
        owner: String,
    },
    /// The blob is not one this version of hookrelay wrote.
    #[error("cannot open the secret of {owner}: {why}; it was not sealed by hookrelay, or the store is damaged")]
    Malformed {
        /// Whose secret.
        owner: String,
        /// What is wrong with the blob.
        why: String,
    },
    /// Authentication failed: another key, another owner, or a changed blob.
    #[error(
        "cannot open the secret of {owner}: is {KEY_ENV} the key it was sealed with? (or the sealed value was altered or moved from another record)"
    )]
    Open {
        /// Whose secret.
        owner: String,
    },
}

/// The 32 bytes of a `HOOKRELAY_SECRET_KEY` value: base64 (standard alphabet, padding optional;
/// surrounding whitespace ignored) of exactly 32 bytes. Also the source of the derived token key
/// ([`crate::tokens::TokenKey::derive`]).
pub fn decode_key(value: &str) -> Result<[u8; 32], SecretError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(SecretError::KeyEmpty);
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(value).map_err(|e| SecretError::KeyNotBase64(e.to_string()))?;
    bytes.as_slice().try_into().map_err(|_| SecretError::KeyLength(bytes.len()))
}

/// Seals and opens secrets with one key. Cheap to share behind an `Arc`; its `Debug` hides the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox { key: <hidden> }")
    }
}

impl SecretBox {
    /// A box for this key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: XChaCha20Poly1305::new(&Key::<XChaCha20Poly1305>::from(*key)) }
    }

    /// Parses the value of `HOOKRELAY_SECRET_KEY`: the base64 (standard alphabet, padding
    /// optional; surrounding whitespace ignored) of exactly 32 bytes.
    pub fn from_env_value(value: &str) -> Result<Self, SecretError> {
        Ok(Self::new(&decode_key(value)?))
    }

    /// Reads `HOOKRELAY_SECRET_KEY`: `None` when it is not set, an error when it is set but wrong.
    pub fn from_env() -> Result<Option<Self>, SecretError> {
        match std::env::var(KEY_ENV) {
            Ok(v) => Self::from_env_value(&v).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::KeyNotUnicode),
        }
    }

    /// A new random key, as the base64 that `HOOKRELAY_SECRET_KEY` takes.
    pub fn generate_key() -> Result<String, SecretError> {
        let key = Key::<XChaCha20Poly1305>::try_generate().map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(key.as_slice()))
    }

    /// Seals `plaintext` for `owner` (the subscription id; the blob opens only with the same one).
    pub fn seal(&self, plaintext: &[u8], owner: &str) -> Result<Vec<u8>, SecretError> {
        let nonce = XNonce::try_generate().map_err(|e| SecretError::Random(e.to_string()))?;
        let aad = associated_data(VERSION, owner);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
            .map_err(|_| SecretError::Seal { owner: owner.to_string() })?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens what [`seal`](Self::seal) made for the same `owner` with the same key.
    pub fn open(&self, sealed: &[u8], owner: &str) -> Result<Vec<u8>, SecretError> {
        let malformed = |why: String| SecretError::Malformed { owner: owner.to_string(), why };
        let (&version, rest) = sealed.split_first().ok_or_else(|| malformed("the sealed value is empty".into()))?;
        if version != VERSION {
            return Err(malformed(format!("unknown format version {version}")));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(malformed(format!("the sealed value is {} bytes, too short", sealed.len())));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).expect("split at the nonce length");
        let aad = associated_data(version, owner);
        self.cipher
            .decrypt(&nonce, Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| SecretError::Open { owner: owner.to_string() })
    }
}

fn associated_data(version: u8, owner: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + owner.len());
    aad.push(version);
    aad.extend_from_slice(owner.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed() -> SecretBox {
        SecretBox::from_env_value(&SecretBox::generate_key().unwrap()).unwrap()
    }

    #[test]
    fn round_trip() {
        let b = boxed();
        let sealed = b.seal(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "sub-1").unwrap();
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 38 + TAG_LEN);
        assert_eq!(sealed[0], VERSION);
        assert!(!sealed.windows(6).any(|w| w == b"whsec_"), "the plaintext does not show");
        assert_eq!(b.open(&sealed, "sub-1").unwrap(), b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_ne!(b.seal(b"same", "sub-1").unwrap(), b.seal(b"same", "sub-1").unwrap(), "a fresh nonce each time");
        assert_eq!(b.open(&b.seal(b"", "sub-1").unwrap(), "sub-1").unwrap(), b"");
    }

    #[test]
    fn wrong_key_does_not_open_and_says_which_key() {
        let sealed = boxed().seal(b"whsec_abc", "sub-1").unwrap();
        let err = boxed().open(&sealed, "sub-1").unwrap_err();
        assert_eq!(err, SecretError::Open { owner: "sub-1".into() });
        assert!(
            err.to_string()
                .starts_with("cannot open the secret of sub-1: is HOOKRELAY_SECRET_KEY the key it was sealed with?"),
            "{err}"
        );
    }

    #[test]
    fn wrong_owner_does_not_open() {
        let b = boxed();
        let sealed = b.seal(b"whsec_abc", "sub-1").unwrap();
        assert_eq!(b.open(&sealed, "sub-2").unwrap_err(), SecretError::Open { owner: "sub-2".into() });
    }

    #[test]
    fn any_tampered_byte_is_refused() {
        let b = boxed();
        let sealed = b.seal(b"whsec_abc", "sub-1").unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            let err = b.open(&t, "sub-1").unwrap_err();
            if i == 0 {
                assert!(matches!(err, SecretError::Malformed { .. }), "{err}");
            } else {
                assert_eq!(err, SecretError::Open { owner: "sub-1".into() }, "byte {i}");
            }
        }
        assert!(matches!(b.open(&sealed[..sealed.len() - 1], "sub-1"), Err(SecretError::Open { .. })));
        assert!(matches!(b.open(&sealed[..20], "sub-1"), Err(SecretError::Malformed { .. })));
        assert!(matches!(b.open(&[], "sub-1"), Err(SecretError::Malformed { .. })));
    }

    #[test]
    fn keys_are_parsed_strictly_with_actionable_errors() {
        let key = SecretBox::generate_key().unwrap();
        assert_eq!(key.len(), 44);
        // Padding optional, whitespace around (a trailing newline from a file) ignored.
        let b = SecretBox::from_env_value(&format!("  {key}\n")).unwrap();
        let sealed = b.seal(b"x", "o").unwrap();
        assert_eq!(SecretBox::from_env_value(key.trim_end_matches('=')).unwrap().open(&sealed, "o").unwrap(), b"x");

        assert_eq!(SecretBox::from_env_value(" ").unwrap_err(), SecretError::KeyEmpty);
        let err = SecretBox::from_env_value("not base64!").unwrap_err();
        assert!(matches!(err, SecretError::KeyNotBase64(_)), "{err}");
        assert!(err.to_string().starts_with("HOOKRELAY_SECRET_KEY is not valid base64"), "{err}");
        let err = SecretBox::from_env_value("c2hvcnQ=").unwrap_err();
        assert_eq!(err, SecretError::KeyLength(5));
        assert_eq!(
            err.to_string(),
            "HOOKRELAY_SECRET_KEY decodes to 5 bytes, not 32: set it to the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)"
        );
        let long = base64::engine::general_purpose::STANDARD.encode([0u8; 33]);
        assert_eq!(SecretBox::from_env_value(&long).unwrap_err(), SecretError::KeyLength(33));
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", boxed()), "SecretBox { key: <hidden> }");
    }
}
