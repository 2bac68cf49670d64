//! CloudEvents protocol bindings in, binary content mode: the attributes travel as message
//! metadata and the body is `data` alone. Both entries turn such a message into the structured
//! JSON form ([`to_structured`]) before anything else sees it, so that one decoder
//! (`event::CloudEvent::decode`) checks every event the same way, whichever mode it came in, and
//! everything after it (queues, retries, dead letters, replays, the `cloudevents` body format)
//! holds structured events only. A leaf: the broker (AMQP) and the API (HTTP) use it; it uses
//! nothing of the crate, as a binding is how a transport carries an event, not what it means.
//!
//! - HTTP binding (`POST /v1/events`): attributes are `ce-<name>` headers whose values are
//!   percent-decoded ([`percent_decode`], CloudEvents HTTP binding 1.0.2 §3.1.3.2);
//!   `Content-Type` is `datacontenttype`.
//! - AMQP binding: attributes are application properties (RabbitMQ message headers) named
//!   `cloudEvents:<name>` or `cloudEvents_<name>` ([`amqp_attribute`]); the message's
//!   `content-type` is `datacontenttype`. A `time` given as a number (an AMQP timestamp) is Unix
//!   seconds.
//!
//! `data` in the structured form: a JSON content type (absent, `application/json`, `text/json`,
//! `*/*+json`) puts the body in as JSON, and a body that is not JSON is refused; a `text/*`
//! body that is UTF-8 becomes a JSON string; any other body is carried as `data_base64`
//! (CloudEvents JSON format §3.1), which schemas see as no `data` (`null`).

use base64::Engine as _;
use serde_json::{Map, Value};

/// The header that marks an HTTP request as binary mode.
pub const HTTP_SPECVERSION: &str = "ce-specversion";
/// The prefix of HTTP attribute headers.
pub const HTTP_PREFIX: &str = "ce-";
/// The prefixes of AMQP application properties that carry attributes.
pub const AMQP_PREFIXES: [&str; 2] = ["cloudEvents:", "cloudEvents_"];
/// The structured-mode media type: a body of this type is the whole event, whatever headers say.
pub const STRUCTURED: &str = "application/cloudevents+json";

/// A binary-mode message that has no structured form: the attribute at fault (`data` for the
/// body) and why. Shown as the decoder shows its attribute errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute `{attribute}` {problem}")]
pub struct BindingError {
    /// The attribute (`data` for the body).
    pub attribute: String,
    /// What is wrong with it.
    pub problem: String,
}

fn refuse(attribute: &str, problem: impl Into<String>) -> BindingError {
    BindingError { attribute: attribute.to_string(), problem: problem.into() }
}

/// The attribute an AMQP application property carries, if it carries one.
pub fn amqp_attribute(property: &str) -> Option<&str> {
    AMQP_PREFIXES.iter().find_map(|p| property.strip_prefix(p)).filter(|name| !name.is_empty())
}

/// Whether a `Content-Type` (or AMQP `content-type`) is the structured mode's.
pub fn is_structured(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| essence(ct).starts_with("application/cloudevents"))
}

