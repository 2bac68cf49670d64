//! The operators' console (`/ui/`) and the tenants' portal (`/portal/`), served by the API's
//! listener: server-rendered HTML (maud), one stylesheet and a few lines of script compiled into
//! the binary, no CDN, readable with JavaScript off.
//!
//! Every page calls the JSON API's handlers (`crate::api::*`) with the caller of its session,
//! so the console, the portal and the API share one implementation of each operation, its
//! checks (scopes, tenants: another tenant's ids are "not found"), its audit entries and its
//! errors; the pages only turn forms into the handlers' inputs and answers into HTML.
//!
//! ```text
//! /ui/                      overview: per route success, latency, lag, queue depth, circuit; chart
//! /ui/event-types[/{type}]  catalogue: schemas and an example payload per version
//! /ui/subscriptions[/new|/{id}]  create, edit, validate, test, rotate, enable/disable, delete
//! /ui/routes/{name}         a route's settings and a test send (file routes too)
//! /ui/deliveries[/{id}]     the delivery log with filters; attempts, headers, responses; retry
//! /ui/dead-letters[/{id}]   filters, count, replay (selected, or all matching after a dry run)
//! /ui/tenants               tenants and one-time portal links
//! /ui/config  /ui/audit     the config in force and its reloads; the audit trail
//! /ui/login  /ui/logout     an API key in, a session cookie out (not needed without keys)
//! /portal/enter?link=…      a one-time portal link, exchanged (by a button) for a session
//! /portal/login             a tenant token (`hookrelay token`) in, a session out
//! /portal/, endpoints, deliveries, dead-letters, event-types   one tenant's view
//! /ui/verify  /portal/verify  how receivers verify signatures
//! ```
//!
//! Security: the middleware (`guard`) sets a strict Content-Security-Policy (no inline script
//! or style), refuses cross-site form posts and every POST without a valid CSRF token
//! ([`session`]), and never caches pages. The API's JSON content-type rule is for `/v1/` only:
//! these forms post `application/x-www-form-urlencoded` and are protected by the CSRF token.

mod catalogue;
mod chart;
mod deliveries;
mod forms;
mod layout;
mod metrics_text;
mod operations;
mod overview;
mod portal;
pub mod session;
mod subscriptions;

use crate::api::ApiState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use maud::{Markup, html};
use session::Area;

/// A flash message of success.
pub const FLASH_OK: &str = "ok";
/// A flash message of failure.
pub const FLASH_ERROR: &str = "error";

