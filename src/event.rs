//! The CloudEvents 1.0 envelope in structured JSON mode: what producers publish and POST.
//!
//! Decoding checks the required attributes (`id`, `source`, `type`, `specversion` = `1.0`) and
//! keeps every other attribute (extensions included) so that the `cloudevents` body format can
//! send the event back out unchanged.
//!
//! It also refuses attributes that could not be carried where they go, so that ingest (422)
//! and the AMQP consumer (dead letter `malformed`) refuse the same events:
//!
//! - `id`, `type` and `source`: printable ASCII without spaces (U+0021 to U+007E). The id is
//!   sent as the `webhook-id` header and signed: a header value cannot carry control
//!   characters, HTTP parsers strip surrounding spaces, and receivers read non-ASCII bytes in
//!   different encodings, so any other character would give a header the signature does not
//!   match. The type is a topic routing key and a directory under `schemas/`; the source is a
//!   URI-reference (RFC 3986 has no character outside this set).
//! - `id` and `type` at most 255 bytes: they travel as an AMQP `message-id` and routing key,
//!   which are short strings of at most 255 bytes.
//! - A `sequence` given as a string (sent as `hookrelay-sequence`): the same set as `id`.
//! - Every other string attribute (`subject`, `time`, extensions; not `data`): a CloudEvents
//!   String, which excludes the control characters U+0000–U+001F and U+007F–U+009F and the
//!   Unicode noncharacters (CloudEvents 1.0.2, "Type System"). Not only ASCII: a subject names a
//!   tenant or an entity in any language, and is never copied into a header as it is (the
//!   CloudEvents HTTP binding percent-encodes header values).
//! - `subject`, when present, not empty (CloudEvents 1.0.2: "MUST be a non-empty string").
//! - `deliverat` (scheduled delivery, docs/delivery-shapes.md), when present, an RFC 3339
//!   date-time as a string; how far ahead it may lie is `[limits] max_schedule_ahead`
//!   ([`CloudEvent::check_schedule`]).

pub mod data;
mod de;
mod scan;

pub use data::{Data, DataRef};

use serde::Serialize;
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime};

/// A decoded CloudEvent (decoded in one pass: by hand in `scan.rs`, else by serde_json in `de.rs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudEvent {
    /// Unique per producer; the idempotency key and the `webhook-id`.
    pub id: String,
    /// The producer.
    pub source: String,
    /// The event type, e.g. `order.created`; also the routing key.
    #[serde(rename = "type")]
    pub ty: String,
    /// Always `1.0`.
    pub specversion: String,
    /// When the event happened (RFC 3339), if the producer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The tenant or entity the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Schema version of `data` (`"2"` or `"v2"`); default the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataversion: Option<String>,
    /// Producer order, passed on as `hookrelay-sequence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<Value>,
    /// The payload (a tree of spans of the event's text, see [`data`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    /// Every other attribute (`datacontenttype`, `traceparent`, extensions).
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

/// The extension attribute that schedules an event's delivery: not before this RFC 3339 time.
pub const DELIVER_AT: &str = "deliverat";

/// An RFC 3339 `date-time` (a CloudEvent's `time`) as a point in time; `None` when it does not
/// parse. `humantime` reads the UTC form (`Z`); a numeric offset (`-03:00`) is applied here.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let (utc, offset) = match b.len().checked_sub(6).map(|i| (i, &b[i..])) {
        Some((i, [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2])) => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let d = |x: u8| u64::from(x - b'0');
            let secs = (d(*h1) * 10 + d(*h2)) * 3600 + (d(*m1) * 10 + d(*m2)) * 60;
            (&s[..i], Some((*sign, Duration::from_secs(secs))))
        }
        _ => (s.strip_suffix(['Z', 'z'])?, None),
    };
    if utc.ends_with('.') {
        return None;
    }
    let local = humantime::parse_rfc3339_weak(utc).ok()?;
    match offset {
        None => Some(local),
        Some((b'+', ahead)) => local.checked_sub(ahead),
        Some((_, behind)) => local.checked_add(behind),
    }
}

/// Why bytes are not a CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not an object with the required string attributes.
    #[error("not a structured-mode CloudEvent: {0}")]
    Malformed(String),
    /// `specversion` is not 1.0.
    #[error("unsupported specversion {0:?} (only \"1.0\")")]
    SpecVersion(String),
    /// A required attribute is empty.
    #[error("attribute `{0}` must not be empty")]
    Empty(&'static str),
    /// An attribute holds what cannot be carried where it goes (see the module documentation).
    #[error("attribute `{name}` {problem}")]
    Attribute {
        /// The attribute.
        name: String,
        /// What is wrong with it, and what is allowed.
        problem: String,
    },
}

