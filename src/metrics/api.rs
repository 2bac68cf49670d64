//! The admin API's refusals ([`ApiRefusal`], [`api_refused`]): requests refused before any
//! handler ran, counted by why. The metric's name and meaning are with the others, in the parent
//! module.

use super::INSTALLED;

/// Why the API refused a request before any handler ran: the `reason` label of [`API_REFUSED`](super::API_REFUSED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRefusal {
    /// The caller's address is outside `[api] allow_from` (403).
    Address,
    /// The key was presented from an address outside the key's own `allow_from` (403).
    KeyAddress,
    /// Keyless API: the `Host` does not name this API (421).
    Host,
    /// Keyless API: a browser marked the request cross-site (403).
    CrossSite,
    /// A state-changing request without a JSON content type (415).
    ContentType,
}

impl ApiRefusal {
    /// Every value, in label order.
    pub const ALL: [ApiRefusal; 5] = [Self::Address, Self::KeyAddress, Self::Host, Self::CrossSite, Self::ContentType];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::KeyAddress => "key_address",
            Self::Host => "host",
            Self::CrossSite => "cross_site",
            Self::ContentType => "content_type",
        }
    }
}

/// The API refused a request before any handler ran.
pub fn api_refused(reason: ApiRefusal) {
    if let Some(inst) = INSTALLED.get() {
        // `ALL` is in declaration order, so the discriminant is the index.
        inst.api_refused[reason as usize].increment(1);
    }
}
