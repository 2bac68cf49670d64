//! An event's `data` as the pipeline reads it: a tree decoded in the same pass as the envelope,
//! whose strings and member names are spans of the event's text, copied once, not one
//! allocation each; numbers as `serde_json::Number`; objects as their members in order, in a
//! vector, not a hashed map.
//!
//! Building a `serde_json::Value` for `data` (with `preserve_order`: an `IndexMap` per object,
//! each key hashed with SipHash and allocated) was most of what decoding an event cost: about
//! 38k instructions for the benchmark's 800-byte `data` against 20k for a tree like this one
//! (docs/performance.md, eighth and tenth rounds). The tree is what the schema validates
//! ([`validate`], a representation of jsonschema's), what the declarative filter and a filter's
//! read paths look into, what redaction removes members from, and what the body is rendered
//! from. Steps that need the whole event as one JSON value (a transform, the `cloudevents`
//! body, a filter that reads the whole event) convert it with [`Data::to_value`].
//!
//! Two decoders build it, with the same results: the hand-written one of `scan.rs` for the
//! events it takes, and serde_json's visitors (`data/seed.rs`, `DataSeed`) for the rest.
//!
//! The same JSON as `serde_json::Value` gives, member for member: a name given twice keeps its
//! first place and its last value; numbers are read by serde_json itself; the body renders with
//! serde_json's serializer, byte for byte as the `Value` did.

mod container;
mod seed;
pub mod validate;

pub(crate) use container::Container;
pub(crate) use seed::DataSeed;

use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::{Number, Value};
use std::fmt;

/// A decoded `data`: its tree, and the event text its spans point into.
#[derive(Clone)]
pub struct Data {
    /// The event's text when some string of the tree is a span of it; empty otherwise.
    text: Box<str>,
    root: Node,
}

/// One JSON value of the tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(Number),
    Str(Text),
    Array(Container<Node>),
    Object(Container<(Text, Node)>),
}

/// A string of the tree: a span of the text (start and end bytes), or its own when it had
/// escapes (serde_json hands those over unescaped in a buffer of its own).
#[derive(Debug, Clone)]
pub(crate) enum Text {
    Span(u32, u32),
    Owned(Box<str>),
}

impl Text {
    pub(crate) fn resolve<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            // Spans are made only from `&str`s serde_json found in `text`: whole characters.
            Self::Span(start, end) => text.get(*start as usize..*end as usize).unwrap_or_default(),
            Self::Owned(s) => s,
        }
    }

    /// The string's bytes, the span's character boundaries not checked again.
    fn bytes<'a>(&'a self, text: &'a str) -> &'a [u8] {
        match self {
            Self::Span(start, end) => text.as_bytes().get(*start as usize..*end as usize).unwrap_or_default(),
            Self::Owned(s) => s.as_bytes(),
        }
    }

    /// Whether this is `name`: the bytes compared, the span's character boundaries not checked
    /// again (member lookups: validation's `required` and `properties`, paths, redaction).
    pub(crate) fn is(&self, text: &str, name: &str) -> bool {
        match self {
            Self::Span(start, end) => text.as_bytes().get(*start as usize..*end as usize) == Some(name.as_bytes()),
            Self::Owned(s) => &**s == name,
        }
    }
}

/// A node of a [`Data`], with the text its spans point into: what readers hold.
#[derive(Clone, Copy)]
pub struct DataRef<'a> {
    text: &'a str,
    node: &'a Node,
}

static NULL: Node = Node::Null;

impl<'a> DataRef<'a> {
    /// JSON `null`, for an event without `data`.
    pub fn null() -> Self {
        DataRef { text: "", node: &NULL }
    }

    /// The root of `data`, or JSON `null` when there is none (as an event without `data` is
    /// validated and rendered).
    pub fn of(data: Option<&'a Data>) -> Self {
        data.map_or_else(Self::null, Data::root)
    }

