//! Per-key order as a value: where an ordered route's `order_key` is in an event
//! ([`OrderKey`]), read from the body without building it ([`scalar_at`]). The lanes that
//! deliver each key in order, and why lanes, are in the worker (`delivery::worker::lanes`).

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// Where an event's key is: a CloudEvent attribute (`subject`, an extension), or a path into
/// its `data` (`data.customer.id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    /// The attribute, then the path inside it (`["data", "customer", "id"]`).
    path: Vec<String>,
    /// As written.
    text: String,
}

/// The lane of the events that have no key (the attribute missing, or not a string, number or
/// boolean): they go in order among themselves.
pub const NO_KEY: &str = "";

impl OrderKey {
    /// Reads `order_key`: an attribute name (lowercase letters and digits, as CloudEvents
    /// attribute names are), or `data.` followed by dot-separated field names.
    pub fn parse(text: &str) -> Result<Self, String> {
        let path: Vec<String> = text.split('.').map(str::to_string).collect();
        let attribute_ok = path[0].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && !path[0].is_empty()
            && path[0].len() <= 20;
        if !attribute_ok {
            return Err(format!(
                "{text:?} is not a CloudEvent attribute (lowercase letters and digits, e.g. \"subject\") or \
                 \"data.<path>\""
            ));
        }
        if path.len() > 1 && path[0] != "data" {
            return Err(format!("{text:?}: only `data` has fields to follow; write \"data.<path>\" or an attribute"));
        }
        if path.iter().skip(1).any(String::is_empty) {
            return Err(format!("{text:?}: a path has no empty segment (\"data.customer.id\")"));
        }
        if path.len() == 1 && path[0] == "data" {
            return Err("\"data\" as a whole is no key: name a field, \"data.<path>\"".into());
        }
        Ok(Self { path, text: text.to_string() })
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key of the event `body` (structured JSON mode): its value as text, or [`NO_KEY`].
    /// Reads only along the path (every other value is skipped unparsed into memory), so that
    /// the consumer loop spends little per message.
    pub fn of(&self, body: &[u8]) -> String {
        scalar_at(body, &self.path).unwrap_or_default()
    }
}

/// The scalar (string, number, boolean) at `path` in the JSON `body`, as text. Reads only along
/// the path: every other value is skipped without being built in memory.
pub fn scalar_at(body: &[u8], path: &[String]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Follow(path).deserialize(&mut de).ok().flatten()
}

/// Follows a path of object keys; the value at its end as text when it is a scalar.
struct Follow<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for Follow<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Follow<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if found.is_none() && key == first.as_str() {
                found = map.next_value_seed(Follow(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_an_attribute_or_a_data_path() {
        let body = br#"{"id":"1","subject":"acme","data":{"n":[1,{"subject":"x"}],"customer":{"id":42,"tags":["a"]}},"flag":true}"#;
        let key = |k: &str| OrderKey::parse(k).unwrap().of(body);
        assert_eq!(key("subject"), "acme");
        assert_eq!(key("data.customer.id"), "42");
        assert_eq!(key("flag"), "true");
        assert_eq!(key("data.customer.tags"), NO_KEY, "not a scalar");
        assert_eq!(key("data.customer.missing"), NO_KEY);
        assert_eq!(key("tenantid"), NO_KEY);
        assert_eq!(OrderKey::parse("subject").unwrap().of(b"not json"), NO_KEY);
    }

    #[test]
    fn only_attributes_and_data_paths_are_keys() {
        for bad in ["", "Subject", "data", "data.", "data..x", "subject.x", "a-b", "x".repeat(21).as_str()] {
            assert!(OrderKey::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(OrderKey::parse("data.a.b").unwrap().as_str(), "data.a.b");
    }
}
