//! Rendering a delivery's body: the JSON text of `serde_json::Value`s written straight into one
//! buffer, byte for byte what `serde_json::to_vec` writes (compact, members in map order, the
//! same escapes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00xx` for the other control
//! characters; nothing else escaped), without serde's call per piece: a string with nothing to
//! escape, nearly every string of an event, is checked in one pass the compiler vectorizes and
//! copied whole. Integers are written with `itoa`; other numbers by serde_json itself.
//!
//! Rendering stops as soon as the body would pass its cap: a transform may grow a tiny event
//! into a huge body, which is never built.

use super::BodyFormat;
use serde_json::{Number, Value};

/// The body would be over its cap (rendering stopped there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Renders the body of a delivery in `format`, with its `content-type`: for `standard`,
/// `{"type", "timestamp", "data"}` with `content` as `data` and the event's `time` as the
/// timestamp (now, when the event has none); for `cloudevents`, `content` is the whole event;
/// for `data`, `content` alone. The last step of [`super::prepare_event`].
pub fn render(format: BodyFormat, ty: &str, time: Option<&str>, content: &Value) -> (Vec<u8>, &'static str) {
    match render_within(format, ty, time, content, usize::MAX) {
        Ok(rendered) => rendered,
        Err(TooLarge) => unreachable!("no body is over usize::MAX bytes"),
    }
}

/// [`render`], stopping as soon as the body would be over `cap` bytes.
pub fn render_within(
    format: BodyFormat,
    ty: &str,
    time: Option<&str>,
    content: &Value,
    cap: usize,
) -> Result<(Vec<u8>, &'static str), TooLarge> {
    let mut out = Body { buf: Vec::with_capacity(256), cap };
    let content_type = match format {
        BodyFormat::Standard => {
            let now;
            let timestamp = match time {
                Some(t) => t,
                None => {
                    now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
                    &now
                }
            };
            out.push(b"{\"type\":")?;
            out.string(ty)?;
            out.push(b",\"timestamp\":")?;
            out.string(timestamp)?;
            out.push(b",\"data\":")?;
            out.value(content)?;
            out.push(b"}")?;
            "application/json"
        }
        BodyFormat::Cloudevents => {
            out.value(content)?;
            "application/cloudevents+json"
        }
        BodyFormat::Data => {
            out.value(content)?;
            "application/json"
        }
    };
    Ok((out.buf, content_type))
}

/// A body under construction that refuses to grow past `cap` bytes.
struct Body {
    buf: Vec<u8>,
    cap: usize,
}

impl Body {
    fn push(&mut self, bytes: &[u8]) -> Result<(), TooLarge> {
        if bytes.len() > self.cap - self.buf.len() {
            return Err(TooLarge);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn value(&mut self, value: &Value) -> Result<(), TooLarge> {
        match value {
            Value::Null => self.push(b"null"),
            Value::Bool(true) => self.push(b"true"),
            Value::Bool(false) => self.push(b"false"),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.push(b"[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.push(b",")?;
                    }
                    self.value(item)?;
                }
                self.push(b"]")
            }
            Value::Object(members) => {
                self.push(b"{")?;
                for (i, (key, member)) in members.iter().enumerate() {
                    if i > 0 {
                        self.push(b",")?;
                    }
                    self.string(key)?;
                    self.push(b":")?;
                    self.value(member)?;
                }
                self.push(b"}")
            }
        }
    }

    fn number(&mut self, n: &Number) -> Result<(), TooLarge> {
        let mut digits = itoa::Buffer::new();
        if let Some(u) = n.as_u64() {
            self.push(digits.format(u).as_bytes())
        } else if let Some(i) = n.as_i64() {
            self.push(digits.format(i).as_bytes())
        } else {
            // A float: serde_json's own digits (ryu), so that the text is the one it writes.
            self.push(n.to_string().as_bytes())
        }
    }