    pub(crate) fn node(self) -> &'a Node {
        self.node
    }

    /// `node`, whose spans point into `text`.
    pub(super) fn of_node(text: &'a str, node: &'a Node) -> Self {
        Self { text, node }
    }

    fn at(self, node: &'a Node) -> Self {
        Self { text: self.text, node }
    }

    /// The string, when this is one.
    pub fn as_str(self) -> Option<&'a str> {
        match self.node {
            Node::Str(t) => Some(t.resolve(self.text)),
            _ => None,
        }
    }

    /// The number, when this is one.
    pub fn as_number(self) -> Option<&'a Number> {
        match self.node {
            Node::Number(n) => Some(n),
            _ => None,
        }
    }

    /// The boolean, when this is one.
    pub fn as_bool(self) -> Option<bool> {
        match self.node {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether this is an object.
    pub fn is_object(self) -> bool {
        matches!(self.node, Node::Object(_))
    }

    /// The member `key` of an object.
    pub fn get(self, key: &str) -> Option<Self> {
        match self.node {
            Node::Object(members) => members.iter().find(|(name, _)| name.is(self.text, key)).map(|(_, v)| self.at(v)),
            _ => None,
        }
    }

    /// The element `i` of an array.
    pub fn index(self, i: usize) -> Option<Self> {
        match self.node {
            Node::Array(items) => items.get(i).map(|v| self.at(v)),
            _ => None,
        }
    }

    /// The members of an object in order (none for anything else).
    pub fn members(self) -> MembersIter<'a> {
        let members: &'a [(Text, Node)] = match self.node {
            Node::Object(m) => m,
            _ => &[],
        };
        MembersIter { text: self.text, inner: members.iter() }
    }

    /// The elements of an array (none for anything else).
    pub fn elements(self) -> ElementsIter<'a> {
        let items: &'a [Node] = match self.node {
            Node::Array(a) => a,
            _ => &[],
        };
        ElementsIter { text: self.text, inner: items.iter() }
    }

    /// The length of the text the tree's spans point into (0 for a tree made from a value): about
    /// what the whole tree renders to, for sizing a buffer.
    pub fn text_len(self) -> usize {
        self.text.len()
    }

    /// This value as a `serde_json::Value`.
    pub fn to_value(self) -> Value {
        match self.node {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::Str(t) => Value::String(t.resolve(self.text).to_string()),
            Node::Array(items) => Value::Array(items.iter().map(|v| self.at(v).to_value()).collect()),
            Node::Object(members) => {
                let mut m = serde_json::Map::with_capacity(members.len());
                for (k, v) in members {
                    m.insert(k.resolve(self.text).to_string(), self.at(v).to_value());
                }
                Value::Object(m)
            }
        }
    }
}

/// [`DataRef::members`]: names resolved, values as nodes.
pub struct MembersIter<'a> {
    text: &'a str,
    inner: std::slice::Iter<'a, (Text, Node)>,
}

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a str, DataRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, v)| (k.resolve(self.text), DataRef { text: self.text, node: v }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// [`DataRef::elements`] as nodes.
pub struct ElementsIter<'a> {
    text: &'a str,
    inner: std::slice::Iter<'a, Node>,
}

impl<'a> Iterator for ElementsIter<'a> {
    type Item = DataRef<'a>;

    fn next(&mut self) -> Option<DataRef<'a>> {
        self.inner.next().map(|v| DataRef { text: self.text, node: v })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl DataRef<'_> {
    /// Appends this value as compact JSON: the bytes `serde_json::to_writer` gives for it. A
    /// string that is a span is copied as it stands in the event: serde_json hands over a span
    /// only for a string without escapes, and refuses control characters in strings, so it holds
    /// nothing the serializer would escape. A container that stands verbatim in the event
    /// (`data::container::Container`) is copied in one piece.
    pub fn write_json(self, out: &mut Vec<u8>) {
        let raw = match self.node {
            Node::Array(items) => items.raw(self.text),
            Node::Object(members) => members.raw(self.text),
            _ => None,
        };
        if let Some(raw) = raw {
            out.extend_from_slice(raw);
            return;
        }
        match self.node {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Number(n) => write_number(out, n),
            Node::Str(t) => write_text(self.text, t, out),
            Node::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.at(v).write_json(out);
                }
                out.push(b']');
            }
            Node::Object(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_text(self.text, k, out);
                    out.push(b':');
                    self.at(v).write_json(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// A string of the tree as a JSON string.
fn write_text(text: &str, t: &Text, out: &mut Vec<u8>) {
    match t {
        Text::Span(start, end) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes().get(*start as usize..*end as usize).unwrap_or_default());
            out.push(b'"');
        }
        Text::Owned(s) => write_serialized(out, &**s),
    }
}

/// A number as serde_json writes it: integers with `itoa` (as serde_json does), floats through
/// serde_json itself.
fn write_number(out: &mut Vec<u8>, n: &Number) {
    let mut digits = itoa::Buffer::new();
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => out.extend_from_slice(digits.format(u).as_bytes()),
        (None, Some(i)) => out.extend_from_slice(digits.format(i).as_bytes()),
        (None, None) => write_serialized(out, n),
    }
}

/// What serde_json writes for `v` (a number or a string: writing them into a vector cannot fail).
fn write_serialized<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _infallible = serde_json::to_writer(out, v);
}

