//! The portal's own pages: entering through a one-time link (a page with a button, so that a
//! link preview fetching the URL does not use it up; the POST uses the link and sets the session
//! cookie), signing in with a tenant token, and how to verify a webhook's signature (also served
//! by the console, at `/ui/verify`).

use super::layout::{self, csrf_field};
use super::session::{self, Area};
use super::{Ctx, FormData, Public};
use crate::api::ApiState;
use crate::api::auth::TenantGrant;
use crate::api::error::Query;
use crate::api::tenants::{PORTAL_SESSION, nonce_hash};
use crate::tokens::TokenScope;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderValue, StatusCode, header};
use maud::html;

/// `?link=<nonce>`.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Link {
    link: Option<String>,
}

/// The page a portal link opens: one button that uses the link.
pub(super) async fn enter_page(public: Public, Query(q): Query<Link>) -> Response {
    let link = q.link.unwrap_or_default();
    let body = html! {
        h1 { "Open your webhooks portal" }
        p { "This link signs you in once. Continue to open the portal in this browser." }
        form method="post" action="/portal/enter" {
            (csrf_field(&public.csrf))
            input type="hidden" name="link" value=(link);
            button type="submit" { "Continue to the portal" }
        }
    };
    layout::bare(Area::Portal, "Webhooks portal", body).into_response()
}

/// Uses the link (once) and opens the session.
pub(super) async fn enter(public: Public, State(state): State<ApiState>, form: FormData) -> Response {
    let refused = |m: &str| {
        let body = html! {
            h1 { "This link cannot be used" }
            div.alert.error role="alert" { (m) }
            p { "Ask your operator for a new portal link, or " a href="/portal/login" { "sign in with a token" } "." }
        };
        (StatusCode::FORBIDDEN, layout::bare(Area::Portal, "Webhooks portal", body)).into_response()
    };
    let Some(link) = form.get("link") else { return refused("The link is incomplete.") };
    let now = crate::broker::now_ms() as i64;
    let used = match state.store.use_portal_link(&nonce_hash(&link), now).await {
        Ok(u) => u,
        Err(e) => return refused(&format!("The store did not answer ({e}); try again in a moment.")),
    };
    let Some(used) = used else {
        return refused("It was used already, it has expired, or it is not a portal link of this service.");
    };
    let Some(scope) = TokenScope::parse(&used.scope) else { return refused("The link names an unknown scope.") };
    open_session(&state, public.https, &TenantGrant { tenant: used.tenant, scope })
}

fn open_session(state: &ApiState, https: bool, grant: &TenantGrant) -> Response {
    let Some(key) = &state.token_key else {
        return (StatusCode::SERVICE_UNAVAILABLE, "portal sessions need HOOKRELAY_TOKEN_KEY or HOOKRELAY_SECRET_KEY")
            .into_response();
    };
    let value = session::portal_session(key, grant, PORTAL_SESSION);
    let cookie = session::set_cookie(Area::Portal.cookie(), &value, "/portal", Some(PORTAL_SESSION.as_secs()), https);
    let mut resp = Redirect::to("/portal/").into_response();
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a JWT is cookie-safe"));
    resp
}

/// Sign in with a tenant token.
pub(super) async fn login_page(public: Public) -> Response {
    login_form(&public, None, StatusCode::OK)
}

fn login_form(public: &Public, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Sign in to your webhooks portal" }
        p.muted { "Use the portal link your operator sent you, or paste a tenant token here." }
        @if let Some(e) = error { div.alert.error role="alert" { (e) } }
        form method="post" action="/portal/login" {
            (csrf_field(&public.csrf))
            div.field { label for="token" { "Tenant token" } textarea id="token" name="token" required {} }
            button type="submit" { "Sign in" }
        }
    };
    (status, layout::bare(Area::Portal, "Sign in · Webhooks portal", body)).into_response()
}

/// Checks the token and opens a session for its tenant and scope (the session ends with the
/// token, or after the portal's session length, whichever comes first).
pub(super) async fn login(public: Public, State(state): State<ApiState>, form: FormData) -> Response {
    let Some(key) = &state.token_key else {
        return login_form(
            &public,
            Some("This service accepts no tenant tokens (no token key is set)."),
            StatusCode::SERVICE_UNAVAILABLE,
        );
    };
    let token = form.get("token").unwrap_or_default();
    match key.verify_tenant(&token) {
        Ok(claims) => {
            let left = claims.exp.saturating_sub(crate::tokens::unix_now());
            let grant = TenantGrant { tenant: claims.tenant, scope: claims.scope };
            let value = session::portal_session(key, &grant, PORTAL_SESSION.min(std::time::Duration::from_secs(left)));
            let cookie = session::set_cookie(
                Area::Portal.cookie(),
                &value,
                "/portal",
                Some(left.min(PORTAL_SESSION.as_secs())),
                public.https,
            );
            let mut resp = Redirect::to("/portal/").into_response();
            resp.headers_mut()
                .append(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a JWT is cookie-safe"));
            resp
        }
        Err(e) => login_form(&public, Some(&e.to_string()), StatusCode::UNAUTHORIZED),
    }
}

/// How to verify a webhook: the headers, the algorithm, and code in three languages.
pub(super) async fn verify(ctx: Ctx) -> Response {
    let body = html! {
        (layout::heading("Verifying signatures", Some(html! { "Every request is signed per the Standard Webhooks specification, so its published libraries verify it unchanged." }), None))
        div.card {
            h2 { "What each request carries" }
            ul {
                li { code { "webhook-id" } ": the event id, the same on every retry: deduplicate on it." }
                li { code { "webhook-timestamp" } ": Unix seconds of this attempt: refuse ones more than 5 minutes away from now." }
                li { code { "webhook-signature" } ": " code { "v1,<base64>" } "; during a secret rotation, two of them, space-separated: accept either." }
            }
            h2 { "The algorithm" }
            ol.steps {
                li { "Take your endpoint's secret " code { "whsec_…" } " and base64-decode what follows " code { "whsec_" } ": that is the key." }
                li { "Sign " code { "{webhook-id}.{webhook-timestamp}.{raw body}" } " with HMAC-SHA256 under the key and base64-encode the result." }
                li { "Compare it, in constant time, with each " code { "v1," } " value of " code { "webhook-signature" } ". Use the raw body bytes, before any JSON parsing." }
            }
            p.muted { "Your secret is shown once, when the endpoint is added or its secret rotated (Endpoints → Rotate secret)." }
        }
        div.card {
            h2 { "Python" }
            pre.code { "# pip install standardwebhooks\nfrom standardwebhooks.webhooks import Webhook\n\nwh = Webhook(\"whsec_...\")\npayload = wh.verify(request.body, request.headers)  # raises on a bad signature" }
            h2 { "Node.js" }
            pre.code { "// npm install standardwebhooks\nimport { Webhook } from \"standardwebhooks\";\n\nconst wh = new Webhook(\"whsec_...\");\nconst payload = wh.verify(rawBody, headers); // throws on a bad signature" }
            h2 { "Go" }
            pre.code { "// go get github.com/standard-webhooks/standard-webhooks/libraries/go\nwh, _ := standardwebhooks.NewWebhook(\"whsec_...\")\nerr := wh.Verify(body, r.Header) // nil when the signature holds" }
        }
    };
    ctx.page("Verifying signatures", body)
}