impl DecodeError {
    /// The attribute the error is about, if it is about one.
    pub fn attribute(&self) -> Option<&str> {
        match self {
            Self::Empty(name) => Some(name),
            Self::Attribute { name, .. } => Some(name),
            Self::SpecVersion(_) => Some("specversion"),
            Self::Malformed(_) => None,
        }
    }
}

/// The most an AMQP short string (a `message-id`, a routing key) holds.
pub const MAX_SHORT: usize = 255;

/// What `id`, `type`, `source` and a string `sequence` may hold: visible ASCII, no space.
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic()
}

/// What a CloudEvents String may not hold: control characters and Unicode noncharacters.
fn is_forbidden_in_string(c: char) -> bool {
    let n = c as u32;
    c.is_control() || (0xFDD0..=0xFDEF).contains(&n) || (n & 0xFFFE) == 0xFFFE
}

/// `U+000A` for a character, the form the messages name it by.
fn code_point(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// Checks a token attribute (`id`, `type`, `source`, a string `sequence`).
fn check_token(name: &str, value: &str, max: Option<usize>, why: &str) -> Result<(), DecodeError> {
    let bad = |problem: String| Err(DecodeError::Attribute { name: name.to_string(), problem });
    if let Some((i, c)) = value.chars().enumerate().find(|(_, c)| !is_token_char(*c)) {
        return bad(format!(
            "has {} at character {}: it may hold printable ASCII without spaces only (U+0021 to U+007E), {why}",
            code_point(c),
            i + 1
        ));
    }
    if let Some(max) = max
        && value.len() > max
    {
        return bad(format!("is {} bytes long: at most {max}, {why}", value.len()));
    }
    Ok(())
}

/// Checks a CloudEvents String attribute.
fn check_string(name: &str, value: &str) -> Result<(), DecodeError> {
    // Printable ASCII, most attributes, holds nothing forbidden: checked a word at a time
    // instead of character by character (about 1,000 instructions per event, fourteenth round
    // of docs/performance.md).
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    match value.chars().enumerate().find(|(_, c)| is_forbidden_in_string(*c)) {
        Some((i, c)) => Err(DecodeError::Attribute {
            name: name.to_string(),
            problem: format!(
                "has {} at character {}: CloudEvents strings may not hold control characters (U+0000–U+001F, \
                 U+007F–U+009F) or Unicode noncharacters",
                code_point(c),
                i + 1
            ),
        }),
        None => Ok(()),
    }
}

impl CloudEvent {
    /// Decodes and checks a structured-mode event.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        // UTF-8 checked once over the whole body, then parsed as text: serde_json's byte reader
        // checks each string on its own (about 6k instructions per 1 KiB event, docs/
        // performance.md). The hand-written decoder first (`scan.rs`); what it leaves, serde_json
        // decodes, and says what is wrong.
        let text = std::str::from_utf8(bytes);
        let ev: CloudEvent = match text.as_ref().ok().and_then(|text| scan::event(text)) {
            Some(ev) => Ok(ev),
            None => Self::decode_with_serde(bytes, text.ok()),
        }
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if ev.specversion != "1.0" {
            return Err(DecodeError::SpecVersion(ev.specversion));
        }
        for (name, value) in [("id", &ev.id), ("source", &ev.source), ("type", &ev.ty)] {
            if value.is_empty() {
                return Err(DecodeError::Empty(name));
            }
        }
        ev.check_attributes()?;
        Ok(ev)
    }

    /// `bytes` decoded by serde_json (`de.rs`): as text when they are UTF-8 (`text`), else
    /// through its byte reader, for its error, which says where.
    fn decode_with_serde(bytes: &[u8], text: Option<&str>) -> Result<Self, serde_json::Error> {
        match text {
            Some(text) => {
                use serde::de::DeserializeSeed;
                let mut de = serde_json::Deserializer::from_str(text);
                de::EventSeed { text }.deserialize(&mut de).and_then(|ev| de.end().map(|()| ev))
            }
            None => serde_json::from_slice(bytes),
        }
    }

    /// The checks of the module documentation on everything but `data`.
    fn check_attributes(&self) -> Result<(), DecodeError> {
        check_token(
            "id",
            &self.id,
            Some(MAX_SHORT),
            "as it is sent as the `webhook-id` header and the AMQP message-id",
        )?;
        check_token("type", &self.ty, Some(MAX_SHORT), "as it is the AMQP routing key")?;
        check_token("source", &self.source, None, "as it is a URI-reference")?;
        if let Some(Value::String(seq)) = &self.sequence {
            check_token("sequence", seq, None, "as it is sent as the `hookrelay-sequence` header")?;
        }
        if self.subject.as_deref() == Some("") {
            return Err(DecodeError::Empty("subject"));
        }
        let optional = [("subject", &self.subject), ("time", &self.time), ("dataversion", &self.dataversion)];
        for (name, value) in optional {
            if let Some(v) = value {
                check_string(name, v)?;
            }
        }
        for (name, value) in &self.extensions {
            if let Value::String(v) = value {
                check_string(name, v)?;
            }
        }
        self.deliver_at()?;
        Ok(())
    }

    /// `deliverat`, when the event has one: an error unless it is an RFC 3339 date-time.
    pub fn deliver_at(&self) -> Result<Option<SystemTime>, DecodeError> {
        let Some(value) = self.extensions.get(DELIVER_AT) else { return Ok(None) };
        match value.as_str().and_then(parse_time) {
            Some(at) => Ok(Some(at)),
            None => Err(DecodeError::Attribute {
                name: DELIVER_AT.into(),
                problem: format!("must be an RFC 3339 date-time such as \"2030-01-31T09:30:00Z\", not {value}"),
            }),
        }
    }

    /// Refuses a `deliverat` more than `max_ahead` after `now` (`[limits] max_schedule_ahead`).
    pub fn check_schedule(&self, max_ahead: Duration, now: SystemTime) -> Result<(), DecodeError> {
        match self.deliver_at()? {
            Some(at) if at.duration_since(now).is_ok_and(|ahead| ahead > max_ahead) => Err(DecodeError::Attribute {
                name: DELIVER_AT.into(),
                problem: format!(
                    "lies more than {} ahead ([limits] max_schedule_ahead)",
                    humantime::format_duration(max_ahead)
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The requested schema version: `"2"`, `"v2"` → 2.
    pub fn data_version(&self) -> Option<Result<u32, String>> {
        self.dataversion.as_deref().map(|v| v.trim_start_matches(['v', 'V']).parse::<u32>().map_err(|_| v.to_string()))
    }

    /// The producer's sequence as header text, if given.
    pub fn sequence_text(&self) -> Option<String> {
        match self.sequence.as_ref()? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A W3C `traceparent` carried as a CloudEvents extension (distributed tracing extension).
    pub fn traceparent(&self) -> Option<&str> {
        self.extensions.get("traceparent").and_then(Value::as_str)
    }

    /// One attribute as it is in [`CloudEvent::into_value`]'s map (`None` when absent): `data`,
    /// `sequence` and extensions borrowed, string attributes as new JSON strings.
    pub fn attribute(&self, name: &str) -> Option<std::borrow::Cow<'_, Value>> {
        use std::borrow::Cow;
        let text = |s: &String| Cow::Owned(Value::String(s.clone()));
        match name {
            "id" => Some(text(&self.id)),
            "source" => Some(text(&self.source)),
            "type" => Some(text(&self.ty)),
            "specversion" => Some(text(&self.specversion)),
            "time" => self.time.as_ref().map(text),
            "subject" => self.subject.as_ref().map(text),
            "dataversion" => self.dataversion.as_ref().map(text),
            "sequence" => self.sequence.as_ref().map(Cow::Borrowed),
            "data" => self.data.as_ref().map(|d| Cow::Owned(d.to_value())),
            _ => self.extensions.get(name).map(Cow::Borrowed),
        }
    }

    /// `data` as schemas, filters and redaction read it: JSON `null` when the event has none.
    pub fn data_ref(&self) -> DataRef<'_> {
        DataRef::of(self.data.as_ref())
    }

    /// The event as a JSON map, as scripts and redaction see it.
    pub fn to_value(&self) -> Value {
        self.clone().into_value()
    }

    /// [`CloudEvent::to_value`] without copying: the attributes and `data` move into the map
    /// (in the order serialisation gives them: the attributes, `data`, then the extensions).
    pub fn into_value(self) -> Value {
        let mut m = Map::with_capacity(9 + self.extensions.len());
        m.insert("id".into(), Value::String(self.id));
        m.insert("source".into(), Value::String(self.source));
        m.insert("type".into(), Value::String(self.ty));
        m.insert("specversion".into(), Value::String(self.specversion));
        let optional = [("time", self.time), ("subject", self.subject), ("dataversion", self.dataversion)];
        for (k, v) in optional {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v));
            }
        }
        if let Some(s) = self.sequence {
            m.insert("sequence".into(), s);
        }
        if let Some(d) = self.data {
            m.insert("data".into(), d.to_value());
        }
        m.extend(self.extensions);
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_attributes_refuse_controls_and_noncharacters_only() {
        for ok in ["order-1", "printable ASCII ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./", "", "café", "注文", "🦀"] {
            assert!(check_string("id", ok).is_ok(), "{ok:?}");
        }
        for (bad, named) in [
            ("a\u{0}", "U+0000 at character 2"),
            ("a\rb", "U+000D at character 2"),
            ("\u{1f}", "U+001F at character 1"),
            ("x\u{7f}", "U+007F at character 2"),
            ("é\u{85}", "U+0085 at character 2"),
            ("\u{fdd0}", "U+FDD0"),
            ("z\u{fffe}", "U+FFFE"),
            ("\u{1ffff}", "U+1FFFF"),
        ] {
            let e = check_string("id", bad).expect_err(bad).to_string();
            assert!(e.contains(named), "{bad:?}: {e}");
        }
    }

    fn unix(s: &str) -> Option<f64> {
        parse_time(s).map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64())
    }

    #[test]
    fn rfc3339_times_parse_with_any_offset() {
        assert_eq!(unix("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(unix("2024-02-29T12:34:56Z"), Some(1_709_210_096.0));
        assert_eq!(unix("2024-02-29T12:34:56+00:00"), Some(1_709_210_096.0));
        assert_eq!(unix("2024-02-29T14:34:56+02:00"), Some(1_709_210_096.0));
        assert_eq!(unix("2024-02-29T07:04:56-05:30"), Some(1_709_210_096.0));
        assert_eq!(unix("2024-02-29T12:34:56.250z"), Some(1_709_210_096.25));
        assert_eq!(
            parse_time("2024-02-29T12:34:56.123456789Z").map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap()),
            Some(Duration::new(1_709_210_096, 123_456_789))
        );
    }

    #[test]
    fn deliverat_is_an_rfc3339_time_at_most_max_schedule_ahead_away() {
        let ev = |at: Value| {
            let mut e = serde_json::json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t"});
            e[DELIVER_AT] = at;
            CloudEvent::decode(&serde_json::to_vec(&e).unwrap())
        };
        let now = parse_time("2030-01-01T00:00:00Z").unwrap();
        let day = Duration::from_secs(86_400);
        let ok = ev("2030-01-02T00:00:00Z".into()).unwrap();
        assert_eq!(ok.deliver_at(), Ok(Some(now + day)));
        assert_eq!(ok.check_schedule(day, now), Ok(()));
        let far = ok.check_schedule(day - Duration::from_secs(1), now).unwrap_err();
        assert_eq!(far.attribute(), Some(DELIVER_AT));
        assert!(far.to_string().contains("max_schedule_ahead"), "{far}");
        assert_eq!(ev("2020-01-01T00:00:00Z".into()).unwrap().check_schedule(day, now), Ok(()), "past: at once");
        for bad in [Value::from("tomorrow"), Value::from("2030-01-02"), Value::from(1_900_000_000)] {
            assert_eq!(ev(bad.clone()).unwrap_err().attribute(), Some(DELIVER_AT), "{bad}");
        }
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "2024-02-29",
            "2024-02-29T12:34:56",
            "2024-13-01T00:00:00Z",
            "2024-02-29T24:00:00Z",
            "2024-02-29T12:34:56.Z",
            "2024-02-29T12:34:56+0200",
            "2024-02-29T12:34:56+02:0x",
            "x024-02-29T12:34:56Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decodes_required_and_keeps_extensions() {
        let ev = CloudEvent::decode(
            br#"{"id":"1","source":"shop","type":"order.paid","specversion":"1.0","tenant":"t1","data":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(ev.ty, "order.paid");
        assert_eq!(ev.extensions["tenant"], "t1");
        assert_eq!(ev.to_value()["tenant"], "t1");
    }

    #[test]
    fn into_value_is_what_serialisation_gives() {
        let raw = br#"{"id":"1","source":"s","type":"t","specversion":"1.0","time":"2026-01-01T00:00:00Z",
            "sequence":7,"traceparent":"00-a-b-01","data":{"x":[1,2]},"tenant":"t1"}"#;
        let ev = CloudEvent::decode(raw).unwrap();
        let serialised = serde_json::to_value(&ev).unwrap();
        let moved = ev.into_value();
        assert_eq!(moved, serialised);
        assert_eq!(serde_json::to_string(&moved).unwrap(), serde_json::to_string(&serialised).unwrap(), "same order");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_with_their_place() {
        // A latin-1 "é" in a string (byte 66), then a stray byte where a key belongs.
        let in_string = b"{\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"specversion\":\"1.0\",\"data\":\"caf\xe9\"}";
        let Err(DecodeError::Malformed(e)) = CloudEvent::decode(in_string) else { panic!("decoded") };
        assert_eq!(e, "invalid unicode code point at line 1 column 66");
        let Err(DecodeError::Malformed(e)) = CloudEvent::decode(b"{\"id\":\"1\",\xff}") else { panic!("decoded") };
        assert_eq!(e, "key must be a string at line 1 column 11");
        // The same event in UTF-8 decodes, its text as sent.
        let ok = CloudEvent::decode(
            "{\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"specversion\":\"1.0\",\"data\":\"café\"}".as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.data.map(|d| d.to_value()), Some(Value::String("café".into())));
    }

    #[test]
    fn refuses_missing_attributes_and_other_versions() {
        assert!(matches!(CloudEvent::decode(b"{}"), Err(DecodeError::Malformed(_))));
        assert!(matches!(CloudEvent::decode(b"not json"), Err(DecodeError::Malformed(_))));
        let v03 = br#"{"id":"1","source":"s","type":"t","specversion":"0.3"}"#;
        assert!(matches!(CloudEvent::decode(v03), Err(DecodeError::SpecVersion(_))));
        let empty = br#"{"id":"","source":"s","type":"t","specversion":"1.0"}"#;
        assert_eq!(CloudEvent::decode(empty), Err(DecodeError::Empty("id")));
    }

    fn decode_with(attr: &str, value: &str) -> Result<CloudEvent, DecodeError> {
        let mut ev = serde_json::json!({"id": "1", "source": "shop", "type": "order.paid", "specversion": "1.0"});
        ev[attr] = value.into();
        CloudEvent::decode(&serde_json::to_vec(&ev).unwrap())
    }

    #[test]
    fn attributes_copied_into_headers_are_printable_ascii() {
        for attr in ["id", "type", "source", "sequence"] {
            for bad in ["a\nb", "a b", "a\u{0}", "café", "a\u{7f}", "\tx"] {
                let e = decode_with(attr, bad).unwrap_err();
                assert_eq!(e.attribute(), Some(attr), "{attr} = {bad:?}: {e}");
                assert!(e.to_string().contains("U+"), "the message names the character: {e}");
            }
            let ok = decode_with(attr, "urn:shop/a-1_B.2~x?y=%20#z").unwrap().to_value();
            // What is accepted always makes a header value.
            http::HeaderValue::from_str(ok[attr].as_str().unwrap()).unwrap();
        }
        let long = "x".repeat(MAX_SHORT + 1);
        assert!(decode_with("id", &long).unwrap_err().to_string().contains("256 bytes long"));
        assert!(decode_with("type", &long).is_err());
        decode_with("id", &"x".repeat(MAX_SHORT)).unwrap();
        decode_with("source", &long).unwrap();
    }

    #[test]
    fn other_strings_follow_the_cloudevents_string_rule() {
        decode_with("subject", "franquia São Paulo – 42").unwrap();
        decode_with("tenant", "ação").unwrap();
        for (attr, bad) in
            [("subject", "a\u{1b}[31m"), ("tenant", "x\u{85}"), ("time", "2026\n"), ("subject", "\u{fffe}")]
        {
            assert_eq!(decode_with(attr, bad).unwrap_err().attribute(), Some(attr), "{attr} = {bad:?}");
        }
        assert_eq!(decode_with("subject", "").unwrap_err(), DecodeError::Empty("subject"));
        // `data` is the producer's: anything JSON carries.
        let raw = br#"{"id":"1","source":"s","type":"t","specversion":"1.0","data":{"x":"a\u0000b\n"}}"#;
        CloudEvent::decode(raw).unwrap();
    }

    #[test]
    fn dataversion_accepts_number_and_v_prefix() {
        let mut ev = CloudEvent::decode(br#"{"id":"1","source":"s","type":"t","specversion":"1.0"}"#).unwrap();
        ev.dataversion = Some("v2".into());
        assert_eq!(ev.data_version(), Some(Ok(2)));
        ev.dataversion = Some("x".into());
        assert_eq!(ev.data_version(), Some(Err("x".into())));
    }
}
