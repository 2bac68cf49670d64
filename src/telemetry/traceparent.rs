//! W3C trace context: parsing and formatting `traceparent`, the value to send on a webhook, and
//! the value to pass on to the next hop.

use super::TRACES_ON;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` to send for `span`: the span's own context when traces are on; otherwise
/// `incoming` when it is a valid `traceparent`, else a new random one (same shape either way).
pub fn traceparent(span: &Span, incoming: Option<&str>) -> String {
    let made;
    let valid = match incoming.and_then(checked_traceparent) {
        Some(tp) => tp,
        None => {
            made = new_traceparent();
            &made
        }
    };
    traceparent_ref(span, valid).into_owned()
}

/// [`traceparent`] for a `valid` one, checked by [`checked_traceparent`] or made by
/// [`new_traceparent`]: the span's own context when traces are on, else `valid` itself, borrowed
/// (no copy, and no second check, per attempt).
pub fn traceparent_ref<'a>(span: &Span, valid: &'a str) -> Cow<'a, str> {
    if TRACES_ON.load(Ordering::Relaxed)
        && let Some(own) = own_traceparent(span)
    {
        return Cow::Owned(own);
    }
    Cow::Borrowed(valid)
}

/// The span's own context as a `traceparent`, when it has a valid one.
fn own_traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format_traceparent(&sc))
}

/// The `traceparent` to pass on with something handed to the next hop (the ingest API's
/// publish): the span's own context when traces are on; otherwise `incoming` when it is a valid
/// `traceparent`; otherwise none, so that the next hop can still use what the event itself
/// carries (its `traceparent` extension).
pub fn forward_traceparent(span: &Span, incoming: Option<&str>) -> Option<String> {
    if TRACES_ON.load(Ordering::Relaxed)
        && let Some(own) = own_traceparent(span)
    {
        return Some(own);
    }
    incoming.map(str::trim).filter(|tp| traceparent_fields(tp).is_some()).map(str::to_string)
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// A fresh, sampled W3C `traceparent`, for events that carry none.
pub fn new_traceparent() -> String {
    // Written digit by digit into an array: `format!` of a 128-bit hex number cost about 2,000
    // instructions, pushing each digit onto a `String` about 900 in all.
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    write_hex(&mut out[3..35], fastrand::u128(1..));
    write_hex(&mut out[36..52], u128::from(fastrand::u64(1..)));
    String::from_utf8(out.to_vec()).expect("a traceparent is ASCII")
}

/// `00-` + 32 + `-` + 16 + `-01`.
#[cfg(test)]
const TRACEPARENT_LEN: usize = 55;

/// The last `out.len()` hex digits of `n`, lowercase, zero-padded.
fn write_hex(out: &mut [u8], mut n: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for digit in out.iter_mut().rev() {
        *digit = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Parses a W3C `traceparent` (`version-traceid-parentid-flags`, lowercase hex; version `ff`
/// and all-zero ids are invalid; future versions may append fields).
pub fn parse_traceparent(s: &str) -> Option<SpanContext> {
    let (trace, span, flags) = traceparent_fields(s.trim())?;
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(trace_id, span_id, TraceFlags::new(flags & 1), true, TraceState::default()))
}

/// Whether `s` is a valid `traceparent` by the rules of [`parse_traceparent`], without building
/// its [`SpanContext`]: what the per-event path asks of an incoming one (parsing the ids as
/// numbers took about 2,000 instructions an event).
pub fn is_valid_traceparent(s: &str) -> bool {
    checked_traceparent(s).is_some()
}

/// `s` trimmed, when it is a valid `traceparent` ([`is_valid_traceparent`]): what is sent on.
pub fn checked_traceparent(s: &str) -> Option<&str> {
    let s = s.trim();
    traceparent_fields(s).map(|_| s)
}

/// The trace id, span id and flags of a valid `traceparent` (lowercase hex of the right
/// lengths, version not `ff`, ids not all zeros, nothing appended to version `00`; a later
/// version may append `-` and more). Checked byte by byte at the fixed places of the dashes:
/// splitting on `-` and checking each part cost about 1,200 instructions an event.
fn traceparent_fields(s: &str) -> Option<(&str, &str, &str)> {
    /// `version-trace-span-flags`: 2 + 1 + 32 + 1 + 16 + 1 + 2.
    const LEN: usize = 55;
    let b = s.as_bytes();
    let dash = |i: usize| b.get(i) == Some(&b'-');
    if b.len() < LEN || !dash(2) || !dash(35) || !dash(52) {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(|&c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zeros = |r: std::ops::Range<usize>| b[r].iter().all(|&c| c == b'0');
    let version = &b[..2];
    if !hex(0..2) || version == b"ff" || !hex(3..35) || !hex(36..52) || !hex(53..LEN) {
        return None;
    }
    // Version 00 ends there; a later one may go on after a dash.
    if b.len() > LEN && (version == b"00" || !dash(LEN)) {
        return None;
    }
    if zeros(3..35) || zeros(36..52) {
        return None;
    }
    // Every cut is next to a dash, an ASCII byte: all are character boundaries.
    Some((s.get(3..35)?, s.get(36..52)?, s.get(53..LEN)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_follows_the_w3c_rules() {
        let sc = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(!parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().is_sampled());
        // A later version may append fields; version 00 may not.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902é-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
            assert!(!is_valid_traceparent(bad), "{bad:?}");
        }
        assert!(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        // A later version may append fields after a dash, even an empty one.
        assert!(is_valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-"));
        let (trace, span, flags) =
            traceparent_fields("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-x-y").unwrap();
        assert_eq!((trace, span, flags), ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "09"));
    }

    #[test]
    fn without_traces_the_incoming_traceparent_passes_through_or_a_new_one_is_made() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(&Span::none(), Some(tp)), tp);
        for incoming in [None, Some("garbage")] {
            let made = traceparent(&Span::none(), incoming);
            assert!(parse_traceparent(&made).is_some_and(|sc| sc.is_sampled()), "{made}");
        }
        let sc = parse_traceparent(tp).unwrap();
        assert_eq!(format_traceparent(&sc), tp);
        let padded = format!(" {tp} ");
        assert_eq!(traceparent(&Span::none(), Some(&padded)), tp, "trimmed");
        assert_eq!(checked_traceparent(&padded), Some(tp));
        assert_eq!(checked_traceparent("garbage"), None);
        assert!(matches!(traceparent_ref(&Span::none(), tp), Cow::Borrowed(t) if t == tp), "passed on as is");
    }

    #[test]
    fn new_traceparents_have_the_w3c_shape() {
        for _ in 0..1000 {
            let tp = new_traceparent();
            assert_eq!(tp.len(), TRACEPARENT_LEN, "{tp}");
            let sc = parse_traceparent(&tp).unwrap_or_else(|| panic!("{tp} does not parse"));
            assert!(sc.is_sampled());
            assert_eq!(format_traceparent(&sc), tp);
        }
        assert_ne!(new_traceparent(), new_traceparent());
    }
}
