use super::*;

/// What serde_json's path gives for `text`.
fn by_serde(text: &str) -> Result<CloudEvent, String> {
    CloudEvent::decode_with_serde(text.as_bytes(), Some(text)).map_err(|e| e.to_string())
}

/// The event as text, members in their order (`==` on maps does not look at the order).
fn shown(ev: &CloudEvent) -> String {
    serde_json::to_string(ev).expect("an event serializes")
}

/// Where the hand-written decoder answers, it answers what serde_json's path does.
fn agrees(text: &str) -> Option<CloudEvent> {
    let fast = event(text)?;
    let slow = by_serde(text).unwrap_or_else(|e| panic!("taken, but serde_json refuses it ({e}): {text}"));
    assert_eq!(fast, slow, "{text}");
    assert_eq!(shown(&fast), shown(&slow), "{text}");
    if let Some(data) = &fast.data {
        assert_eq!(rendered(data), serde_json::to_vec(&data.to_value()).unwrap(), "rendered: {text}");
    }
    Some(fast)
}

/// `data` rendered (verbatim containers copied).
fn rendered(data: &Data) -> Vec<u8> {
    let mut out = Vec::new();
    data.root().write_json(&mut out);
    out
}

/// Every container below `node`, depth first, and whether it stands verbatim.
fn verbatim(text: &str, node: &Node, out: &mut Vec<(String, bool)>) {
    let (raw, shown) = match node {
        Node::Array(items) => {
            items.iter().for_each(|v| verbatim(text, v, out));
            (items.raw(text), "[")
        }
        Node::Object(members) => {
            members.iter().for_each(|(_, v)| verbatim(text, v, out));
            (members.raw(text), "{")
        }
        _ => return,
    };
    out.push((raw.map_or_else(|| shown.to_string(), |r| String::from_utf8_lossy(r).into_owned()), raw.is_some()));
}

/// Every container of `data`, depth first, and whether it stands verbatim.
fn containers(data: &mut Data) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    let (text, root) = data.parts_mut();
    verbatim(text, root, &mut found);
    found
}

/// The texts of the containers that stand verbatim, of [`containers`].
fn standing(found: &[(String, bool)]) -> Vec<&str> {
    found.iter().filter(|(_, v)| *v).map(|(s, _)| s.as_str()).collect()
}

const HEAD: &str = r#""specversion":"1.0","id":"e-1","source":"s","type":"t""#;