impl serde::Serialize for DataRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.node {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Number(n) => n.serialize(s),
            Node::Str(t) => s.serialize_str(t.resolve(self.text)),
            Node::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&self.at(v))?;
                }
                seq.end()
            }
            Node::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.resolve(self.text), &self.at(v))?;
                }
                map.end()
            }
        }
    }
}

impl fmt::Display for DataRef<'_> {
    /// Compact JSON, as `serde_json::Value` displays.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Data {
    /// The root of the tree.
    pub fn root(&self) -> DataRef<'_> {
        DataRef { text: &self.text, node: &self.root }
    }

    /// The tree as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        self.root().to_value()
    }

    /// A tree holding `value` (its strings its own).
    pub fn from_value(value: &Value) -> Self {
        fn node(v: &Value) -> Node {
            let own = |s: &str| Text::Owned(s.into());
            match v {
                Value::Null => Node::Null,
                Value::Bool(b) => Node::Bool(*b),
                Value::Number(n) => Node::Number(n.clone()),
                Value::String(s) => Node::Str(own(s)),
                Value::Array(items) => Node::Array(items.iter().map(node).collect()),
                Value::Object(m) => Node::Object(m.iter().map(|(k, v)| (own(k), node(v))).collect()),
            }
        }
        Self { text: Box::default(), root: node(value) }
    }

    /// A tree of `root`, whose spans point into `text` (the hand-written decoder's, `scan.rs`).
    pub(super) fn from_parts(text: Box<str>, root: Node) -> Self {
        Self { text, root }
    }

    /// The text and the root, for changes that remove members (the pipeline's redaction).
    pub(crate) fn parts_mut(&mut self) -> (&str, &mut Node) {
        (&self.text, &mut self.root)
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_value(), f)
    }
}

impl serde::Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.root().serialize(s)
    }
}

impl From<Value> for Data {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

/// Objects of up to this many members find a repeated name by [`repeats_a_name`]; larger ones
/// by sorting.
const SCAN_MEMBERS: usize = 16;

/// Settles an object's members, read in order and pushed as they came, as a JSON map does with
/// a name given twice: the first place, the last value. Returns whether a name was given twice.
/// (`text` is what the spans point into.)
///
/// Most objects have no name twice, so that is checked first, once per object
/// ([`repeats_a_name`]): looking for the name of each member among those before it as it was
/// added cost about 110 instructions a member (docs/performance.md, fifteenth round).
pub(super) fn settle_members(members: &mut Vec<(Text, Node)>, text: &str) -> bool {
    if members.len() <= SCAN_MEMBERS && !repeats_a_name(members, text) {
        return false;
    }
    dedup_members(members, text)
}

/// Whether two of `members` have the same name. Each name sets one bit of 64, chosen by its
/// length and its first and last bytes: names that differ there are never equal, and in most
/// objects every name sets a bit of its own. Only a name whose bit is already set is compared
/// with the names before it.
fn repeats_a_name(members: &[(Text, Node)], text: &str) -> bool {
    let mut seen = 0u64;
    for (i, (key, _)) in members.iter().enumerate() {
        let name = key.bytes(text);
        let (first, last) = (name.first().copied().unwrap_or(0), name.last().copied().unwrap_or(0));
        let mix = name.len().wrapping_mul(37) ^ usize::from(first).wrapping_mul(11) ^ usize::from(last);
        let bit = 1u64 << (mix % 64);
        if seen & bit != 0 && members[..i].iter().any(|(k, _)| k.bytes(text) == name) {
            return true;
        }
        seen |= bit;
    }
    false
}

/// What a JSON map does with a name given twice: the first place, the last value. Returns
/// whether a name was given twice.
fn dedup_members(members: &mut Vec<(Text, Node)>, text: &str) -> bool {
    let mut order: Vec<usize> = (0..members.len()).collect();
    // Stable: equal names stay in the order they came.
    order.sort_by(|a, b| members[*a].0.resolve(text).cmp(members[*b].0.resolve(text)));
    let mut gone = vec![false; members.len()];
    let mut any = false;
    let mut run = 0;
    while run < order.len() {
        let name = members[order[run]].0.resolve(text);
        let mut end = run + 1;
        while end < order.len() && members[order[end]].0.resolve(text) == name {
            end += 1;
        }
        if end - run > 1 {
            any = true;
            let (first, last) = (order[run], order[end - 1]);
            let value = std::mem::replace(&mut members[last].1, Node::Null);
            members[first].1 = value;
            order[run + 1..end].iter().for_each(|i| gone[*i] = true);
        }
        run = end;
    }
    if any {
        let mut i = 0;
        members.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }
    any
}

#[cfg(test)]
mod tests;
