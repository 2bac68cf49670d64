//! Decoding a structured-mode CloudEvent in one pass with serde_json: what the hand-written
//! decoder (`scan.rs`) leaves, and every error message. Each member of the JSON object goes
//! straight to its field (known attributes) or into the extensions, with no intermediate buffer.
//! A derived `#[serde(flatten)]` would first buffer every member, `data` included, then
//! deserialize the buffer again: about half of what decoding cost.
//!
//! The same results as the derive gave: a missing required attribute is `missing field `id``,
//! a known attribute given twice is `duplicate field`, `null` leaves an optional attribute out,
//! and extensions keep their order (a later duplicate replaces an earlier one, as in a JSON map).

use super::CloudEvent;
use super::data::{Data, DataSeed};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

impl<'de> Deserialize<'de> for CloudEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor { text: None })
    }
}

/// Decodes an event from `text`, the whole text being parsed: the strings of its `data` become
/// spans of it ([`Data`]).
pub(super) struct EventSeed<'t> {
    pub(super) text: &'t str,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = CloudEvent;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<CloudEvent, D::Error> {
        deserializer.deserialize_map(EventVisitor { text: Some(self.text) })
    }
}

struct EventVisitor<'t> {
    text: Option<&'t str>,
}

/// Which field a member fills.
enum Key<'de> {
    Id,
    Source,
    Type,
    SpecVersion,
    Time,
    Subject,
    DataVersion,
    Sequence,
    Data,
    Other(Cow<'de, str>),
}

impl<'de> Key<'de> {
    fn of(name: Cow<'de, str>) -> Self {
        match &*name {
            "id" => Self::Id,
            "source" => Self::Source,
            "type" => Self::Type,
            "specversion" => Self::SpecVersion,
            "time" => Self::Time,
            "subject" => Self::Subject,
            "dataversion" => Self::DataVersion,
            "sequence" => Self::Sequence,
            "data" => Self::Data,
            _ => Self::Other(name),
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::of(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::of(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::of(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Sets a field once: a second value for it is `duplicate field`.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = CloudEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvent (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CloudEvent, A::Error> {
        let (mut id, mut source, mut ty, mut specversion) = (None, None, None, None);
        // Optional attributes: the outer `Option` says whether the member was there, the inner
        // one whether it was `null`.
        let (mut time, mut subject, mut dataversion) = (None, None, None);
        let (mut sequence, mut data): (Option<Option<Value>>, Option<Option<Data>>) = (None, None);
        let mut extensions = Map::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key {
                Key::Id => once(&mut id, "id", map.next_value::<String>()?)?,
                Key::Source => once(&mut source, "source", map.next_value::<String>()?)?,
                Key::Type => once(&mut ty, "type", map.next_value::<String>()?)?,
                Key::SpecVersion => once(&mut specversion, "specversion", map.next_value::<String>()?)?,
                Key::Time => once(&mut time, "time", map.next_value::<Option<String>>()?)?,
                Key::Subject => once(&mut subject, "subject", map.next_value::<Option<String>>()?)?,
                Key::DataVersion => once(&mut dataversion, "dataversion", map.next_value::<Option<String>>()?)?,
                Key::Sequence => once(&mut sequence, "sequence", map.next_value::<Option<Value>>()?)?,
                Key::Data => once(&mut data, "data", map.next_value_seed(DataSeed { text: self.text })?)?,
                Key::Other(name) => {
                    extensions.insert(name.into_owned(), map.next_value::<Value>()?);
                }
            }
        }
        Ok(CloudEvent {
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            source: source.ok_or_else(|| de::Error::missing_field("source"))?,
            ty: ty.ok_or_else(|| de::Error::missing_field("type"))?,
            specversion: specversion.ok_or_else(|| de::Error::missing_field("specversion"))?,
            time: time.flatten(),
            subject: subject.flatten(),
            dataversion: dataversion.flatten(),
            sequence: sequence.flatten(),
            data: data.flatten(),
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the derived `Deserialize` (with `#[serde(flatten)]` extensions) gave, for comparison.
    #[derive(Debug, serde::Deserialize)]
    struct Derived {
        id: String,
        source: String,
        #[serde(rename = "type")]
        ty: String,
        specversion: String,
        #[serde(default)]
        time: Option<String>,
        #[serde(default)]
        subject: Option<String>,
        #[serde(default)]
        dataversion: Option<String>,
        #[serde(default)]
        sequence: Option<Value>,
        #[serde(default)]
        data: Option<Value>,
        #[serde(flatten)]
        extensions: Map<String, Value>,
    }

    fn both(raw: &str) -> (Result<CloudEvent, String>, Result<CloudEvent, String>) {
        let mine = serde_json::from_str::<CloudEvent>(raw).map_err(|e| e.to_string());
        let derived = serde_json::from_str::<Derived>(raw).map_err(|e| e.to_string()).map(|d| CloudEvent {
            id: d.id,
            source: d.source,
            ty: d.ty,
            specversion: d.specversion,
            time: d.time,
            subject: d.subject,
            dataversion: d.dataversion,
            sequence: d.sequence,
            data: d.data.map(Data::from),
            extensions: d.extensions,
        });
        (mine, derived)
    }

    #[test]
    fn decodes_as_the_derive_did() {
        let same = [
            r#"{"id":"1","source":"s","type":"t","specversion":"1.0"}"#,
            r#"{"specversion":"1.0","z":1,"id":"1","a":[1,{"b":null}],"source":"s","type":"t","data":{"x":[1,2]},"time":"2026-01-01T00:00:00Z"}"#,
            r#"{"id":"1","source":"s","type":"t","specversion":"1.0","time":null,"subject":null,"data":null,"sequence":null,"dataversion":null}"#,
            r#"{"id":"1","source":"s","type":"t","specversion":"1.0","sequence":7,"data":"text","ext":"a\"b"}"#,
            r#"{"id":"1","source":"s","type":"t","specversion":"1.0","x":1,"x":2}"#,
            r#"{"id":"\u0031","source":"s\n","type":"t","specversion":"1.0","k\u00e9y":"v"}"#,
        ];
        for raw in same {
            let (mine, derived) = both(raw);
            assert_eq!(mine, derived, "{raw}");
            let mine = mine.unwrap();
            let order: Vec<&String> = mine.extensions.keys().collect();
            let derived = derived.unwrap();
            assert_eq!(order, derived.extensions.keys().collect::<Vec<_>>(), "extension order: {raw}");
        }
    }

    #[test]
    fn refuses_what_the_derive_refused() {
        for raw in [
            r#"{"source":"s","type":"t","specversion":"1.0"}"#,
            r#"{"id":"1","type":"t","specversion":"1.0"}"#,
            r#"{"id":"1","source":"s","type":"t"}"#,
            r#"{"id":"1","id":"2","source":"s","type":"t","specversion":"1.0"}"#,
            r#"{"id":1,"source":"s","type":"t","specversion":"1.0"}"#,
            r#"{"id":null,"source":"s","type":"t","specversion":"1.0"}"#,
            r#"{"id":"1","source":"s","type":"t","specversion":"1.0","time":5}"#,
            r#"[1]"#,
            r#""x""#,
        ] {
            let (mine, derived) = both(raw);
            let (mine, derived) = (mine.unwrap_err(), derived.unwrap_err());
            // The same kind of message (positions may differ).
            let head = |s: &str| s.split(" at line").next().unwrap_or_default().to_string();
            if raw.starts_with('{') {
                assert_eq!(head(&mine), head(&derived), "{raw}");
            }
        }
    }
}
