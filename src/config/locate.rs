//! Finding where something sits in a file's text, for problems found after parsing, which serde
//! or a compiler report without a place: a key of a TOML document (a route's `concurrency`, one
//! of its `headers`) and the target of a JSON Pointer in a schema file.
//!
//! Only the error path calls these (they parse the text again); a load that finds nothing wrong
//! never does.

use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// The span of the key at `path` (table names from the root, then the key) in a TOML document.
pub fn toml_key(text: &str, path: &[&str]) -> Option<Range<usize>> {
    toml_entry(text, path).map(|(k, _)| k)
}

/// The span of the value at `path` in a TOML document.
pub fn toml_value(text: &str, path: &[&str]) -> Option<Range<usize>> {
    toml_entry(text, path).map(|(_, v)| v)
}

/// The span of element `index` of the array at `path` in a TOML document.
pub fn toml_item(text: &str, path: &[&str], index: usize) -> Option<Range<usize>> {
    let (last, tables) = path.split_last()?;
    in_table(text, tables, |t| match t.get(*last)?.get_ref() {
        DeValue::Array(items) => items.get(index).map(|i| i.span()),
        _ => None,
    })
}

/// One step into a TOML document: a key of a table, or an element of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A key.
    Key(&'a str),
    /// An array element.
    Index(usize),
}

/// The span of what `steps` lead to from the root (a key's value, an array's element), through
/// inline tables and arrays too (a route's declarative `filter`).
pub fn toml_at(text: &str, steps: &[Step<'_>]) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let (first, rest) = steps.split_first()?;
    let Step::Key(k) = first else { return None };
    let mut value = doc.get_ref().get(*k)?;
    for step in rest {
        value = match (value.get_ref(), step) {
            (DeValue::Table(t), Step::Key(k)) => t.get(*k)?,
            (DeValue::Array(items), Step::Index(i)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value.span())
}

fn toml_entry(text: &str, path: &[&str]) -> Option<(Range<usize>, Range<usize>)> {
    let (last, tables) = path.split_last()?;
    in_table(text, tables, |t| t.get_key_value(*last).map(|(k, v)| (k.span(), v.span())))
}

/// Runs `f` on the table `tables` names (the root when empty).
fn in_table<T>(text: &str, tables: &[&str], f: impl FnOnce(&DeTable<'_>) -> Option<T>) -> Option<T> {
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = doc.get_ref();
    for name in tables {
        match table.get(*name)?.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    f(table)
}

/// The byte offset of the value a JSON Pointer (RFC 6901, e.g. `/properties/total/type`) names
/// in a JSON text that parses; `None` when the pointer leads nowhere.
pub fn json_pointer(text: &str, pointer: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut at = skip_ws(b, 0);
    if pointer.is_empty() {
        return Some(at);
    }
    for raw in pointer.strip_prefix('/')?.split('/') {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        at = match b.get(at)? {
            b'{' => member(text, at, &seg)?,
            b'[' => element(b, at, seg.parse().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// The offset of the value of member `key` of the object at `open`.
fn member(text: &str, open: usize, key: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, open + 1);
    while b.get(i)? == &b'"' {
        let end = skip_string(b, i)?;
        let name: String = serde_json::from_str(&text[i..end]).ok()?;
        i = skip_ws(b, end);
        if b.get(i)? != &b':' {
            return None;
        }
        let value = skip_ws(b, i + 1);
        if name == key {
            return Some(value);
        }
        i = skip_ws(b, skip_value(b, value)?);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
    None
}

/// The offset of element `n` of the array at `open`.
fn element(b: &[u8], open: usize, n: usize) -> Option<usize> {
    let mut i = skip_ws(b, open + 1);
    for _ in 0..n {
        i = skip_ws(b, skip_value(b, i)?);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
    (b.get(i)? != &b']').then_some(i)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The offset just past the string that opens at `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The offset just past the value that starts at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while b.get(j).is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace()) {
                j += 1;
            }
            Some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_keys_and_values_in_tables_dotted_and_inline() {
        let text = "concurrency = 0\n[retry]\nmax_attempts = 0\n[headers]\n\"bad name\" = \"x\"\n";
        assert_eq!(toml_value(text, &["concurrency"]), Some(14..15));
        assert_eq!(&text[toml_value(text, &["retry", "max_attempts"]).unwrap()], "0");
        assert_eq!(&text[toml_key(text, &["headers", "bad name"]).unwrap()], "\"bad name\"");
        let dotted = "retry.backoff = []\n";
        assert_eq!(&dotted[toml_value(dotted, &["retry", "backoff"]).unwrap()], "[]");
        let inline = "headers = { a = \"b\" }\n";
        assert_eq!(&inline[toml_value(inline, &["headers", "a"]).unwrap()], "\"b\"");
        assert_eq!(toml_value(text, &["retry", "nope"]), None);
        let list = "[retry]\nbackoff = [\"1s\", \"0s\"]\n";
        assert_eq!(&list[toml_item(list, &["retry", "backoff"], 1).unwrap()], "\"0s\"");
        assert_eq!(toml_item(list, &["retry", "backoff"], 2), None);
        assert_eq!(toml_value(text, &["concurrency", "x"]), None);
    }

    #[test]
    fn steps_reach_into_inline_tables_and_arrays() {
        let text = "url = \"x\"\nfilter = { all = [\n  { path = \"a\", eq = 1 },\n  { path = \"b\", gtee = 2 },\n] }\n";
        let at = |steps: &[Step<'_>]| toml_at(text, steps).map(|r| &text[r]);
        assert_eq!(at(&[Step::Key("filter"), Step::Key("all"), Step::Index(1), Step::Key("gtee")]), Some("2"));
        assert_eq!(at(&[Step::Key("filter"), Step::Key("all"), Step::Index(0)]), Some("{ path = \"a\", eq = 1 }"));
        assert_eq!(at(&[Step::Key("filter"), Step::Key("all"), Step::Index(2)]), None);
        assert_eq!(at(&[Step::Key("filter"), Step::Index(0)]), None, "a table has no elements");
        assert_eq!(at(&[Step::Index(0)]), None);
        let dotted = "[filter]\npath = \"subject\"\nin = [\"a\", 3]\n";
        assert_eq!(
            toml_at(dotted, &[Step::Key("filter"), Step::Key("in"), Step::Index(1)]).map(|r| &dotted[r]),
            Some("3")
        );
    }

    #[test]
    fn json_pointers_reach_nested_members_and_elements() {
        let text = "{\n  \"a/b\": 1,\n  \"p\": {\"x\": [true, {\"type\": \"strng\"}]},\n  \"q\": \"}\"\n}";
        let at = |p: &str| json_pointer(text, p).map(|i| &text[i..i + 7.min(text.len() - i)]);
        assert_eq!(at(""), Some("{\n  \"a/"));
        assert_eq!(at("/a~1b"), Some("1,\n  \"p"));
        assert_eq!(at("/p/x/1/type"), Some("\"strng\""));
        assert_eq!(at("/q"), Some("\"}\"\n}"));
        assert_eq!(at("/p/x/2"), None);
        assert_eq!(at("/nope"), None);
    }
}
