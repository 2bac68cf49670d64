//! Rendering a delivery's body, the pipeline's last step: the body formats (`standard`,
//! `cloudevents`, `data`) written from a JSON value (the event as one map, a transform's
//! result) or from a decoded event's `data` ([`DataRef::write_json`], which copies the strings
//! that had no escapes as they stand in the event). Either gives the bytes serde_json gives for
//! the same JSON. A transform's body stops at its cap.

use super::BodyFormat;
use crate::event::DataRef;
use serde_json::Value;
use std::io::Write;

/// What a body's content is rendered from.
#[derive(Clone, Copy)]
pub enum Content<'a> {
    /// A JSON value.
    Json(&'a Value),
    /// A decoded event's `data`.
    Data(DataRef<'a>),
}

impl<'a> From<&'a Value> for Content<'a> {
    fn from(v: &'a Value) -> Self {
        Self::Json(v)
    }
}

impl<'a> From<DataRef<'a>> for Content<'a> {
    fn from(d: DataRef<'a>) -> Self {
        Self::Data(d)
    }
}

impl Content<'_> {
    fn write(self, out: &mut Capped) -> Result<(), serde_json::Error> {
        match self {
            Self::Json(v) => serde_json::to_writer(out, v),
            Self::Data(d) => {
                d.write_json(&mut out.buf);
                match out.buf.len() > out.cap {
                    true => Err(serde_json::Error::io(std::io::Error::other(CapReached))),
                    false => Ok(()),
                }
            }
        }
    }
}

/// Renders the body of a delivery in `format`, with its `content-type`: for `standard`,
/// `{"type", "timestamp", "data"}` with `content` as `data` and the event's `time` as the
/// timestamp (now, when the event has none); for `cloudevents`, `content` is the whole event;
/// for `data`, `content` alone. The last step of [`super::prepare_event`].
pub fn render<'a>(
    format: BodyFormat,
    ty: &str,
    time: Option<&str>,
    content: impl Into<Content<'a>>,
) -> Result<(Vec<u8>, &'static str), serde_json::Error> {
    render_within(format, ty, time, content, usize::MAX).map_err(|e| match e {
        RenderError::Json(e) => e,
        RenderError::TooLarge => unreachable!("no cap"),
    })
}

/// Why [`render_within`] gave no body.
#[derive(Debug)]
pub enum RenderError {
    /// The body would be over the cap (rendering stopped there).
    TooLarge,
    /// Not serializable.
    Json(serde_json::Error),
}

/// A body under construction that refuses to grow past `cap` bytes.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other(CapReached));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    // serde_json writes each piece with `write_all`: one check and one copy, without the
    // default's retry loop around `write`.
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.write(b).map(drop)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct CapReached;
impl std::fmt::Display for CapReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body cap reached")
    }
}
impl std::error::Error for CapReached {}

/// [`render`], stopping as soon as the body would be over `cap` bytes.
pub fn render_within<'a>(
    format: BodyFormat,
    ty: &str,
    time: Option<&str>,
    content: impl Into<Content<'a>>,
    cap: usize,
) -> Result<(Vec<u8>, &'static str), RenderError> {
    let content = content.into();
    // The body is about the event's size when it is rendered from the decoded `data`: one
    // allocation, not a doubling from 128 bytes (four for a 1 KiB body).
    let size = match content {
        Content::Data(d) => d.text_len(),
        Content::Json(_) => 0,
    };
    let mut out = Capped { buf: Vec::with_capacity(128 + size.min(cap)), cap };
    let ct = render_to(&mut out, format, ty, time, content)
        .map_err(|e| if e.io_error_kind().is_some() { RenderError::TooLarge } else { RenderError::Json(e) })?;
    Ok((out.buf, ct))
}

