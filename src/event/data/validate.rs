//! [`Data`](super::Data) as a JSON representation jsonschema validates directly
//! ([`DataJson`]): the schema catalogue compiles its validators for it
//! (`jsonschema::options_for::<DataJson>()`), so an event's `data` is validated as it was
//! decoded, without a `serde_json::Value`. Member lookups scan the members in order (objects
//! in events are small; the `serde_json` representation scans up to 16 too). Only error
//! reports and the rare keywords that compare whole values (`const`, `enum`, `uniqueItems`)
//! convert a node to a `Value`.

use super::{DataRef, ElementsIter, MembersIter, Node, Text};
use jsonschema::json::{Array, Json, Node as JsonNode, NodeIdentity, Object};
use jsonschema::types::JsonType;
use serde_json::{Number, Value};
use std::borrow::Cow;

/// The representation: nodes are [`DataRef`]s.
pub struct DataJson;

impl Json for DataJson {
    type Node<'a> = DataRef<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = ();

    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(DataRef<'_>) -> T) -> T {
        // `propertyNames` only: each member name as a string node.
        let node = Node::Str(Text::Owned(string.into()));
        f(DataRef { text: "", node: &node })
    }
}

impl<'a> JsonNode<'a, DataJson> for DataRef<'a> {
    type Object = Members<'a>;
    type Array = Elements<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<Members<'a>> {
        match self.node {
            Node::Object(members) => Some(Members { object: *self, len: members.len() }),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<Elements<'a>> {
        match self.node {
            Node::Array(items) => Some(Elements { array: *self, len: items.len() }),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.as_str().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<&'a Number> {
        DataRef::as_number(*self)
    }

    fn as_boolean(&self) -> Option<bool> {
        self.as_bool()
    }

    fn is_null(&self) -> bool {
        matches!(self.node, Node::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.node {
            Node::Null => JsonType::Null,
            Node::Bool(_) => JsonType::Boolean,
            Node::Number(_) => JsonType::Number,
            Node::Str(_) => JsonType::String,
            Node::Array(_) => JsonType::Array,
            Node::Object(_) => JsonType::Object,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(DataRef::to_value(*self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(std::ptr::from_ref::<Node>(self.node) as usize))
    }
}

/// An object node, for jsonschema: lookups and members are [`DataRef`]'s own.
pub struct Members<'a> {
    object: DataRef<'a>,
    len: usize,
}

impl<'a> Object<'a, DataJson> for Members<'a> {
    type Node = DataRef<'a>;
    type MemberName = &'a str;
    type MembersIter = MembersIter<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &Box<str>) -> Option<DataRef<'a>> {
        self.object.get(key)
    }

    fn members(&self) -> MembersIter<'a> {
        self.object.members()
    }
}

/// An array node, for jsonschema: its elements are [`DataRef`]'s own.
pub struct Elements<'a> {
    array: DataRef<'a>,
    len: usize,
}

impl<'a> Array<'a, DataJson> for Elements<'a> {
    type Node = DataRef<'a>;
    type ElementsIter = ElementsIter<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn elements(&self) -> ElementsIter<'a> {
        self.array.elements()
    }
}
