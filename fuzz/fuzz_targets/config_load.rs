//! The config loader on arbitrary files: `hookrelay.toml`, one route, one schema and one
//! plugin, cut from the input at 0xFF bytes (which UTF-8 never holds), written to a config
//! directory and loaded as a reload would. It never panics, and every error it reports points
//! inside the file it names.

#![no_main]

use hookrelay::config::{self, LoadOptions};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

const FILES: [&str; 4] = ["hookrelay.toml", "routes/r.toml", "schemas/order.paid/v1.json", "plugins/p.rhai"];

fn dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        for f in FILES {
            std::fs::create_dir_all(d.path().join(f).parent().unwrap()).unwrap();
        }
        d
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let mut parts = data.split(|b| *b == 0xFF);
    let texts: Vec<&[u8]> = FILES.iter().map(|_| parts.next().unwrap_or_default()).collect();
    for (name, text) in FILES.iter().zip(&texts) {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let Err(e) = config::load_with(dir, LoadOptions::checking()) else { return };
    assert!(!e.errors.is_empty(), "a failed load says why");
    for err in e.errors.iter().chain(&e.warnings) {
        let shown = err.to_string();
        assert!(!shown.is_empty());
        let Some(i) = FILES.iter().position(|f| Path::new(f) == err.file) else { continue };
        let text = String::from_utf8_lossy(texts[i]);
        let lines = text.split('\n').count();
        assert!(err.line <= lines, "{shown}: line {} of a file of {lines} lines", err.line);
    }
});
