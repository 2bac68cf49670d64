//! The Standard Webhooks verifier (`hookrelay listen` runs it on every request) on arbitrary
//! headers and bodies: it never panics, accepts a signature only when one of the header's
//! signatures is the one the signer makes, and accepts everything the signer signs.
//!
//! Input: secret, id, timestamp, signature header and body, cut at 0xFF bytes.

#![no_main]

use base64::Engine as _;
use hookrelay::delivery::http::sign::{Signer, SigningKey, standard_signature, verify_standard};
use hookrelay::listen::{TOLERANCE_SECS, Verdict, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == 0xFF);
    let mut next = || parts.next().unwrap_or_default();
    let (secret, id, ts, sig, body) = (next(), next(), next(), next(), next());
    let key = match std::str::from_utf8(secret).ok().and_then(|s| SigningKey::from_whsec(s).ok()) {
        Some(k) => k,
        None => {
            let mut raw = secret.to_vec();
            raw.resize(raw.len().max(16), 0);
            let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&raw));
            SigningKey::from_whsec(&whsec).expect("16 bytes or more of base64 make a key")
        }
    };
    let id = String::from_utf8_lossy(id).into_owned();
    let ts_text = String::from_utf8_lossy(ts).into_owned();
    let sig = String::from_utf8_lossy(sig).into_owned();

    // Any request: a verdict, never a panic.
    let mut headers = http::HeaderMap::new();
    for (name, value) in [("webhook-id", &id), ("webhook-timestamp", &ts_text), ("webhook-signature", &sig)] {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let now = 1_700_000_000;
    let verdict = verify(&key, &headers, body, now);

    // A signature is accepted only when the header holds the one the signer makes.
    if let Ok(t) = ts_text.parse::<i64>() {
        let expected = standard_signature(&key, &id, t, body);
        let accepted = verify_standard(&key, &id, t, body, &sig);
        assert_eq!(accepted, sig.split(' ').any(|s| s == expected), "{sig:?} against {expected:?}");
        let in_tolerance = t.checked_sub(now).is_some_and(|d| d.unsigned_abs() <= TOLERANCE_SECS as u64);
        if verdict == Verdict::Verified {
            assert!(accepted && in_tolerance);
        }
        // What the signer signs verifies, for every id the CloudEvent decoder accepts (printable
        // ASCII without spaces). Not for any id `HeaderValue::from_str` takes: it lets bytes
        // over 0x7F through, which `to_str` (and receivers) then cannot read back as sent.
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()) {
            let id_header = http::HeaderValue::from_str(&id).unwrap();
            let signed = Signer::Standard(vec![key.clone()]).headers(&id, t, body);
            assert_eq!(signed["webhook-id"], id_header);
            let v = verify(&key, &signed, body, now);
            assert_eq!(v == Verdict::Verified, in_tolerance, "{v:?} for timestamp {t}");
        }
    } else {
        assert_ne!(verdict, Verdict::Verified, "a timestamp that is not a number never verifies");
    }
});
