//! Sessions and CSRF for the console and the portal, without server-side state (so replicas
//! that share the token key share sessions, and a restart keeps them when the key is set).
//!
//! - A session is a cookie holding a JWT signed with the session key, with its own audience
//!   (`hookrelay-console` or `hookrelay-portal`), so that it never passes for an API token nor one
//!   area's session for the other's. Cookies are `HttpOnly; SameSite=Strict; Path=/ui` (or
//!   `/portal`), and `Secure` when the request came over TLS (a proxy's `X-Forwarded-Proto`).
//! - A console session names the API key by its name and the first 16 hex digits of its
//!   configured hash; every request finds the key again in the live config, so removing a key
//!   (and reloading) ends its sessions, and a change of its scopes applies at once.
//! - CSRF: a random `hr_csrf` cookie, and in every form a token that is the HMAC of that cookie
//!   and the area's session cookie under the session key (a signed double-submit token, bound to
//!   the session). The middleware in `mod.rs` refuses any POST under `/ui/` or `/portal/` whose
//!   `_csrf` field does not match, before a handler runs.

use crate::api::auth::{Caller, TenantGrant, find_key, key_allowed_from};
use crate::config::Snapshot;
use crate::tokens::{ISSUER, TokenKey, TokenScope, unix_now};
use base64::Engine as _;
use http::HeaderMap;
use std::net::IpAddr;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The CSRF cookie.
pub const CSRF_COOKIE: &str = "hr_csrf";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
/// The one-shot message cookie (set by a POST, shown by the page it redirects to).
pub const FLASH_COOKIE: &str = "hr_flash";

/// How long a console session lasts.
pub const CONSOLE_SESSION: Duration = Duration::from_secs(12 * 3600);

/// Which half of the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/ui/`: operators.
    Console,
    /// `/portal/`: one tenant.
    Portal,
}

impl Area {
    /// The path prefix, with its slash.
    pub fn base(self) -> &'static str {
        match self {
            Self::Console => "/ui/",
            Self::Portal => "/portal/",
        }
    }

    /// The session cookie's name.
    pub fn cookie(self) -> &'static str {
        match self {
            Self::Console => "hr_console",
            Self::Portal => "hr_portal",
        }
    }

    /// The session JWT's audience.
    fn audience(self) -> &'static str {
        match self {
            Self::Console => "hookrelay-console",
            Self::Portal => "hookrelay-portal",
        }
    }

    /// The area a path belongs to.
    pub fn of(path: &str) -> Option<Self> {
        if path == "/ui" || path.starts_with("/ui/") {
            Some(Self::Console)
        } else if path == "/portal" || path.starts_with("/portal/") {
            Some(Self::Portal)
        } else {
            None
        }
    }
}

/// The claims of a session cookie.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionClaims {
    /// Console: the API key's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Console: the first 16 hex digits of the key's configured hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp: Option<String>,
    /// Portal: the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Portal: what the tenant may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<TokenScope>,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// `hookrelay`.
    pub iss: String,
    /// The area's audience.
    pub aud: String,
}

/// A console session for a configured key (`hash` = `sha256:<hex>`).
pub fn console_session(key: &TokenKey, name: &str, hash: &str) -> String {
    key.sign(&SessionClaims {
        key: Some(name.to_string()),
        fp: Some(fingerprint(hash)),
        tenant: None,
        scope: None,
        exp: unix_now() + CONSOLE_SESSION.as_secs(),
        iss: ISSUER.into(),
        aud: Area::Console.audience().into(),
    })
}

/// A portal session for a tenant.
pub fn portal_session(key: &TokenKey, grant: &TenantGrant, ttl: Duration) -> String {
    key.sign(&SessionClaims {
        key: None,
        fp: None,
        tenant: Some(grant.tenant.clone()),
        scope: Some(grant.scope),
        exp: unix_now() + ttl.as_secs(),
        iss: ISSUER.into(),
        aud: Area::Portal.audience().into(),
    })
}

fn fingerprint(hash: &str) -> String {
    hash.trim_start_matches("sha256:").chars().take(16).collect()
}

