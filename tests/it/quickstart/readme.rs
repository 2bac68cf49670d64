//! Reading the README's commands: the `sh` blocks of its "Quick start" section, split into words
//! as a shell does, and the one command each step of the walkthrough needs.

use super::REPO;
use std::path::Path;

/// One command line of the README: `NAME=VALUE …` assignments, then the words.
#[derive(Debug, Clone)]
pub(super) struct ShellCommand {
    pub(super) env: Vec<(String, String)>,
    pub(super) words: Vec<String>,
}

impl ShellCommand {
    /// The arguments after `cargo run --release --`, when this is a hookrelay command.
    pub(super) fn hookrelay_args(&self) -> Option<&[String]> {
        self.words.strip_prefix(&["cargo".to_string(), "run".into(), "--release".into(), "--".into()][..])
    }

    /// For `curl … URL [-X METHOD] [-d BODY]`: (method, path after the host, body).
    pub(super) fn curl(&self) -> Option<(String, String, Option<String>)> {
        if self.words.first().map(String::as_str) != Some("curl") {
            return None;
        }
        let (mut method, mut path, mut body) = (None, None, None);
        let mut words = self.words[1..].iter();
        while let Some(w) = words.next() {
            match w.as_str() {
                "-X" => method = words.next().cloned(),
                "-d" | "--data" => body = words.next().cloned(),
                "-H" => {
                    words.next();
                }
                url if url.starts_with("http://127.0.0.1:8080/") => {
                    path = Some(url["http://127.0.0.1:8080".len()..].into())
                }
                _ => {}
            }
        }
        let method = method.unwrap_or_else(|| if body.is_some() { "POST".into() } else { "GET".into() });
        Some((method, path?, body))
    }
}

/// Splits one shell line into words: single and double quotes, backslash escapes, and a `#`
/// comment at the start of a word.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            '#' if word.is_none() => break,
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Every command in the `sh` code blocks of the README's "Quick start" section, in order.
pub(super) fn quick_start_commands() -> Vec<ShellCommand> {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let start = readme.find("\n## Quick start").expect("README.md has a `## Quick start` section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let mut words = shell_words(&pending);
        pending.clear();
        let mut env = Vec::new();
        while let Some((k, v)) = words.first().and_then(|w| w.split_once('=')) {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                break;
            }
            env.push((k.to_string(), v.to_string()));
            words.remove(0);
        }
        if !words.is_empty() {
            commands.push(ShellCommand { env, words });
        }
    }
    commands
}

/// The one quick-start command `pick` chooses, or a failure that says which is missing.
pub(super) fn find<'a>(
    commands: &'a [ShellCommand],
    what: &str,
    pick: impl Fn(&ShellCommand) -> bool,
) -> &'a ShellCommand {
    let found: Vec<&ShellCommand> = commands.iter().filter(|c| pick(c)).collect();
    assert!(
        !found.is_empty(),
        "README.md's quick start has no {what} command any more: update the README or tests/it/quickstart/ \
         (commands found: {commands:#?})"
    );
    found[0]
}

pub(super) fn hookrelay_command<'a>(
    commands: &'a [ShellCommand],
    what: &str,
    args: &[&str],
    without: &[&str],
) -> &'a ShellCommand {
    find(commands, what, |c| {
        c.hookrelay_args().is_some_and(|a| {
            args.iter().all(|x| a.iter().any(|y| y == x)) && without.iter().all(|x| !a.iter().any(|y| y == x))
        })
    })
}

#[test]
fn the_shell_splitter_reads_the_readme_as_a_shell_does() {
    assert_eq!(
        shell_words(r#"A=1 cargo run -- publish --data '{"a": "b c"}' "x\"y" z\ w # a comment"#),
        ["A=1", "cargo", "run", "--", "publish", "--data", r#"{"a": "b c"}"#, "x\"y", "z w"]
    );
    let cmds = quick_start_commands();
    let run = hookrelay_command(&cmds, "`run`", &["run"], &[]);
    assert_eq!(run.env.first().map(|(k, _)| k.as_str()), Some("EXAMPLE_WEBHOOK_SECRET"), "{run:?}");
}