fn render_to(
    out: &mut Capped,
    format: BodyFormat,
    ty: &str,
    time: Option<&str>,
    content: Content<'_>,
) -> Result<&'static str, serde_json::Error> {
    match format {
        BodyFormat::Standard => {
            let now;
            let timestamp = match time {
                Some(t) => t,
                None => {
                    now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
                    &now
                }
            };
            // What serde_json gives for the struct `{type, timestamp, data}`, written in parts.
            let io = serde_json::Error::io;
            out.write_all(b"{\"type\":").map_err(io)?;
            serde_json::to_writer(&mut *out, ty)?;
            out.write_all(b",\"timestamp\":").map_err(io)?;
            serde_json::to_writer(&mut *out, timestamp)?;
            out.write_all(b",\"data\":").map_err(io)?;
            content.write(out)?;
            out.write_all(b"}").map_err(io)?;
            Ok("application/json")
        }
        BodyFormat::Cloudevents => content.write(out).map(|()| "application/cloudevents+json"),
        BodyFormat::Data => content.write(out).map(|()| "application/json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CloudEvent, Data};
    use serde_json::json;

    #[test]
    fn each_format_renders_its_body_and_content_type() {
        let data = json!({"order_id": "o-1", "total": 12.5, "customer": {"name": "Ana \"A\" Souza"}, "items": [1, 2]});
        let (body, ct) = render(BodyFormat::Standard, "order.paid", Some("2026-11-22T10:00:00Z"), &data).unwrap();
        let expected = json!({"type": "order.paid", "timestamp": "2026-11-22T10:00:00Z", "data": data});
        assert_eq!(body, serde_json::to_vec(&expected).unwrap());
        assert_eq!(ct, "application/json");

        let event = json!({"specversion": "1.0", "id": "e-1", "type": "order.paid", "data": data});
        let (body, ct) = render(BodyFormat::Cloudevents, "order.paid", None, &event).unwrap();
        assert_eq!(body, serde_json::to_vec(&event).unwrap());
        assert_eq!(ct, "application/cloudevents+json");

        let (body, ct) = render(BodyFormat::Data, "order.paid", None, &data).unwrap();
        assert_eq!(body, serde_json::to_vec(&data).unwrap());
        assert_eq!(ct, "application/json");
    }

    /// A decoded `data` renders the bytes its value renders, whatever its strings hold: spans
    /// copied as they stand, escaped strings escaped again, numbers as serde_json writes them.
    #[test]
    fn decoded_data_renders_as_its_value_does() {
        let samples = [
            r#"{"s":"plain","t":"tab\tquote\"back\\slash\u0001 \u00e9 \ud83d\ude00","é":"ünïcode","k\"q":1}"#,
            r#"{"n":[0,-1,18446744073709551615,-9223372036854775808,1.5,1e300,2.5E-7,-0.0,100.0]}"#,
            r#"[{"a":{"b":[[],{},null,true,false,""]}}, "x", 3]"#,
            r#"  { "spaced" :  [ 1 ,  "two" ] }  "#,
            r#""only a string""#,
            "42",
        ];
        for data in samples {
            let raw = format!(r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{data}}}"#);
            let decoded: Data = CloudEvent::decode(raw.as_bytes()).unwrap().data.unwrap();
            let value: Value = serde_json::from_str(data).unwrap();
            for format in [BodyFormat::Standard, BodyFormat::Data, BodyFormat::Cloudevents] {
                let (mine, _) = render(format, "t", Some("2026-01-01T00:00:00Z"), decoded.root()).unwrap();
                let (theirs, _) = render(format, "t", Some("2026-01-01T00:00:00Z"), &value).unwrap();
                assert_eq!(String::from_utf8(mine).unwrap(), String::from_utf8(theirs).unwrap(), "{data}");
            }
        }
    }

    #[test]
    fn a_standard_body_without_event_time_is_stamped_now() {
        let before = std::time::SystemTime::now();
        let (body, _) = render(BodyFormat::Standard, "order.paid", None, &json!({"n": 1})).unwrap();
        let after = std::time::SystemTime::now();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["type", "timestamp", "data"]);
        let stamped = humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
        // The timestamp has milliseconds: `before` truncated to them is not after it.
        let ms = std::time::Duration::from_millis(1);
        assert!(stamped + ms > before && stamped <= after, "timestamp {} is not the time of rendering", v["timestamp"]);
    }

    #[test]
    fn rendering_stops_at_the_cap() {
        let data = json!({"blob": "x".repeat(10_000)});
        let (body, _) = render_within(BodyFormat::Data, "t", None, &data, 20_000).unwrap();
        assert_eq!(body, serde_json::to_vec(&data).unwrap());
        assert!(matches!(render_within(BodyFormat::Standard, "t", None, &data, 9_999), Err(RenderError::TooLarge)));
        let decoded = Data::from_value(&data);
        assert!(matches!(
            render_within(BodyFormat::Data, "t", None, decoded.root(), 9_999),
            Err(RenderError::TooLarge)
        ));
    }
}