/// The largest form accepted (a subscription with its scripts).
const MAX_FORM: usize = 1024 * 1024;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's and the portal's routes, to merge into the API's router.
pub fn router(state: ApiState) -> axum::Router {
    let shared = |r: axum::Router<ApiState>, b: &'static str| {
        r.route(&format!("{b}/assets/app.css"), get(css))
            .route(&format!("{b}/assets/app.js"), get(js))
            .route(&format!("{b}/"), get(overview::page))
            .route(b, get(move || async move { axum::response::Redirect::permanent(&format!("{b}/")) }))
            .route(&format!("{b}/event-types"), get(catalogue::list))
            .route(&format!("{b}/event-types/{{ty}}"), get(catalogue::detail))
            .route(&format!("{b}/deliveries"), get(deliveries::list))
            .route(&format!("{b}/deliveries/{{id}}"), get(deliveries::detail))
            .route(&format!("{b}/deliveries/{{id}}/retry"), post(deliveries::retry))
            .route(&format!("{b}/dead-letters"), get(deliveries::dead_letters).post(deliveries::replay))
            .route(&format!("{b}/dead-letters/{{id}}"), get(deliveries::dead_letter))
            .route(&format!("{b}/logout"), post(session_out))
            .route(&format!("{b}/verify"), get(portal::verify))
    };
    let (ui, portal) = ("/ui", "/portal");
    let r = shared(shared(axum::Router::new(), ui), portal)
        .route("/ui/login", get(operations::login_page).post(operations::login))
        .route("/ui/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route("/ui/subscriptions/new", get(subscriptions::new_form))
        .route("/ui/subscriptions/validate", post(subscriptions::validate))
        .route("/ui/subscriptions/{id}", get(subscriptions::detail).post(subscriptions::update))
        .route("/ui/subscriptions/{id}/{action}", post(subscriptions::action))
        .route("/ui/routes/{name}", get(subscriptions::route))
        .route("/ui/routes/{name}/test", post(subscriptions::test_route))
        .route("/ui/tenants", get(operations::tenants).post(operations::portal_link))
        .route("/ui/config", get(operations::config).post(operations::reload))
        .route("/ui/audit", get(operations::audit))
        .route("/portal/enter", get(portal::enter_page).post(portal::enter))
        .route("/portal/login", get(portal::login_page).post(portal::login))
        .route("/portal/endpoints", get(subscriptions::list).post(subscriptions::create))
        .route("/portal/endpoints/new", get(subscriptions::new_form))
        .route("/portal/endpoints/{id}", get(subscriptions::detail).post(subscriptions::update))
        .route("/portal/endpoints/{id}/{action}", post(subscriptions::action));
    r.layer(axum::middleware::from_fn_with_state(state.clone(), guard)).with_state(state)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/app.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// The CSRF cookie of this request (set by [`guard`] when the browser had none).
#[derive(Clone)]
struct CsrfCookie(String);

/// The flash message of this request, if its cookie came and verified.
#[derive(Clone)]
struct Flash(Option<(String, String)>);

/// Every request under `/ui/` and `/portal/`: cross-site posts and posts without a valid CSRF
/// token are refused; the CSRF cookie is set when missing; a flash message is read once; pages
/// get the security headers and are never cached.
async fn guard(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let area = Area::of(parts.uri.path()).unwrap_or(Area::Console);
    let https = crate::api::tenants::is_https(&parts.headers);
    let existing = session::cookie(&parts.headers, session::CSRF_COOKIE).filter(|c| c.len() >= 16);
    let csrf_cookie = existing.clone().unwrap_or_else(session::new_csrf_cookie);
    let body = if parts.method == http::Method::POST {
        let cross_site = parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !matches!(v, "same-origin" | "none"));
        if cross_site {
            return refused(area, "This form was sent from another site, so it was refused.");
        }
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
            return refused(area, "The form is too large (over 1 MB).");
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let presented = pairs.iter().find(|(k, _)| k == session::CSRF_FIELD).map(|(_, v)| v.as_str()).unwrap_or("");
        let session_cookie = session::cookie(&parts.headers, area.cookie()).unwrap_or_default();
        let ok = existing.is_some() && session::csrf_ok(&state.session_key, &csrf_cookie, &session_cookie, presented);
        if !ok {
            return refused(
                area,
                "This form has expired (the page was open across a sign-in, a sign-out or a restart). \
                 Go back, reload the page and send it again.",
            );
        }
        axum::body::Body::from(bytes)
    } else {
        body
    };
    let flash_cookie = session::cookie(&parts.headers, session::FLASH_COOKIE);
    let flash = flash_cookie.as_deref().and_then(|v| session::read_flash(&state.session_key, v));
    parts.extensions.insert(CsrfCookie(csrf_cookie.clone()));
    parts.extensions.insert(Flash(flash));
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    let h = resp.headers_mut();
    if existing.is_none() {
        let c = session::set_cookie(session::CSRF_COOKIE, &csrf_cookie, "/", None, https);
        h.append(header::SET_COOKIE, HeaderValue::from_str(&c).expect("a cookie of base64url text"));
    }
    let sets_flash = h.get_all(header::SET_COOKIE).iter().any(|c| c.as_bytes().starts_with(b"hr_flash="));
    if flash_cookie.is_some() && !sets_flash {
        let c = session::set_cookie(session::FLASH_COOKIE, "", "/", Some(0), https);
        h.append(header::SET_COOKIE, HeaderValue::from_str(&c).expect("a plain cookie"));
    }
    if h.get(header::CONTENT_TYPE).is_some_and(|c| c.as_bytes().starts_with(b"text/html")) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

fn refused(area: Area, message: &str) -> Response {
    let body = layout::bare(
        area,
        "Refused",
        html! { h1 { "Refused" } p { (message) } p { a href=(area.base()) { "Back to the start" } } },
    );
    (StatusCode::FORBIDDEN, body).into_response()
}

/// A request of a signed-in user (or anyone, in the console of an API without keys): the
/// state, who is calling, the area, the form token and the flash message.
pub struct Ctx {
    /// Everything the API's handlers reach.
    pub state: ApiState,
    /// Who is calling, as the API's handlers take it.
    pub caller: Caller,
    /// Console or portal.
    pub area: Area,
    /// The token forms carry.
    pub csrf: String,
    /// A message from the previous request.
    pub flash: Option<(String, String)>,
    /// The path and query of the request.
    pub path: String,
    /// Over TLS (cookies get `Secure`).
    pub https: bool,
}

impl FromRequestParts<ApiState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let area = Area::of(parts.uri.path()).unwrap_or(Area::Console);
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        let snapshot = state.router.snapshot();
        let from = crate::api::access::peer(&parts.extensions).map(|p| p.remote.ip());
        let Some(caller) = session::caller(area, &parts.headers, &state.session_key, &snapshot, from) else {
            let to = match area {
                Area::Console => format!("/ui/login?next={}", encode(&path)),
                Area::Portal => "/portal/login".to_string(),
            };
            return Err(axum::response::Redirect::to(&to).into_response());
        };
        let csrf_cookie = parts.extensions.get::<CsrfCookie>().map(|c| c.0.clone()).unwrap_or_default();
        let session_cookie = session::cookie(&parts.headers, area.cookie()).unwrap_or_default();
        Ok(Self {
            csrf: session::csrf_token(&state.session_key, &csrf_cookie, &session_cookie),
            flash: parts.extensions.get::<Flash>().and_then(|f| f.0.clone()),
            https: crate::api::tenants::is_https(&parts.headers),
            state: state.clone(),
            caller,
            area,
            path,
        })
    }
}