/// The media type without parameters, lowercased.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn is_json(essence: &str) -> bool {
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Percent-decodes an HTTP header value (`%XX` sequences are UTF-8 bytes); `None` when the
/// result is not UTF-8 or a `%` is not followed by two hex digits.
pub fn percent_decode(value: &[u8]) -> Option<String> {
    if !value.contains(&b'%') {
        return String::from_utf8(value.to_vec()).ok();
    }
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The structured JSON form of a binary-mode event: `attributes` (names without their prefix,
/// in the order given), `content_type` as `datacontenttype`, and `body` as `data` (see the
/// module documentation). The result is checked by [`crate::event::CloudEvent::decode`] like any event; here
/// only what binary mode can get wrong is refused: an attribute named `data` or `data_base64`,
/// and a body that is not what its content type says.
pub fn to_structured(
    attributes: impl IntoIterator<Item = (String, Value)>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, BindingError> {
    let mut event = Map::new();
    for (name, value) in attributes {
        if name == "data" || name == "data_base64" {
            return Err(refuse(&name, "cannot be given as an attribute in binary mode: the body is the data"));
        }
        let value = match (name.as_str(), value) {
            ("time", Value::Number(n)) => match n.as_u64() {
                Some(secs) => Value::String(
                    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                        .to_string(),
                ),
                None => Value::Number(n),
            },
            (_, v) => v,
        };
        event.insert(name, value);
    }
    if let Some(ct) = content_type {
        event.insert("datacontenttype".into(), Value::String(ct.to_string()));
    }
    let kind = content_type.map(essence);
    if !body.is_empty() {
        match kind.as_deref() {
            None => put_json(&mut event, body, "no content type (JSON is assumed)")?,
            Some(k) if is_json(k) => put_json(&mut event, body, &format!("content type {k:?}"))?,
            Some(k) if k.starts_with("text/") && std::str::from_utf8(body).is_ok() => {
                let text = String::from_utf8_lossy(body).into_owned();
                event.insert("data".into(), Value::String(text));
            }
            Some(_) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(body);
                event.insert("data_base64".into(), Value::String(encoded));
            }
        }
    }
    serde_json::to_vec(&Value::Object(event)).map_err(|e| refuse("data", e.to_string()))
}

fn put_json(event: &mut Map<String, Value>, body: &[u8], said: &str) -> Result<(), BindingError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(data) => {
            event.insert("data".into(), data);
            Ok(())
        }
        Err(e) => Err(refuse("data", format!("(the body) is not JSON, which its {said} says it is: {e}"))),
    }
}

/// The structured form of an HTTP binary-mode request, from its headers and body: every
/// `ce-<name>` header percent-decoded, `Content-Type` as `datacontenttype`.
pub fn from_http(headers: &http::HeaderMap, body: &[u8]) -> Result<Vec<u8>, BindingError> {
    let mut attributes = Vec::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix(HTTP_PREFIX) else { continue };
        if attr.is_empty() || attr == "datacontenttype" {
            // `Content-Type` carries it in this binding.
            continue;
        }
        let decoded = percent_decode(value.as_bytes()).ok_or_else(|| {
            let why = "is not percent-encoded UTF-8 (CloudEvents HTTP binding: %XX escapes of UTF-8 bytes)";
            refuse(attr, format!("(header {name}) {why}"))
        })?;
        attributes.push((attr.to_string(), Value::String(decoded)));
    }
    // Named in the error's details (the decoder's message names a missing field in words only).
    for required in ["specversion", "id", "source", "type"] {
        if !attributes.iter().any(|(name, _)| name == required) {
            let why = format!("is missing: every CloudEvent has specversion, id, source and type (ce-{required})");
            return Err(refuse(required, why));
        }
    }
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    to_structured(attributes, content_type, body)
}