/// Who the session cookie of `area` in `headers` names, if it is valid: for the console, an
/// operator whose key is still configured and may be used from the caller's address `from`
/// (or anyone, when the API has no keys); for the portal, a tenant.
pub fn caller(
    area: Area,
    headers: &HeaderMap,
    key: &TokenKey,
    snapshot: &Snapshot,
    from: Option<IpAddr>,
) -> Option<Caller> {
    if area == Area::Console && snapshot.api.keys.is_empty() {
        return Some(Caller::anonymous());
    }
    let cookie = cookie(headers, area.cookie())?;
    let claims: SessionClaims = key.verify(&cookie, area.audience()).ok()?;
    match area {
        Area::Console => {
            let (name, fp) = (claims.key?, claims.fp?);
            let k = snapshot.api.keys.iter().find(|k| k.name == name && fingerprint(&k.hash) == fp)?;
            key_allowed_from(k, from).ok()?;
            Some(Caller::operator(k.name.clone(), k.scopes.clone()))
        }
        Area::Portal => Some(Caller::tenant(TenantGrant { tenant: claims.tenant?, scope: claims.scope? })),
    }
}

/// The configured key an operator typed at the console's login (its name and hash), if it may
/// be used from `from`; else why not.
pub fn login(snapshot: &Snapshot, presented: &str, from: Option<IpAddr>) -> Result<(String, String), String> {
    let k = find_key(&snapshot.api.keys, presented.trim())
        .ok_or_else(|| "That key is not one of this router's API keys.".to_string())?;
    key_allowed_from(k, from).map_err(|e| e.message)?;
    Ok((k.name.clone(), k.hash.clone()))
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict`, `Secure` over TLS; `max_age` None for a
/// cookie that ends with the browser session, `Some(0)` to delete.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// A new random CSRF cookie value.
pub fn new_csrf_cookie() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system's random generator is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The form token for a CSRF cookie and the area's session cookie (empty before login).
pub fn csrf_token(key: &TokenKey, csrf_cookie: &str, session_cookie: &str) -> String {
    let mac = key.mac(&[b"hookrelay csrf", csrf_cookie.as_bytes(), session_cookie.as_bytes()]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
}

/// Whether `presented` is the form token of these cookies (constant time).
pub fn csrf_ok(key: &TokenKey, csrf_cookie: &str, session_cookie: &str, presented: &str) -> bool {
    let want = csrf_token(key, csrf_cookie, session_cookie);
    !csrf_cookie.is_empty() && bool::from(want.as_bytes().ct_eq(presented.as_bytes()))
}

/// A signed one-shot message: `kind.message-base64.mac`.
pub fn flash_value(key: &TokenKey, kind: &str, message: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = format!("{kind}.{}", b64.encode(message));
    let mac = key.mac(&[b"hookrelay flash", body.as_bytes()]);
    format!("{body}.{}", b64.encode(&mac[..16]))
}

/// The message of a flash cookie, if its signature holds: (kind, message).
pub fn read_flash(key: &TokenKey, value: &str) -> Option<(String, String)> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (body, mac) = value.rsplit_once('.')?;
    let want = key.mac(&[b"hookrelay flash", body.as_bytes()]);
    if !bool::from(b64.encode(&want[..16]).as_bytes().ct_eq(mac.as_bytes())) {
        return None;
    }
    let (kind, msg) = body.split_once('.')?;
    Some((kind.to_string(), String::from_utf8(b64.decode(msg).ok()?).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(vec![3; 32]).unwrap()
    }

    #[test]
    fn a_csrf_token_holds_for_its_cookie_and_session_only() {
        let t = csrf_token(&key(), "c1", "s1");
        assert!(csrf_ok(&key(), "c1", "s1", &t));
        assert!(!csrf_ok(&key(), "c2", "s1", &t));
        assert!(!csrf_ok(&key(), "c1", "s2", &t), "a token from before login does not work after it");
        assert!(!csrf_ok(&TokenKey::new(vec![4; 32]).unwrap(), "c1", "s1", &t));
        assert!(!csrf_ok(&key(), "", "", &csrf_token(&key(), "", "")), "no cookie, no form");
    }

    #[test]
    fn flash_messages_are_signed() {
        let v = flash_value(&key(), "ok", "Subscription created");
        assert_eq!(read_flash(&key(), &v), Some(("ok".into(), "Subscription created".into())));
        let forged = v.replacen("ok", "error", 1);
        assert_eq!(read_flash(&key(), &forged), None);
    }

    #[test]
    fn sessions_do_not_cross_areas() {
        let grant = TenantGrant { tenant: "acme".into(), scope: TokenScope::Read };
        let portal = portal_session(&key(), &grant, Duration::from_secs(60));
        assert!(key().verify::<SessionClaims>(&portal, Area::Console.audience()).is_err());
        assert!(key().verify_tenant(&portal).is_err());
        assert!(key().verify::<SessionClaims>(&portal, Area::Portal.audience()).is_ok());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, "a=1; hr_csrf=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "hr_csrf").as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "hr"), None);
    }
}