    fn string(&mut self, s: &str) -> Result<(), TooLarge> {
        let bytes = s.as_bytes();
        if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
            // The body is at least this long whatever follows: checked once, then copied.
            if bytes.len() + 2 > self.cap - self.buf.len() {
                return Err(TooLarge);
            }
            self.buf.reserve(bytes.len() + 2);
            self.buf.push(b'"');
            self.buf.extend_from_slice(bytes);
            self.buf.push(b'"');
            return Ok(());
        }
        self.push(b"\"")?;
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                0x08 => b"\\b",
                0x0c => b"\\f",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x00..=0x1f => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.push(&bytes[start..i])?;
                    self.push(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])?;
                    start = i + 1;
                    continue;
                }
                _ => continue,
            };
            self.push(&bytes[start..i])?;
            self.push(escape)?;
            start = i + 1;
        }
        self.push(&bytes[start..])?;
        self.push(b"\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_format_renders_its_body_and_content_type() {
        let data = json!({"order_id": "o-1", "total": 12.5, "customer": {"name": "Ana \"A\" Souza"}, "items": [1, 2]});
        let (body, ct) = render(BodyFormat::Standard, "order.paid", Some("2026-11-22T10:00:00Z"), &data);
        let expected = json!({"type": "order.paid", "timestamp": "2026-11-22T10:00:00Z", "data": data});
        assert_eq!(body, serde_json::to_vec(&expected).unwrap());
        assert_eq!(ct, "application/json");

        let event = json!({"specversion": "1.0", "id": "e-1", "type": "order.paid", "data": data});
        let (body, ct) = render(BodyFormat::Cloudevents, "order.paid", None, &event);
        assert_eq!(body, serde_json::to_vec(&event).unwrap());
        assert_eq!(ct, "application/cloudevents+json");

        let (body, ct) = render(BodyFormat::Data, "order.paid", None, &data);
        assert_eq!(body, serde_json::to_vec(&data).unwrap());
        assert_eq!(ct, "application/json");
    }

    /// Every escape, every kind of number and nesting give the bytes serde_json gives, also in
    /// keys and in the `standard` body's type and timestamp.
    #[test]
    fn the_text_is_serde_jsons_byte_for_byte() {
        let controls: String = (0u8..0x20).map(char::from).collect();
        let tricky = format!("q\"b\\s/{controls}\u{7f}é€😀 end");
        let value = json!({
            "plain": "nothing to escape",
            "tricky": tricky,
            tricky.clone(): [tricky.clone(), "", "\"", "\\", "\n"],
            "numbers": [0, 1, -1, u64::MAX, i64::MIN, 0.5, -2.25, 1e300, 1.0, 123456789.125, 1e-7, f64::MAX, f64::MIN_POSITIVE],
            "nested": {"a": [[], {}, [null, true, false]], "b": {"c": {"d": "e"}}},
            "empty": {},
        });
        let (body, _) = render(BodyFormat::Data, "t", None, &value);
        assert_eq!(String::from_utf8(body).unwrap(), serde_json::to_string(&value).unwrap());
        let (body, _) = render(BodyFormat::Standard, &tricky, Some(&tricky), &value);
        let expected = json!({"type": tricky, "timestamp": tricky, "data": value});
        assert_eq!(String::from_utf8(body).unwrap(), serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn rendering_stops_at_the_cap() {
        let data = json!({"blob": "x".repeat(10_000)});
        let (body, _) = render_within(BodyFormat::Data, "t", None, &data, 20_000).unwrap();
        assert_eq!(body, serde_json::to_vec(&data).unwrap());
        assert_eq!(render_within(BodyFormat::Standard, "t", None, &data, 9_999), Err(TooLarge));
        // Exactly at the cap renders; one byte less does not, escaped strings included.
        let escaped = json!(["a\nb\"c", 7]);
        let whole = serde_json::to_vec(&escaped).unwrap();
        assert_eq!(render_within(BodyFormat::Data, "t", None, &escaped, whole.len()).unwrap().0, whole);
        for cap in 0..whole.len() {
            assert_eq!(render_within(BodyFormat::Data, "t", None, &escaped, cap), Err(TooLarge), "cap {cap}");
        }
    }
}