/// Whether an AMQP message is a binary-mode event: an application property names its
/// `specversion`, and its content type is not the structured mode's.
pub fn is_amqp_binary<'a>(mut properties: impl Iterator<Item = &'a str>, content_type: Option<&str>) -> bool {
    !is_structured(content_type) && properties.any(|p| amqp_attribute(p) == Some("specversion"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::CloudEvent;
    use serde_json::json;

    fn attrs(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn required() -> Vec<(String, Value)> {
        attrs(&[
            ("specversion", json!("1.0")),
            ("id", json!("b-1")),
            ("source", json!("shop")),
            ("type", json!("order.paid")),
        ])
    }

    fn structured(content_type: Option<&str>, body: &[u8]) -> Value {
        serde_json::from_slice(&to_structured(required(), content_type, body).unwrap()).unwrap()
    }

    #[test]
    fn json_data_goes_in_as_json() {
        let ev = structured(Some("application/json; charset=utf-8"), br#"{"total": 12}"#);
        assert_eq!(ev["data"], json!({"total": 12}));
        assert_eq!(ev["datacontenttype"], "application/json; charset=utf-8");
        assert_eq!(structured(None, b"[1,2]")["data"], json!([1, 2]));
        assert_eq!(structured(Some("application/vnd.shop+json"), b"3")["data"], json!(3));
        let decoded = CloudEvent::decode(&to_structured(required(), None, b"{}").unwrap()).unwrap();
        assert_eq!((decoded.id.as_str(), decoded.ty.as_str()), ("b-1", "order.paid"));
    }

    #[test]
    fn text_is_a_string_and_other_data_is_base64() {
        let ev = structured(Some("text/plain"), "olá".as_bytes());
        assert_eq!(ev["data"], "olá");
        let ev = structured(Some("application/octet-stream"), &[0, 159, 146, 150]);
        assert_eq!(ev["data_base64"], "AJ+Slg==");
        assert!(ev.get("data").is_none());
        let ev = structured(Some("text/plain"), &[0xff, 0xfe]);
        assert_eq!(ev["data_base64"], "//4=", "text that is not UTF-8 is carried as bytes");
        let ev = structured(Some("application/json"), b"");
        assert!(ev.get("data").is_none(), "an empty body is no data");
    }

    #[test]
    fn what_binary_mode_gets_wrong_is_refused_naming_it() {
        let e = to_structured(required(), Some("application/json"), b"{not json").unwrap_err();
        assert_eq!(e.attribute, "data");
        assert!(e.to_string().contains("is not JSON"), "{e}");
        let mut with_data = required();
        with_data.push(("data".into(), json!("x")));
        assert_eq!(to_structured(with_data, None, b"").unwrap_err().attribute, "data");
        // What every event must have is the decoder's to check, with its own messages.
        let missing: Vec<_> = required().into_iter().filter(|(k, _)| k != "source").collect();
        let e = CloudEvent::decode(&to_structured(missing, None, b"{}").unwrap()).unwrap_err();
        assert!(e.to_string().contains("source"), "{e}");
        let mut bad = required();
        bad[1].1 = json!("a b");
        assert_eq!(CloudEvent::decode(&to_structured(bad, None, b"{}").unwrap()).unwrap_err().attribute(), Some("id"));
    }

    #[test]
    fn a_numeric_time_is_unix_seconds() {
        let mut a = required();
        a.push(("time".into(), json!(1_709_210_096)));
        let ev: Value = serde_json::from_slice(&to_structured(a, None, b"").unwrap()).unwrap();
        assert_eq!(ev["time"], "2024-02-29T12:34:56Z");
    }

    #[test]
    fn http_headers_are_percent_decoded() {
        assert_eq!(percent_decode(b"plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode(b"S%C3%A3o%20Paulo%25").as_deref(), Some("São Paulo%"));
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"%C3"), None, "not UTF-8");
        assert_eq!(percent_decode(b"50%"), None);
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "h-1"),
            ("ce-source", "shop"),
            ("ce-type", "order.paid"),
            ("ce-subject", "franquia%20S%C3%A3o%20Paulo"),
            ("ce-tenantid", "acme"),
            ("content-type", "application/json"),
            ("authorization", "Bearer x"),
        ] {
            h.insert(http::HeaderName::from_static(k), http::HeaderValue::from_static(v));
        }
        let ev = CloudEvent::decode(&from_http(&h, br#"{"n":1}"#).unwrap()).unwrap();
        assert_eq!(ev.subject.as_deref(), Some("franquia São Paulo"));
        assert_eq!(ev.extensions["tenantid"], "acme");
        assert_eq!(ev.extensions["datacontenttype"], "application/json");
        assert!(!ev.extensions.contains_key("authorization"));
        h.insert("ce-subject", http::HeaderValue::from_static("bad%FF"));
        assert_eq!(from_http(&h, b"{}").unwrap_err().attribute, "subject");
        h.remove("ce-subject");
        h.remove("ce-source");
        assert_eq!(from_http(&h, b"{}").unwrap_err().attribute, "source", "named in the details");
    }

    #[test]
    fn amqp_properties_name_attributes_with_either_prefix() {
        assert_eq!(amqp_attribute("cloudEvents:id"), Some("id"));
        assert_eq!(amqp_attribute("cloudEvents_type"), Some("type"));
        assert_eq!(amqp_attribute("cloudEvents:"), None);
        assert_eq!(amqp_attribute("traceparent"), None);
        let props = ["traceparent", "cloudEvents_specversion"];
        assert!(is_amqp_binary(props.into_iter(), Some("application/json")));
        assert!(is_amqp_binary(props.into_iter(), None));
        assert!(!is_amqp_binary(props.into_iter(), Some("application/cloudevents+json")), "structured wins");
        assert!(!is_amqp_binary(["cloudEvents:id"].into_iter(), None));
    }
}
