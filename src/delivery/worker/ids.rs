//! The ids of an event the pipeline refused (its `id`, `type` and `traceparent`, read without
//! decoding the rest), for the refusal's span and log line.

use std::borrow::Cow;

/// The ids of an event the pipeline refused, for its span and log line.
#[derive(serde::Deserialize)]
pub(super) struct EventIds<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    pub(super) ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) traceparent: Option<Cow<'a, str>>,
}

impl<'a> EventIds<'a> {
    pub(super) fn peek(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}