/// Events as producers send them, each of which the hand-written decoder must take.
fn taken() -> Vec<String> {
    let bench = r#"{"specversion":"1.0","id":"b-7","source":"bench","type":"order.paid","subject":"k7","time":"2026-11-22T10:00:00Z","datacontenttype":"application/json","data":{"order_id":"o-7","total":107,"currency":"BRL","customer":{"name":"Ana Maria Souza","email":"ana@example.com","phone":"+55 11 99999-0000"},"items":[{"sku":"SKU-00000","qty":1,"note":"xxxx"},{"sku":"SKU-00001","qty":2,"note":"xxxx"}]}}"#;
    let many: String = (0..40).map(|i| format!(r#""m{}":{i},"#, i % 23)).collect();
    let mut out = vec![bench.to_string()];
    for rest in [
        String::new(),
        r#","data":null"#.into(),
        r#","time":null,"subject":null,"dataversion":null,"sequence":null"#.into(),
        r#","sequence":"00042","dataversion":"2","subject":"tenant/é""#.into(),
        r#","sequence":17"#.into(),
        r#","sequence":{"a":[1,2]}"#.into(),
        r#","ext":"v","num":-1.5,"obj":{"b":1,"a":2},"ext":"again","nil":null"#.into(),
        r#","data":"plain text""#.into(),
        r#","data":[1,"two",{"three":3},[4],[],{}]"#.into(),
        r#","data":{"s":"tab\there \"q\" \\ \u00e9 \ud83d\ude00 \/","k\u00e9y":1}"#.into(),
        r#","data":{"big":18446744073709551615,"bigger":18446744073709551616,"neg":-9223372036854775808}"#.into(),
        r#","data":{"f":1.5,"e":1e300,"E":2E-3,"p":1e+2,"nz":-0,"nzf":-0.0,"z":0,"frac":0.1,"long":12345678901234567890}"#.into(),
        r#","data":{"a":1,"b":2,"a":3}"#.into(),
        format!(r#","data":{{{many}"last":true}}"#),
        r#","data":{"deep":[[[[[[[[[[{"x":[[[[[[[[[[1]]]]]]]]]]}]]]]]]]]]]}"#.into(),
        " , \"data\" : { \"spaced\" : [ 1 , 2 ] ,\n\t\r \"lines\" : { \"x\" : \"y\" } } ".into(),
        r#","\u0073ubject":"escaped name","d\u0061ta":{"x":1}"#.into(),
        r#","data":{"":"","\"":"\\"}"#.into(),
        r#","data":true"#.into(),
        r#","data":-7"#.into(),
    ] {
        out.push(format!("{{{HEAD}{rest}}}"));
    }
    out.push(format!(" \n{{ {HEAD} }}\n "));
    out.push(r#"{"data":{"x":1},"type":"t","source":"s","id":"e-1","specversion":"1.0"}"#.into());
    out
}

#[test]
fn takes_what_producers_send_as_serde_json_reads_it() {
    for text in taken() {
        assert!(agrees(&text).is_some(), "left to serde_json: {text}");
    }
}

#[test]
fn strings_of_data_are_spans_of_the_text() {
    let text = &taken()[0];
    let ev = agrees(text).expect("taken");
    let data = ev.data.expect("data");
    let root = data.root();
    assert_eq!(root.get("customer").and_then(|c| c.get("name")).and_then(|n| n.as_str()), Some("Ana Maria Souza"));
    assert_eq!(root.text_len(), text.len(), "the tree keeps the text its spans point into");
    let mut rendered = Vec::new();
    root.write_json(&mut rendered);
    let expected = serde_json::to_vec(&serde_json::from_str::<Value>(text).unwrap()["data"]).unwrap();
    assert_eq!(rendered, expected);
}

#[test]
fn leaves_to_serde_json_what_is_not_json_or_not_an_event() {
    let refused = [
        String::new(),
        "[1]".into(),
        r#""x""#.into(),
        "{".into(),
        format!("{{{HEAD}"),
        format!("{{{HEAD},}}"),
        format!("{{{HEAD}}} x"),
        format!("{{{HEAD}}}{{}}"),
        format!(r#"{{{HEAD},"id":"again"}}"#),
        format!(r#"{{{HEAD},"time":"a","time":"b"}}"#),
        format!(r#"{{{HEAD},"data":1,"data":2}}"#),
        format!(r#"{{{HEAD},"data":null,"data":2}}"#),
        format!(r#"{{{HEAD},"sequence":1,"sequence":2}}"#),
        r#"{"source":"s","type":"t","specversion":"1.0"}"#.into(),
        r#"{"id":1,"source":"s","type":"t","specversion":"1.0"}"#.into(),
        r#"{"id":null,"source":"s","type":"t","specversion":"1.0"}"#.into(),
        format!(r#"{{{HEAD},"time":5}}"#),
        format!(r#"{{{HEAD},"subject":["x"]}}"#),
        format!(r#"{{{HEAD},"data":01}}"#),
        format!(r#"{{{HEAD},"data":1.}}"#),
        format!(r#"{{{HEAD},"data":-}}"#),
        format!(r#"{{{HEAD},"data":1e}}"#),
        format!(r#"{{{HEAD},"data":.5}}"#),
        format!(r#"{{{HEAD},"data":+1}}"#),
        format!(r#"{{{HEAD},"data":1e400}}"#),
        format!(r#"{{{HEAD},"data":[1,]}}"#),
        format!(r#"{{{HEAD},"data":{{"a":1,}}}}"#),
        format!(r#"{{{HEAD},"data":{{"a" 1}}}}"#),
        format!(r#"{{{HEAD},"data":{{a:1}}}}"#),
        format!(r#"{{{HEAD},"data":tru}}"#),
        format!(r#"{{{HEAD},"data":nul}}"#),
        format!(r#"{{{HEAD},"data":"a{}b"}}"#, '\u{1}'),
        format!(r#"{{{HEAD},"data":"tab{}in"}}"#, '\t'),
        format!(r#"{{{HEAD},"data":"\x"}}"#),
        format!(r#"{{{HEAD},"data":"\ud800"}}"#),
        format!(r#"{{{HEAD},"data":"\u12"}}"#),
        format!(r#"{{{HEAD},"data":"open}}"#),
        format!(r#"{{{HEAD},"data":{}}}"#, "[".repeat(120) + &*"]".repeat(120)),
        format!("{{{HEAD},\u{a0}\"data\":1}}"),
    ];
    for text in refused {
        assert!(event(&text).is_none(), "taken: {text}");
    }
}

#[test]
fn compact_containers_stand_verbatim_and_forget_it_when_changed() {
    let text = format!(
        r#"{{{HEAD},"data":{{"a":[1,"x",{{"b":null}}],"sp":[1 ],"f":[1.5],"e":["\n"],"n":[-1],"d":{{"k":1,"k":2}},"ok":{{"k":true}}}}}}"#
    );
    let mut ev = agrees(&text).expect("taken");
    let data = ev.data.as_mut().expect("data");
    let found = containers(data);
    assert_eq!(standing(&found), [r#"{"b":null}"#, r#"[1,"x",{"b":null}]"#, r#"{"k":true}"#]);
    // A change below a container passes through it: neither keeps its text.
    let (t, root) = data.parts_mut();
    let Node::Object(members) = root else { panic!("an object") };
    let Some((_, Node::Array(a))) = members.iter_mut().next() else { panic!("an array first") };
    a.pop();
    assert!(a.raw(t).is_none());
    assert!(found.len() > 3 && members.raw(t).is_none());
    let expected = r#"{"a":[1,"x"],"sp":[1],"f":[1.5],"e":["\n"],"n":[-1],"d":{"k":2},"ok":{"k":true}}"#;
    assert_eq!(String::from_utf8(rendered(data)).unwrap(), expected);
}

#[test]
fn large_objects_stand_verbatim_unless_a_name_is_given_twice() {
    // Past 16 members, names are checked by sorting: a large object without a name twice is
    // copied whole; with one (here after the sixteenth), it is written value by value.
    let many = (0..20).map(|i| format!(r#""m{i}":{i}"#)).collect::<Vec<_>>().join(",");
    let text = format!(r#"{{{HEAD},"data":{{"big":{{{many}}},"twice":{{{many},"m3":7,"m19":8}}}}}}"#);
    let mut ev = agrees(&text).expect("taken");
    let data = ev.data.as_mut().expect("data");
    assert_eq!(standing(&containers(data)), [format!("{{{many}}}")]);
    let twice = many.replace(r#""m3":3"#, r#""m3":7"#).replace(r#""m19":19"#, r#""m19":8"#);
    let expected = format!(r#"{{"big":{{{many}}},"twice":{{{twice}}}}}"#);
    assert_eq!(String::from_utf8(rendered(data)).unwrap(), expected);
}

/// A small deterministic generator (xorshift64*), so that a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The run of plain bytes ends where a byte-at-a-time scan says, whatever the bytes around it.
#[test]
fn plain_runs_end_at_the_first_quote_backslash_or_control_character() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let alphabet = [b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xc3, 0xff, b'\n', 0x01, 0x5b, 0x5d];
    for _ in 0..20_000 {
        let len = rng.below(40);
        let bytes: Vec<u8> =
            (0..len).map(|_| if rng.below(4) == 0 { alphabet[rng.below(alphabet.len())] } else { b'x' }).collect();
        let from = rng.below(len + 1);
        let naive = (from..len).find(|&i| STOPS[usize::from(bytes[i])]).unwrap_or(len);
        assert_eq!(plain_end(&bytes, from), naive, "{bytes:?} from {from}");
    }
}

/// Pieces the mutations insert: JSON's structure, its literals and escapes, and near misses.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    " ",
    "\n",
    "0",
    "1",
    "-",
    ".",
    "e",
    "E",
    "+",
    "null",
    "true",
    "false",
    "\\u0041",
    "\\ud83d\\ude00",
    "\\ud800",
    "\\n",
    "\"id\":\"x\"",
    "\"data\":",
    "\"sequence\":",
    "{\"a\":1}",
    "[1,2]",
    "1.5e3",
    "-0",
    "00",
    "\u{7f}",
    "é",
    "\t",
    "\u{1}",
    "\"\"",
    "1e999",
    "99999999999999999999",
];

/// Thousands of texts near valid events (bytes deleted, repeated, replaced, pieces inserted):
/// wherever the hand-written decoder answers, serde_json's path answers the same.
#[test]
fn mutated_events_are_taken_only_as_serde_json_reads_them() {
    let seeds = taken();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut tried, mut both, mut left) = (0, 0, 0);
    for round in 0..30_000 {
        let mut text = seeds[round % seeds.len()].clone().into_bytes();
        for _ in 0..=rng.below(3) {
            let at = rng.below(text.len() + 1);
            match rng.below(4) {
                0 if at < text.len() => {
                    text.remove(at);
                }
                1 if at < text.len() => {
                    let end = (at + 1 + rng.below(12)).min(text.len());
                    let copy = text[at..end].to_vec();
                    text.splice(at..at, copy);
                }
                2 if at < text.len() => text[at] = PIECES[rng.below(PIECES.len())].as_bytes()[0],
                _ => {
                    let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                    text.splice(at..at, piece.iter().copied());
                }
            }
        }
        let Ok(text) = String::from_utf8(text) else { continue };
        tried += 1;
        match (agrees(&text), by_serde(&text)) {
            (Some(_), _) => both += 1,
            (None, Ok(_)) => left += 1,
            (None, Err(_)) => {}
        }
    }
    // The mutants exercise both sides: many still valid and taken, many refused.
    assert!(tried > 20_000, "{tried} mutants were text");
    assert!(both > 2_000, "only {both} of {tried} mutants were taken");
    assert!(both + left < tried / 2, "most mutants should be refused: {both} taken, {left} left");
    // What the decoder leaves to serde_json and serde_json reads is rarer still (nesting past
    // 100, a text of 4 GiB): no mutant here.
    assert_eq!(left, 0, "valid mutants left to serde_json ({both} taken)");
}
