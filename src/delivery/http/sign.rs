//! Webhook signatures. Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`), where the key
//! is the base64 after `whsec_`; during a rotation one signature per valid secret, separated by
//! spaces. And, for legacy receivers, `X-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
//!
//! Signing is a pure function; it is tested against the specification's published example.
//! HMAC-SHA256 is ring's (already in the tree for TLS): its assembly uses the SHA extensions
//! where the CPU has them, as RustCrypto's `sha2` does, and vector code where it has not, about
//! a third fewer instructions than `sha2`'s portable code (callgrind, whose CPU has no SHA
//! extensions: 41k against 64k for a 1.1 KiB body; `docs/performance.md`, seventh round).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use ring::hmac;

/// A signing key, decoded once at config load, with its HMAC key schedule (the inner and
/// outer padded key blocks hashed once): each signature clones the keyed state instead of
/// hashing the key again.
#[derive(Clone)]
pub struct SigningKey {
    key: hmac::Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// A Standard Webhooks secret: `whsec_<base64>` (the prefix is optional).
    pub fn from_whsec(secret: &str) -> Result<Self, String> {
        let b64 = secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim());
        let key = B64.decode(b64).map_err(|_| "the secret is not `whsec_` followed by base64".to_string())?;
        if key.len() < 16 {
            return Err(format!("the secret's key is {} bytes; use at least 16 (24 to 64 recommended)", key.len()));
        }
        Ok(Self::keyed(&key))
    }

    /// A legacy secret used as its raw bytes.
    pub fn raw(secret: &str) -> Result<Self, String> {
        let s = secret.trim();
        if s.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Self::keyed(s.as_bytes()))
    }

    fn keyed(key: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    /// A fresh random `whsec_` secret of 32 bytes.
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random generator is available");
        format!("whsec_{}", B64.encode(key))
    }

    fn mac(&self) -> hmac::Context {
        hmac::Context::with_key(&self.key)
    }
}

/// `v1,<base64>` for one key.
pub fn standard_signature(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = BytesMut::with_capacity(SIGNATURE_LEN);
    push_standard_signature(&mut out, key, id, timestamp, body);
    String::from_utf8(out.to_vec()).expect("base64 is ASCII")
}

/// `v1,` and 44 characters of base64 (32 bytes of HMAC-SHA256).
const SIGNATURE_LEN: usize = 3 + B64_LEN;
const B64_LEN: usize = 44;

/// Appends `v1,<base64>` for one key to `out`, without a temporary string.
fn push_standard_signature(out: &mut BytesMut, key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) {
    let mut mac = key.mac();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut b64 = [0u8; B64_LEN];
    let n = B64.encode_slice(mac.sign(), &mut b64).expect("44 bytes hold 32 in base64");
    out.extend_from_slice(b"v1,");
    out.extend_from_slice(&b64[..n]);
}

/// The header values of one request, written one after another into one buffer and each taken
/// as a slice of it: one allocation for all of them instead of one each (a header value owns
/// its bytes).
#[derive(Debug)]
pub struct HeaderValues(BytesMut);

impl HeaderValues {
    /// Room for `capacity` bytes of values (more grows the buffer: still right, one more copy).
    pub fn with_capacity(capacity: usize) -> Self {
        Self(BytesMut::with_capacity(capacity))
    }

    /// The value of the bytes `write` appends.
    fn value(&mut self, write: impl FnOnce(&mut BytesMut)) -> HeaderValue {
        write(&mut self.0);
        HeaderValue::from_maybe_shared(self.0.split().freeze()).unwrap_or_else(|_| invalid())
    }

    /// `s` as a value, or `invalid` when it holds a control character. Checked once, by
    /// [`HeaderValue::from_maybe_shared`], which takes bytes from 0x80 up as well: what attempts
    /// send here is ASCII already (ids, types and sequences checked at decode, route names at
    /// load, trace context parsed).
    pub fn text(&mut self, s: &str) -> HeaderValue {
        self.value(|b| b.extend_from_slice(s.as_bytes()))
    }

    /// A number in decimal.
    pub fn number(&mut self, n: impl itoa::Integer) -> HeaderValue {
        self.value(|b| b.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()))
    }
}

fn invalid() -> HeaderValue {
    HeaderValue::from_static("invalid")
}

/// Checks a `webhook-signature` header value (space-separated `v1,` signatures) in constant time.
pub fn verify_standard(key: &SigningKey, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).filter_map(|b| B64.decode(b).ok()).any(|sig| {
        let mut message = format!("{id}.{timestamp}.").into_bytes();
        message.extend_from_slice(body);
        hmac::verify(&key.key, &message, &sig).is_ok()
    })
}

/// `sha256=<hex>` of the body.
pub fn hex_signature(key: &SigningKey, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hex_mac(key, body)))
}

fn hex_mac(key: &SigningKey, body: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&key.key, body).as_ref());
    out
}

/// How a route signs, built at config load.
#[derive(Debug, Clone)]
pub enum Signer {
    /// Standard Webhooks with one or more valid keys (several during a rotation).
    Standard(Vec<SigningKey>),
    /// Legacy hex HMAC in a header of the route's choice.
    Hex {
        /// The key.
        key: SigningKey,
        /// The header, e.g. `x-signature`.
        header: HeaderName,
    },
}

static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

