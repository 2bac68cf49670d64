//! A structured-mode event decoded by hand, byte by byte: the fast path of
//! [`CloudEvent::decode`] for the events producers actually send.
//!
//! It gives exactly what serde_json's path (`de.rs`, `data.rs`) gives, or nothing: whatever it
//! does not take on itself it leaves to serde_json, which then decodes the event again and says
//! what is wrong and where, in its words. So every error message comes from serde_json, and this
//! parser only has to be right about what it accepts. It answers `None` for any text that is not
//! JSON, for a member that is not where a CloudEvent has it (a required attribute missing or
//! given twice, an attribute of the wrong type), for nesting deeper than 100, and for a text of
//! 4 GiB or more. Beyond that, it hands serde_json the small pieces whose reading it would
//! otherwise repeat: a string with escapes (unescaped by `serde_json::from_str::<String>`) and a
//! number that is not a plain non-negative integer (read by `serde_json::from_str::<Number>`),
//! so escapes, floats and negative zero come out as serde_json reads them.
//!
//! It also notes which containers of `data` stand verbatim in the text, written exactly as
//! they would be rendered (`data/container.rs`), so that rendering copies them in one piece:
//! serde_json's visitors cannot say where a container starts and ends.
//!
//! Why: decoding through serde_json's visitors took about 500 instructions per value of `data`
//! (a call through the visitor for every value, a growing vector per container, strings checked
//! a byte at a time; docs/performance.md, thirteenth round). Here a string's plain bytes are
//! scanned eight at a time, and a container's members are gathered on one stack and moved into
//! a vector of their exact length.

use super::CloudEvent;
use super::data::{Container, Data, Node, Text, settle_members};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 100;

/// Room the parser's two stacks start with, in elements: what a typical `data` needs at once
/// (growing them from nothing took four reallocations an event).
const STACK: usize = 16;

/// Decodes `text` as a structured-mode event, as `serde_json` with `de::EventSeed` would, or
/// `None` where that is left to serde_json (module documentation).
pub(super) fn event(text: &str) -> Option<CloudEvent> {
    u32::try_from(text.len()).ok()?;
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        spans: false,
        irregular: 0,
        items: Vec::with_capacity(STACK),
        members: Vec::with_capacity(STACK),
    };
    p.ws();
    p.eat(b'{')?;
    let mut ev = Envelope::default();
    p.ws();
    if !p.eat_if(b'}') {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            p.attribute(key, &mut ev)?;
            p.ws();
            if p.eat_if(b',') {
                continue;
            }
            p.eat(b'}')?;
            break;
        }
    }
    p.ws();
    if p.pos != p.bytes.len() {
        return None;
    }
    let data = match ev.data {
        Some(Node::Null) | None => None,
        Some(root) => Some(Data::from_parts(if p.spans { text.into() } else { Box::default() }, root)),
    };
    Some(CloudEvent {
        id: ev.id?,
        source: ev.source?,
        ty: ev.ty?,
        specversion: ev.specversion?,
        time: ev.time.flatten(),
        subject: ev.subject.flatten(),
        dataversion: ev.dataversion.flatten(),
        sequence: ev.sequence.flatten(),
        data,
        extensions: ev.extensions,
    })
}

/// The attributes read so far: the outer `Option` says whether a member was there (a second
/// one is left to serde_json, which calls it a duplicate), the inner one whether it was `null`.
#[derive(Default)]
struct Envelope {
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    specversion: Option<String>,
    time: Option<Option<String>>,
    subject: Option<Option<String>>,
    dataversion: Option<Option<String>>,
    sequence: Option<Option<Value>>,
    data: Option<Node>,
    extensions: Map<String, Value>,
}

/// A string as scanned: where its content lies, and whether it has escapes.
#[derive(Clone, Copy)]
struct Scanned {
    start: usize,
    end: usize,
    escaped: bool,
}