impl Ctx {
    /// A full page.
    pub fn page(&self, title: &str, body: Markup) -> Response {
        layout::page(self, title, body).into_response()
    }

    /// A full page with a status other than 200 (a form with errors: 422).
    pub fn page_status(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        (status, layout::page(self, title, body)).into_response()
    }

    /// An API error as a page: its status, its message.
    pub fn error(&self, e: ApiError) -> Response {
        let title = match e.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            _ => "Something went wrong",
        };
        let body = html! {
            (layout::heading(title, None, None))
            (layout::error_panel(&e))
            p { a href=(self.area.base()) { "Back to the overview" } }
        };
        self.page_status(e.status, title, body)
    }

    /// After a POST: back to a page, with a message shown there once.
    pub fn redirect(&self, to: &str, kind: &str, message: &str) -> Response {
        let flash = session::flash_value(&self.state.session_key, kind, message);
        let cookie = session::set_cookie(session::FLASH_COOKIE, &flash, "/", Some(60), self.https);
        let mut resp = axum::response::Redirect::to(to).into_response();
        resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("base64url text"));
        resp
    }

    /// A path inside this area.
    pub fn link(&self, rest: &str) -> String {
        format!("{}{rest}", self.area.base())
    }

    /// Whether there is a session to end (not in a keyless console).
    pub fn signed_in(&self) -> bool {
        !(self.area == Area::Console && self.state.router.snapshot().api.keys.is_empty())
    }

    /// The subscriptions' path in this area: `subscriptions` (console) or `endpoints` (portal).
    pub fn subs(&self) -> &'static str {
        match self.area {
            Area::Console => "subscriptions",
            Area::Portal => "endpoints",
        }
    }
}

/// A request outside a session (sign-in pages): the area and the form token.
pub struct Public {
    area: Area,
    csrf: String,
    https: bool,
    /// The caller's address (an API key may be bound to networks).
    from: Option<std::net::IpAddr>,
}

impl FromRequestParts<ApiState> for Public {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let area = Area::of(parts.uri.path()).unwrap_or(Area::Console);
        let csrf_cookie = parts.extensions.get::<CsrfCookie>().map(|c| c.0.clone()).unwrap_or_default();
        let session_cookie = session::cookie(&parts.headers, area.cookie()).unwrap_or_default();
        Ok(Self {
            area,
            csrf: session::csrf_token(&state.session_key, &csrf_cookie, &session_cookie),
            https: crate::api::tenants::is_https(&parts.headers),
            from: crate::api::access::peer(&parts.extensions).map(|p| p.remote.ip()),
        })
    }
}

/// Ends the area's session.
async fn session_out(public: Public) -> Response {
    let cookie =
        session::set_cookie(public.area.cookie(), "", public.area.base().trim_end_matches('/'), Some(0), public.https);
    let to = match public.area {
        Area::Console => "/ui/login",
        Area::Portal => "/portal/login",
    };
    let mut resp = axum::response::Redirect::to(to).into_response();
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a plain cookie"));
    resp
}

/// A form post's fields, repeated keys kept (checkboxes).
pub struct FormData(Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for FormData {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM)
            .await
            .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response())?;
        let pairs = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("the form does not parse: {e}")).into_response())?;
        Ok(Self(pairs))
    }
}

impl FormData {
    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    /// Whether a checkbox `name` is ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && v != "false")
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').to_string()
}
