//! Who may call the API, and how: one middleware in front of every route, the `/healthz`,
//! `/metrics` and `/openapi.json` included, checked in this order.
//!
//! 1. **Caller address.** With `[api] allow_from`, a peer outside every listed network gets 403
//!    `address_not_allowed`. The address is the TCP peer's, never a forwarded header (which any
//!    caller can write). A key's own `allow_from` is checked where the key is resolved
//!    ([`super::auth`]), on top of this one.
//! 2. **Keyless API only** (no `[[api.keys]]`, which the config allows on a loopback address
//!    only): the `Host` must name this API (`localhost`, a loopback address, or the listen
//!    address, any port), else 421 `misdirected`: a web page whose DNS name was rebound to
//!    127.0.0.1 sends its own name. And a request a browser marks as coming from another site
//!    (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` other than this API's own) gets
//!    403 `cross_site`. With keys, neither applies: a browser cannot attach a Bearer key to a
//!    cross-origin request without a CORS preflight, which this API never grants, and behind a
//!    proxy the `Host` and `Origin` are the proxy's business.
//! 3. **Content type, keys or not, under `/v1/`.** A POST needs a JSON content type
//!    (`application/json`, or for a CloudEvent body [`super::events::MEDIA_TYPES`], and on
//!    `POST /v1/events` a batch too, or for a PATCH [`MERGE_PATCH`]), even without a body: a page
//!    can send a bodyless or form POST to any address without a preflight. A CloudEvents
//!    binary-mode ingest (`ce-specversion` header) may have any content type, the data's: that
//!    header already needs a preflight. A PUT,
//!    PATCH or DELETE needs one when it carries a body (a browser cannot send those cross-origin
//!    without a preflight). Otherwise 415 `unsupported_media_type`. Not checked where nothing
//!    can happen: a method or path the API does not have (405, 404), a request without a
//!    credential when the API has keys (401), and a bodyless request that carries one (a page
//!    cannot add `Authorization` to a cross-site request without a preflight). The console's and the
//!    portal's pages, served behind this middleware too, take HTML forms and check a CSRF token
//!    on every one of them instead.
//!
//! Every refusal is counted in `hookrelay_api_refused_total{reason}` and answered in the API's
//! error shape. The same rules are added to the OpenAPI document of every operation
//! ([`document`]), and described for `hookrelay validate` ([`describe`]).

use super::ApiState;
use super::error::ApiError;
use crate::config::allow::AllowFrom;
use crate::config::files::ApiFile;
use crate::metrics::{self, ApiRefusal};
use axum::body::HttpBody as _;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use std::net::{IpAddr, SocketAddr};

/// The two ends of the connection a request came on: the caller's address (checked against
/// `allow_from`) and the address it reached (a name for it is a valid `Host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The caller.
    pub remote: SocketAddr,
    /// This API's end.
    pub local: SocketAddr,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        let remote = *stream.remote_addr();
        Self { remote, local: stream.io().local_addr().unwrap_or(remote) }
    }
}

/// The peer of a request, when the server recorded it (always, when served by [`super::serve`]).
pub(crate) fn peer(extensions: &http::Extensions) -> Option<Peer> {
    extensions.get::<ConnectInfo<Peer>>().map(|c| c.0)
}

/// The API's operations (method and path template, `{x}` for one segment), from its OpenAPI
/// document: set once when the API's router is built.
static OPERATIONS: std::sync::OnceLock<Vec<(Method, Vec<String>)>> = std::sync::OnceLock::new();

/// Records the operations of `openapi` (see [`OPERATIONS`]).
pub(crate) fn set_operations(openapi: &utoipa::openapi::OpenApi) {
    let ops = openapi
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            let segments: Vec<String> = path.split('/').map(str::to_string).collect();
            let methods = [
                (Method::GET, item.get.is_some()),
                (Method::POST, item.post.is_some()),
                (Method::PUT, item.put.is_some()),
                (Method::PATCH, item.patch.is_some()),
                (Method::DELETE, item.delete.is_some()),
            ];
            methods.into_iter().filter(|(_, has)| *has).map(move |(m, _)| (m, segments.clone()))
        })
        .collect();
    let _ = OPERATIONS.set(ops);
}

/// Whether `method` on `path` is one of the API's operations (all are, before they are set).
fn is_operation(method: &Method, path: &str) -> bool {
    let Some(ops) = OPERATIONS.get() else { return true };
    let segments: Vec<&str> = path.split('/').collect();
    ops.iter().any(|(m, template)| {
        m == method
            && template.len() == segments.len()
            && template.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
    })
}

