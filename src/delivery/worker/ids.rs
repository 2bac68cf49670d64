//! An event the pipeline refused: its ids (`id`, `type` and `traceparent`, read without
//! decoding the rest) for the refusal's span and log line, and its dead letter.

use super::Dispatch;
use crate::broker::BrokerError;
use crate::delivery::settle::{DeadLetter, Settled};
use crate::delivery::verdict::Reason;
use crate::pipeline::Rejection;
use crate::telemetry;
use std::borrow::Cow;
use tracing::{Instrument, warn};

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

impl Dispatch<'_> {
    /// Dead-letters an event the pipeline refused. The log says which event and why, never its
    /// data: schema violations by path only (their messages quote the data; the dead letter
    /// keeps them).
    pub(super) async fn refuse(&self, rej: Rejection) -> Result<Settled, BrokerError> {
        let span = telemetry::event_span(&self.route.name, self.header_tp);
        // Only on this rare path: the ids, read again from an event that did not pass.
        let ids = (rej.reason != Reason::TooLarge).then(|| EventIds::peek(&self.message.body)).flatten();
        if let Some(ids) = &ids {
            if self.header_tp.is_none()
                && let Some(tp) = ids.traceparent.as_deref()
            {
                telemetry::set_parent(&span, tp);
            }
            telemetry::record_event(
                &span,
                ids.id.as_deref().unwrap_or_default(),
                ids.ty.as_deref().unwrap_or_default(),
            );
        }
        async {
            let (revision, reason) = (&self.snap.revision, rej.reason.as_str());
            if rej.reason == Reason::Schema {
                let paths: Vec<&str> =
                    rej.violations.iter().map(|v| if v.path.is_empty() { "/" } else { v.path.as_str() }).collect();
                warn!(%revision, reason, violations = rej.violations.len(), paths = %paths.join(", "), "event refused (its data does not match the schema; the dead letter has the details); dead-lettering");
            } else {
                warn!(%revision, reason, error = %rej.message, "event refused; dead-lettering");
            }
            let details =
                (!rej.violations.is_empty()).then(|| serde_json::to_value(&rej.violations).unwrap_or_default());
            let dl = DeadLetter {
                reason: rej.reason,
                error: &rej.message,
                details,
                last_status: None,
                last_response: None,
                attempts: self.attempt - 1,
            };
            self.settle.dead_letter(dl).await
        }
        .instrument(span)
        .await
    }
}
