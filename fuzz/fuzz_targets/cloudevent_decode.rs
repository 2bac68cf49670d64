//! The CloudEvent decoder on arbitrary bytes: it never panics, and what it accepts can be
//! carried where it goes (the id and a string sequence make header values, the id and the type
//! fit AMQP short strings) and decodes again to the same event once serialised. Its `data`, a
//! tree of spans of the input, holds what serde_json's own value of it holds and renders the
//! bytes serde_json renders for that value. Most accepted events go through the hand-written
//! decoder (`src/event/scan.rs`, its containers copied verbatim when rendered), the rest through
//! serde_json's: both are held to serde_json's reading here.

#![no_main]

use hookrelay::event::{CloudEvent, MAX_SHORT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = CloudEvent::decode(data) else { return };
    http::HeaderValue::from_str(&ev.id).expect("an accepted id is a header value");
    assert!(ev.id.len() <= MAX_SHORT && ev.ty.len() <= MAX_SHORT, "id and type fit AMQP short strings");
    if let Some(seq) = ev.sequence_text() {
        http::HeaderValue::from_str(&seq).expect("an accepted sequence is a header value");
    }
    let _ = ev.data_version();
    let again = CloudEvent::decode(&serde_json::to_vec(&ev).unwrap()).expect("an accepted event decodes again");
    assert_eq!(again, ev);
    assert_eq!(ev.to_value(), serde_json::to_value(&ev).unwrap());
    let whole: serde_json::Value = serde_json::from_slice(data).expect("an accepted event is JSON");
    let expected = whole.get("data").filter(|d| !d.is_null());
    assert_eq!(ev.data.as_ref().map(|d| d.to_value()).as_ref(), expected, "data as serde_json reads it");
    if let (Some(tree), Some(value)) = (&ev.data, expected) {
        let mut written = Vec::new();
        tree.root().write_json(&mut written);
        assert_eq!(written, serde_json::to_vec(value).unwrap(), "data rendered as serde_json renders it");
    }
});