/// The media type of a PATCH body: a JSON Merge Patch (RFC 7396).
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// The media types a request body may have for `method` on `path` (a CloudEvent's, a JSON Merge
/// Patch, or JSON).
fn media_types(method: &Method, path: &str) -> &'static [&'static str] {
    let test_send = path.strip_prefix("/v1/routes/").is_some_and(|rest| rest.ends_with("/test"));
    if *method == Method::PATCH {
        &[MERGE_PATCH]
    } else if path == "/v1/events" {
        super::events::INGEST_MEDIA_TYPES
    } else if test_send {
        super::events::MEDIA_TYPES
    } else {
        &["application/json"]
    }
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
fn essence(value: &str) -> String {
    value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// The middleware: runs the checks of this module's header before any route.
pub async fn guard(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    match check(&state, &req) {
        Ok(()) => next.run(req).await,
        Err(refused) => {
            let (why, e) = *refused;
            metrics::api_refused(why);
            tracing::debug!(reason = why.as_str(), error = %e.message, "API request refused");
            e.into_response()
        }
    }
}

/// Why a request is refused, and the answer (boxed: the refusal path is the rare one).
type Refused = Box<(ApiRefusal, ApiError)>;

fn check(state: &ApiState, req: &Request) -> Result<(), Refused> {
    let snapshot = state.router.snapshot();
    let api = &snapshot.api;
    let peer = peer(req.extensions());
    if let Some(allow) = &api.allow_from {
        match peer {
            Some(p) if allow.allows(p.remote.ip()) => {}
            other => {
                let who = other.map_or_else(|| "an unknown address".to_string(), |p| p.remote.ip().to_string());
                return Err(Box::new((
                    ApiRefusal::Address,
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "address_not_allowed",
                        format!("calls from {who} are not allowed here ([api] allow_from)"),
                    ),
                )));
            }
        }
    }
    if api.keys.is_empty() {
        check_host(req, peer)?;
        check_same_origin(req.headers(), authority(req))?;
    } else if !req.headers().contains_key(http::header::AUTHORIZATION) {
        // With keys, a request without a credential is refused by its handler (401) whatever
        // its content type: nothing it asks for happens.
        return Ok(());
    }
    check_content_type(req)
}

/// The `Host` (HTTP/1) or `:authority` (HTTP/2) of a request.
fn authority(req: &Request) -> Option<&str> {
    match req.headers().get(http::header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// `host[:port]` → the host, without the brackets of an IPv6 literal; `None` when malformed.
fn host_part(authority: &str) -> Option<&str> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())).then_some(host);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => Some(host),
        Some(_) => None,
        None => Some(authority),
    }
}

fn check_host(req: &Request, peer: Option<Peer>) -> Result<(), Refused> {
    let local = peer.map(|p| p.local.ip().to_canonical());
    let named = authority(req).and_then(host_part).is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback() || Some(ip.to_canonical()) == local)
    });
    if named {
        return Ok(());
    }
    let listen = peer.map_or_else(String::new, |p| format!(" or {}", p.local));
    let host = authority(req).map_or_else(|| "no Host".to_string(), |h| format!("Host {h:?}"));
    Err(Box::new((
        ApiRefusal::Host,
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!(
                "{host} does not name this API: without API keys it answers only to localhost, 127.0.0.1, \
                 [::1]{listen} (any port)"
            ),
        ),
    )))
}

fn check_same_origin(headers: &HeaderMap, authority: Option<&str>) -> Result<(), Refused> {
    let refuse = |why: String| {
        Err(Box::new((
            ApiRefusal::CrossSite,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_site",
                format!("{why}: without API keys, this API refuses requests that web pages of other origins make"),
            ),
        )))
    };
    let header = |name: &str| headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(site) = header("sec-fetch-site")
        && (site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site"))
    {
        return refuse(format!("the browser marked this request Sec-Fetch-Site: {site}"));
    }
    if let Some(origin) = header("origin") {
        // Same origin: `http://` and the very authority the request was sent to (this API serves
        // plain HTTP; a default port may be written or not).
        let norm = |a: &str| {
            let a = a.to_ascii_lowercase();
            a.strip_suffix(":80").map_or_else(|| a.clone(), str::to_string)
        };
        let same = origin.strip_prefix("http://").is_some_and(|a| Some(norm(a)) == authority.map(norm));
        if !same {
            return refuse(format!("Origin {origin:?} is not this API's own"));
        }
    }
    Ok(())
}

fn check_content_type(req: &Request) -> Result<(), Refused> {
    // The console's and the portal's forms post `application/x-www-form-urlencoded`: the pages
    // refuse a form without its CSRF token themselves (`crate::ui`).
    if !req.uri().path().starts_with("/v1/") {
        return Ok(());
    }
    let method = req.method();
    let bodyless = req.body().size_hint().exact() == Some(0);
    let needs = *method == Method::POST || ([Method::PUT, Method::PATCH, Method::DELETE].contains(method) && !bodyless);
    if !needs {
        return Ok(());
    }
    let path = req.uri().path();
    // A method the path does not have is answered 405 by the router, a path that does not exist
    // 404: neither reaches a handler.
    if !is_operation(method, path) {
        return Ok(());
    }
    // A bodyless request that carries a credential did not come from a page of another site
    // (a browser sends `Authorization` cross-origin only after a preflight, never granted here).
    if bodyless && req.headers().contains_key(http::header::AUTHORIZATION) {
        return Ok(());
    }
    // CloudEvents binary mode: the body is the event's data, of any type. A browser cannot send
    // a `ce-specversion` header to another origin without a CORS preflight, which this API never
    // grants, so this opens nothing to cross-site pages (and without keys, the checks above
    // still refuse what a browser marks cross-site).
    if path == "/v1/events" && *method == Method::POST && req.headers().contains_key(crate::binding::HTTP_SPECVERSION) {
        return Ok(());
    }
    let accepted = media_types(method, path);
    let given = req.headers().get(http::header::CONTENT_TYPE).map(|v| essence(&String::from_utf8_lossy(v.as_bytes())));
    if given.as_deref().is_some_and(|g| accepted.contains(&g)) {
        return Ok(());
    }
    let got = given.map_or_else(|| "none".to_string(), |g| format!("{g:?}"));
    let even = if bodyless { ", even without a body" } else { "" };
    Err(Box::new((
        ApiRefusal::ContentType,
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("{method} {path} needs `Content-Type: {}`{even} (got {got})", accepted.join("` or `")),
        )
        .details(serde_json::json!({ "accepted": accepted })),
    )))
}

