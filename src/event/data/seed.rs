//! `data` decoded by serde_json's visitors into the tree of [`Data`]: the path for events the
//! hand-written decoder (`scan.rs`) leaves to serde_json, with the same results. Strings without
//! escapes become spans of the event's text (serde_json hands them over borrowed from it); a
//! name given twice keeps its first place and its last value ([`settle_members`]).

use super::{Data, Node, Text, settle_members};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::cell::Cell;
use std::fmt;

/// Decodes `data` into a tree: `text` is the whole text being parsed, when it is known (strings
/// without escapes become spans of it), `None` otherwise (every string its own). `null` gives
/// `None`, as an absent `data`.
pub(crate) struct DataSeed<'t> {
    pub(crate) text: Option<&'t str>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Option<Data>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Data>, D::Error> {
        // Spans are `u32`s: a text beyond 4 GiB keeps every string its own.
        let base = self.text.filter(|t| u32::try_from(t.len()).is_ok());
        let spans = Spans { base, used: Cell::new(false) };
        let root = NodeSeed(&spans).deserialize(d)?;
        if matches!(root, Node::Null) {
            return Ok(None);
        }
        let text = match (spans.used.get(), base) {
            (true, Some(t)) => Box::from(t),
            _ => Box::default(),
        };
        Ok(Some(Data { text, root }))
    }
}

/// Where spans point, and whether one was made.
struct Spans<'t> {
    base: Option<&'t str>,
    used: Cell<bool>,
}

impl Spans<'_> {
    /// A span when `s` lies in the text, else a string of its own.
    fn text(&self, s: &str) -> Text {
        if let Some(base) = self.base {
            let start = (s.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
            if start <= base.len() && s.len() <= base.len() - start {
                self.used.set(true);
                // Both fit: the base's length does (checked in `DataSeed`).
                return Text::Span(start as u32, (start + s.len()) as u32);
            }
        }
        Text::Owned(s.into())
    }
}

struct NodeSeed<'s, 't>(&'s Spans<'t>);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Node, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Node, E> {
        Ok(Number::from_f64(n).map_or(Node::Null, Node::Number))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Node, E> {
        Ok(Node::Str(self.0.text(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node, E> {
        Ok(Node::Str(Text::Owned(s.into())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Node, E> {
        Ok(Node::Str(Text::Owned(s.into_boxed_str())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(NodeSeed(self.0))? {
            items.push(v);
        }
        Ok(Node::Array(items.into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let spans = self.0;
        let text = spans.base.unwrap_or_default();
        let mut members: Vec<(Text, Node)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key_seed(KeySeed(spans))? {
            let value = map.next_value_seed(NodeSeed(spans))?;
            members.push((key, value));
        }
        settle_members(&mut members, text);
        Ok(Node::Object(members.into()))
    }
}

struct KeySeed<'s, 't>(&'s Spans<'t>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Text;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Text, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Text;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text, E> {
        Ok(self.0.text(s))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
        Ok(Text::Owned(s.into()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Text, E> {
        Ok(Text::Owned(s.into_boxed_str()))
    }
}