impl Signer {
    /// The signature headers for one attempt. The id and timestamp headers are sent by every
    /// scheme so receivers can dedupe and refuse stale requests.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(3);
        let mut values = HeaderValues::with_capacity(self.values_len(id));
        self.insert_headers(&mut map, &mut values, id, timestamp, body);
        map
    }

    /// About how many bytes the signature headers' values take (for [`HeaderValues`]).
    pub fn values_len(&self, id: &str) -> usize {
        let signatures = match self {
            Self::Standard(keys) => keys.len() * (SIGNATURE_LEN + 1),
            Self::Hex { .. } => HEX_LEN,
        };
        id.len() + 20 + signatures
    }

    /// [`Signer::headers`] inserted straight into a request's headers (replacing any of the
    /// same name), their values written into `values`: the way every attempt is signed.
    pub fn insert_headers(&self, map: &mut HeaderMap, values: &mut HeaderValues, id: &str, ts: i64, body: &[u8]) {
        map.insert(WEBHOOK_ID.clone(), values.text(id));
        map.insert(WEBHOOK_TIMESTAMP.clone(), values.number(ts));
        let signature = match self {
            Self::Standard(keys) => values.value(|out| {
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b" ");
                    }
                    push_standard_signature(out, k, id, ts, body);
                }
            }),
            Self::Hex { key, .. } => values.value(|out| {
                let mut hex = [0u8; 64];
                hex::encode_to_slice(hex_mac(key, body), &mut hex).expect("64 hex digits for 32 bytes");
                out.extend_from_slice(b"sha256=");
                out.extend_from_slice(&hex);
            }),
        };
        let name = match self {
            Self::Standard(_) => &WEBHOOK_SIGNATURE,
            Self::Hex { header, .. } => header,
        };
        map.insert(name.clone(), signature);
    }
}

/// `sha256=` and 64 hex digits.
const HEX_LEN: usize = 7 + 64;

#[cfg(test)]
mod tests {
    use super::*;

    // The example published with the Standard Webhooks specification and its libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_specification_example() {
        let key = SigningKey::from_whsec(SECRET).unwrap();
        assert_eq!(standard_signature(&key, ID, TS, BODY), EXPECTED);
        assert!(verify_standard(&key, ID, TS, BODY, EXPECTED));
        assert!(!verify_standard(&key, ID, TS + 1, BODY, EXPECTED));
        assert!(!verify_standard(&key, ID, TS, b"{}", EXPECTED));
    }

    #[test]
    fn rotation_sends_one_signature_per_key() {
        let old = SigningKey::from_whsec(SECRET).unwrap();
        let new = SigningKey::from_whsec(&SigningKey::generate()).unwrap();
        let headers = Signer::Standard(vec![new.clone(), old.clone()]).headers(ID, TS, BODY);
        let sig = headers["webhook-signature"].to_str().unwrap().to_string();
        assert_eq!(sig.split(' ').count(), 2);
        assert_eq!(
            sig,
            format!("{} {}", standard_signature(&new, ID, TS, BODY), standard_signature(&old, ID, TS, BODY))
        );
        assert!(verify_standard(&old, ID, TS, BODY, &sig));
        assert!(verify_standard(&new, ID, TS, BODY, &sig));
    }

    #[test]
    fn timestamps_are_signed_in_decimal() {
        // The expected value from a second implementation (RustCrypto's), keyed with the
        // secret's bytes.
        use ::hmac::{KeyInit, Mac};
        let key = SigningKey::from_whsec(SECRET).unwrap();
        let raw = B64.decode(SECRET.strip_prefix("whsec_").unwrap()).unwrap();
        for ts in [0, 7, -7, 1614265330, i64::MAX, i64::MIN] {
            let mut mac = ::hmac::Hmac::<sha2::Sha256>::new_from_slice(&raw).unwrap();
            mac.update(format!("{ID}.{ts}.").as_bytes());
            mac.update(BODY);
            let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
            assert_eq!(standard_signature(&key, ID, ts, BODY), expected, "timestamp {ts}");
        }
    }

    #[test]
    fn hex_scheme_is_sha256_equals_hex() {
        let key = SigningKey::raw("s3cret").unwrap();
        let sig = hex_signature(&key, b"{}");
        assert!(sig.starts_with("sha256=") && sig.len() == HEX_LEN);
        let header = HeaderName::from_static("x-signature");
        let headers = Signer::Hex { key, header }.headers(ID, TS, b"{}");
        assert_eq!(headers["x-signature"], sig.as_str());
        assert_eq!(
            (headers["webhook-id"].to_str().unwrap(), headers["webhook-timestamp"].to_str().unwrap()),
            (ID, "1614265330")
        );
    }

    #[test]
    fn values_in_one_buffer_are_each_their_own() {
        let mut values = HeaderValues::with_capacity(8);
        let (a, b, c) = (values.text("msg_1"), values.number(-42i64), values.text("bell\u{7}"));
        let d = values.text("a longer value than the buffer's capacity");
        assert_eq!((a.to_str().unwrap(), b.to_str().unwrap(), c.to_str().unwrap()), ("msg_1", "-42", "invalid"));
        assert_eq!(d, "a longer value than the buffer's capacity");
        assert_eq!(values.text("tab\tok"), "tab\tok");
        assert_eq!(values.text("new\nline"), "invalid");
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(SigningKey::from_whsec("whsec_not base64!").is_err());
        assert!(SigningKey::from_whsec("whsec_AAAA").is_err());
        assert!(SigningKey::raw("  ").is_err());
    }
}