/// Adds the answers of [`guard`] to every operation of the OpenAPI document: 403 and 421 to all,
/// 415 to those that take a body.
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let answer = |text: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(text)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build(),
        )
    };
    const FORBIDDEN: &str = "The caller's address is outside `allow_from` (`address_not_allowed`), or, without \
                             API keys, a browser marked the request cross-site (`cross_site`)";
    for item in openapi.paths.paths.values_mut() {
        let ops = [
            (&mut item.get, false),
            (&mut item.head, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
            (&mut item.delete, false),
        ];
        for (op, takes_body) in ops {
            let Some(op) = op else { continue };
            let responses = &mut op.responses.responses;
            match responses.get_mut("403") {
                Some(RefOr::T(r)) => {
                    r.description = format!("{}. Or: {FORBIDDEN}.", r.description.trim_end_matches('.'))
                }
                Some(RefOr::Ref(_)) => {}
                None => {
                    responses.insert("403".into(), answer(FORBIDDEN));
                }
            }
            responses
                .entry("421".into())
                .or_insert_with(|| answer("Without API keys: the `Host` does not name this API (`misdirected`)"));
            if takes_body {
                responses.entry("415".into()).or_insert_with(|| {
                    answer("Not a JSON `Content-Type` (`unsupported_media_type`); details: the accepted types")
                });
            }
        }
    }
}

/// What `hookrelay validate` shows of who may call: one line of text, and the same as JSON.
pub fn describe(api: &ApiFile) -> (String, serde_json::Value) {
    let everyone = "everyone who can reach it";
    let nets = |a: &Option<AllowFrom>| a.as_ref().map(AllowFrom::networks);
    let keys: Vec<serde_json::Value> = api
        .keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.name,
                "scopes": k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "allow_from": nets(&k.allow_from),
            })
        })
        .collect();
    let json = serde_json::json!({
        "enabled": api.enabled,
        "listen": api.listen,
        "keyless": api.keys.is_empty(),
        "allow_from": nets(&api.allow_from),
        "keys": keys,
    });
    if !api.enabled {
        return ("api: off".into(), json);
    }
    let from = |a: &Option<AllowFrom>| nets(a).map_or_else(|| everyone.to_string(), |n| n.join(", "));
    let who = if api.keys.is_empty() {
        "no keys (open to local callers: loopback Host names, same-origin browser requests)".to_string()
    } else {
        let keys: Vec<String> = api
            .keys
            .iter()
            .map(|k| {
                let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                match &k.allow_from {
                    Some(a) => format!("{} [{}] from {}", k.name, scopes.join(", "), a.networks().join(", ")),
                    None => format!("{} [{}]", k.name, scopes.join(", ")),
                }
            })
            .collect();
        format!("keys: {}", keys.join("; "))
    };
    (format!("api: listen {}; callers from {}; {who}", api.listen, from(&api.allow_from)), json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_and_without_ports() {
        assert_eq!(host_part("localhost:8080"), Some("localhost"));
        assert_eq!(host_part("127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(host_part("[::1]:8080"), Some("::1"));
        assert_eq!(host_part("[::1]"), Some("::1"));
        assert_eq!(host_part("::1"), None, "an IPv6 host needs brackets");
        assert_eq!(host_part("a:b:c"), None);
        assert_eq!(host_part("[::1]x"), None);
    }

    #[test]
    fn content_types_compare_by_essence() {
        assert_eq!(essence("Application/JSON; charset=utf-8"), "application/json");
        assert_eq!(essence(" text/plain "), "text/plain");
        assert_eq!(media_types(&Method::POST, "/v1/events"), super::super::events::INGEST_MEDIA_TYPES);
        assert_eq!(media_types(&Method::POST, "/v1/routes/orders/test"), super::super::events::MEDIA_TYPES);
        assert_eq!(media_types(&Method::POST, "/v1/subscriptions"), ["application/json"]);
        assert_eq!(media_types(&Method::PATCH, "/v1/subscriptions/s-1"), [MERGE_PATCH]);
    }
}
