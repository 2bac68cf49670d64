//! One-time portal links: what an operator's `POST /v1/tenants/{id}/portal-link` leaves in the
//! store. The link's nonce is only in the URL handed to the tenant; the store keeps its SHA-256,
//! so reading the store does not open anyone's portal. A link is accepted once
//! ([`Store::use_portal_link`](super::Store::use_portal_link) marks it used in the statement that
//! reads it) and only before it expires.

/// A portal link as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalLink {
    /// Hex SHA-256 of the nonce in the URL.
    pub nonce_hash: String,
    /// The tenant whose portal it opens.
    pub tenant: String,
    /// `read` or `manage`.
    pub scope: String,
    /// Who made it (the API key's name).
    pub created_by: String,
    /// When (Unix ms).
    pub created_at_ms: i64,
    /// Not accepted from then on (Unix ms).
    pub expires_at_ms: i64,
}