/// Bytes that end the plain run of a string: `"`, `\` and the control characters JSON refuses.
static STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Where the plain run of a string that goes on at `from` ends: the first of [`STOPS`] at or
/// after `from`, or the end. Eight bytes at a time: a byte of a word is flagged when it is `"`,
/// `\` or below 0x20, and the lowest flag is always a real one (a borrow of the subtractions
/// only runs upwards, from a byte that is flagged rightly).
fn plain_end(bytes: &[u8], mut from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    while let Some(chunk) = bytes.get(from..from + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let hits = (zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if hits != 0 {
            return from + (hits.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    while bytes.get(from).is_some_and(|b| !STOPS[usize::from(*b)]) {
        from += 1;
    }
    from
}

struct Parser<'t> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
    /// Whether something of `data` became a span of the text (a string, a verbatim container).
    spans: bool,
    /// How many things read so far a container's verbatim text would not render as
    /// ([`Container`]): whitespace, an escape, a number other than a plain non-negative
    /// integer, a name given twice. A container read while it did not change stands verbatim.
    irregular: u32,
    /// The elements of the arrays being read, innermost last.
    items: Vec<Node>,
    /// The members of the objects being read, innermost last.
    members: Vec<(Text, Node)>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Steps over whitespace: one look at the next byte when there is none, as in compact JSON.
    #[inline(always)]
    fn ws(&mut self) {
        if let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.skip_ws();
        }
    }

    #[cold]
    #[inline(never)]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
        self.irregular += 1;
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.eat_if(b).then_some(())
    }

    fn eat_if(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// A string, from its opening quote: where its content lies. Escapes are only stepped over
    /// (the character after each backslash); serde_json checks and reads them ([`Self::owned`]).
    fn string(&mut self) -> Option<Scanned> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos = plain_end(self.bytes, self.pos);
            match *self.bytes.get(self.pos)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 2;
                }
                _ => return None,
            }
        }
        let end = self.pos;
        self.pos += 1;
        Some(Scanned { start, end, escaped })
    }

    /// The content of a string, unescaped by serde_json when it has escapes.
    fn owned(&self, s: Scanned) -> Option<String> {
        if s.escaped {
            serde_json::from_str(self.text.get(s.start - 1..s.end + 1)?).ok()
        } else {
            self.text.get(s.start..s.end).map(str::to_owned)
        }
    }

    /// A string of `data`: a span of the text, or its own when it has escapes.
    fn text(&mut self, s: Scanned) -> Option<Text> {
        if s.escaped {
            self.irregular += 1;
            return self.owned(s).map(|o| Text::Owned(o.into_boxed_str()));
        }
        self.spans = true;
        // Both fit in a `u32`: the text does (checked in `event`).
        Some(Text::Span(s.start as u32, s.end as u32))
    }

    /// A string or `null`, for an optional attribute.
    fn optional_string(&mut self) -> Option<Option<String>> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Some(None);
        }
        let s = self.string()?;
        self.owned(s).map(Some)
    }

    /// One member of the envelope: its value read into its field.
    fn attribute(&mut self, key: Scanned, ev: &mut Envelope) -> Option<()> {
        let name = match key.escaped {
            true => std::borrow::Cow::Owned(self.owned(key)?),
            false => std::borrow::Cow::Borrowed(self.text.get(key.start..key.end)?),
        };
        fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
            slot.is_none().then(|| *slot = Some(value))
        }
        match &*name {
            "id" | "source" | "type" | "specversion" => {
                let s = self.string()?;
                let value = self.owned(s)?;
                let slot = match &*name {
                    "id" => &mut ev.id,
                    "source" => &mut ev.source,
                    "type" => &mut ev.ty,
                    _ => &mut ev.specversion,
                };
                once(slot, value)
            }
            "time" => {
                let v = self.optional_string()?;
                once(&mut ev.time, v)
            }
            "subject" => {
                let v = self.optional_string()?;
                once(&mut ev.subject, v)
            }
            "dataversion" => {
                let v = self.optional_string()?;
                once(&mut ev.dataversion, v)
            }
            "sequence" => {
                let v = self.value(0)?;
                once(&mut ev.sequence, (!matches!(v, Node::Null)).then(|| self.to_value(&v)))
            }
            "data" => {
                let v = self.value(0)?;
                once(&mut ev.data, v)
            }
            _ => {
                let v = self.value(0)?;
                let v = self.to_value(&v);
                ev.extensions.insert(name.into_owned(), v);
                Some(())
            }
        }
    }

    fn to_value(&self, node: &Node) -> Value {
        crate::event::DataRef::of_node(self.text, node).to_value()
    }

    /// Any JSON value, from its first byte.
    fn value(&mut self, depth: u32) -> Option<Node> {
        match self.peek()? {
            b'"' => {
                let s = self.string()?;
                self.text(s).map(Node::Str)
            }
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true").map(|()| Node::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Node::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Node::Null),
            b'-' | b'0'..=b'9' => self.number().map(Node::Number),
            _ => None,
        }
    }

    /// A number by JSON's grammar: a plain non-negative integer read here, any other number read
    /// by serde_json (floats, negative numbers and integers past `u64` as it reads them).
    fn number(&mut self) -> Option<Number> {
        let start = self.pos;
        let negative = self.eat_if(b'-');
        let digits = self.pos;
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        let whole = self.pos;
        if self.eat_if(b'.') {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        // Up to 19 digits always fit in a `u64`.
        if !negative && self.pos == whole && whole - digits <= 19 {
            let n = self.bytes[digits..whole].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            return Some(n.into());
        }
        self.irregular += 1;
        serde_json::from_str(self.text.get(start..self.pos)?).ok()
    }

    fn some_digits(&mut self) -> Option<()> {
        let from = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        (self.pos > from).then_some(())
    }

    fn array(&mut self, depth: u32) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (open, regular) = (self.pos, self.irregular);
        self.pos += 1;
        self.ws();
        let start = self.items.len();
        if !self.eat_if(b']') {
            loop {
                self.ws();
                let v = self.value(depth)?;
                self.items.push(v);
                self.ws();
                if self.eat_if(b',') {
                    continue;
                }
                self.eat(b']')?;
                break;
            }
        }
        // One copy of the elements into a vector of their exact length.
        let items = self.items.split_off(start);
        Some(Node::Array(self.container(items, open, regular)))
    }

    fn object(&mut self, depth: u32) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (open, regular) = (self.pos, self.irregular);
        self.pos += 1;
        self.ws();
        let start = self.members.len();
        if !self.eat_if(b'}') {
            loop {
                self.ws();
                let key = self.string()?;
                let key = self.text(key)?;
                self.ws();
                self.eat(b':')?;
                self.ws();
                let v = self.value(depth)?;
                self.members.push((key, v));
                self.ws();
                if self.eat_if(b',') {
                    continue;
                }
                self.eat(b'}')?;
                break;
            }
        }
        let mut members = self.members.split_off(start);
        // A name given twice: the text is not what rendering the object writes.
        self.irregular += u32::from(settle_members(&mut members, self.text));
        Some(Node::Object(self.container(members, open, regular)))
    }

    /// A container read from `open` to here: verbatim when nothing irregular was read since
    /// (`regular` is the count before it).
    fn container<T>(&mut self, items: Vec<T>, open: usize, regular: u32) -> Container<T> {
        if self.irregular != regular {
            return items.into();
        }
        self.spans = true;
        // Both fit in a `u32`: the text does (checked in `event`).
        Container::verbatim(items, open as u32, self.pos as u32)
    }
}

#[cfg(test)]
mod tests;
