//! Target URLs as callers without the admin scope see them: user-info (`user:password@`) and
//! the values of secret-looking query parameters (`token`, `key`, `secret`, `signature`,
//! `password`, `auth`, `sig`, `code`, `access_token`, `api_key`, …) replaced by `***`. Receivers
//! often take a credential in the URL; whoever may only read the API (or the audit trail) must
//! not learn it. Admins (and a tenant managing its own subscriptions) see URLs as written.

use std::borrow::Cow;

/// Whether `caller` sees target URLs as written: an operator with the admin scope (or the open,
/// keyless API), or a tenant that manages its own subscriptions.
pub fn reveals(caller: &super::auth::Caller) -> bool {
    caller.access(crate::config::files::Scope::Admin).is_ok()
}

/// `url` as `caller` may see it.
pub fn url_for(caller: &super::auth::Caller, url: String) -> String {
    if reveals(caller) {
        return url;
    }
    match mask_url(&url) {
        Cow::Owned(m) => m,
        Cow::Borrowed(_) => url,
    }
}

/// What replaces a masked part.
pub const MASK: &str = "***";

/// Query parameter names that carry credentials, compared lowercased with `-` and `_` removed,
/// as a part of the name (`x-api-key`, `hub.signature`, `refresh_token` all match).
const SECRET_NAMES: [&str; 18] = [
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "pass",
    "signature",
    "sig",
    "auth",
    "key",
    "code",
    "credential",
    "session",
    "jwt",
    "bearer",
    "hmac",
    "private",
    "otp",
];

fn secret_name(name: &str) -> bool {
    let n: String = name.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase).collect();
    SECRET_NAMES.iter().any(|s| n.contains(s))
}

/// `url` with its user-info and secret-looking query values masked; unchanged (borrowed) when
/// there is nothing to mask or it is not an `http(s)` URL.
pub fn mask_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else { return Cow::Borrowed(url) };
    if !url[..scheme_end].eq_ignore_ascii_case("http") && !url[..scheme_end].eq_ignore_ascii_case("https") {
        return Cow::Borrowed(url);
    }
    let rest_at = scheme_end + 3;
    let auth_end = url[rest_at..].find(['/', '?', '#']).map_or(url.len(), |i| rest_at + i);
    let mut out = String::with_capacity(url.len());
    let mut changed = false;
    out.push_str(&url[..rest_at]);
    match url[rest_at..auth_end].rfind('@') {
        Some(at) => {
            out.push_str(MASK);
            out.push_str(&url[rest_at + at..auth_end]);
            changed = true;
        }
        None => out.push_str(&url[rest_at..auth_end]),
    }
    let tail = &url[auth_end..];
    let (before_fragment, fragment) = tail.split_at(tail.find('#').unwrap_or(tail.len()));
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, value)) if !value.is_empty() && secret_name(&decode(name)) => {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(MASK);
                        changed = true;
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    if changed { Cow::Owned(out) } else { Cow::Borrowed(url) }
}

/// Masks every `http(s)` URL among the strings of `value` (audit details hold specs).
pub fn mask_urls_in(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(m) = mask_url(s) {
                *s = m;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(mask_urls_in),
        serde_json::Value::Object(m) => m.values_mut().for_each(mask_urls_in),
        _ => {}
    }
}

/// A query name percent-decoded (`api%5Fkey` is `api_key`), `+` as a space.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_and_secret_query_values_are_masked() {
        for (url, shown) in [
            ("https://erp.example.com/hooks", "https://erp.example.com/hooks"),
            ("https://user:pa55@erp.example.com:8443/h", "https://***@erp.example.com:8443/h"),
            ("https://erp.example.com/h?token=abc&page=2", "https://erp.example.com/h?token=***&page=2"),
            (
                "https://x.example/h?api_key=1&access_token=2&sig=3&code=4&Signature=5&X-Api-Key=6&auth=7#frag",
                "https://x.example/h?api_key=***&access_token=***&sig=***&code=***&Signature=***&X-Api-Key=***&auth=***#frag",
            ),
            ("https://x.example/h?password=p&secret=s&key=k", "https://x.example/h?password=***&secret=***&key=***"),
            ("https://x.example/h?api%5Fkey=1&q=a+b", "https://x.example/h?api%5Fkey=***&q=a+b"),
            ("https://x.example/h?flag&token=", "https://x.example/h?flag&token="),
            ("https://x.example/@user?x=1", "https://x.example/@user?x=1"),
            ("mailto:a@b.c", "mailto:a@b.c"),
        ] {
            assert_eq!(mask_url(url), shown, "{url}");
        }
        assert!(matches!(mask_url("https://erp.example.com/h?x=1"), Cow::Borrowed(_)));
    }

    #[test]
    fn urls_inside_audit_details_are_masked() {
        let mut v = serde_json::json!({"spec": {"url": "https://u:p@x.example/h?token=t", "events": ["a"]}, "n": 1});
        mask_urls_in(&mut v);
        assert_eq!(v["spec"]["url"], "https://***@x.example/h?token=***");
        assert_eq!(v["spec"]["events"][0], "a");
    }
}
