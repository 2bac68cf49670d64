//! Config errors that say where: `file:line:col: message`, collected so that a load reports
//! every problem at once, not only the first.

use crate::pipeline::script::{CompileError, Position};
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in the config set, with its location when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the problem is in (relative to the config directory when possible).
    pub file: PathBuf,
    /// 1-based line, 0 when the problem concerns the file as a whole.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub col: usize,
    /// What is wrong, and what to do where that helps.
    pub message: String,
}

impl ConfigError {
    /// A problem with a whole file (missing, unreadable).
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self { file: file.into(), line: 0, col: 0, message: message.into() }
    }

    /// A problem at a byte offset of a file's text.
    pub fn at_offset(file: impl Into<PathBuf>, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, col) = line_col(text, offset);
        Self { file: file.into(), line, col, message: message.into() }
    }

    /// A script of `file` (whose text is `text`) that does not compile.
    pub fn script(file: impl Into<PathBuf>, text: &str, e: &CompileError) -> Self {
        match e.at {
            Position::LineCol(line, col) => Self::at(file, line, col, &e.message),
            Position::Offset(offset) => Self::at_offset(file, text, offset, &e.message),
            Position::Whole => Self::file(file, &e.message),
        }
    }

    /// A problem at a known line and column.
    pub fn at(file: impl Into<PathBuf>, line: usize, col: usize, message: impl Into<String>) -> Self {
        Self { file: file.into(), line, col, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match (self.line, self.col) {
            (0, _) => write!(f, "{file}: {}", self.message),
            (l, 0) => write!(f, "{file}:{l}: {}", self.message),
            (l, c) => write!(f, "{file}:{l}:{c}: {}", self.message),
        }
    }
}

/// Every problem found in one load of a config set that does not load: the errors, and the
/// warnings found on the way (reported too, so that fixing the errors brings no surprise).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// What stops the load.
    pub errors: Vec<ConfigError>,
    /// What would only be warned about.
    pub warnings: Vec<ConfigError>,
    /// The files read on the way, relative to the config directory, sorted (as
    /// [`super::Snapshot::files`] lists them for a set that loads).
    pub files: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    /// The errors, one a line (warnings are not part of it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The path shown in messages: relative to the config directory when inside it.
pub fn display_path(dir: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(dir).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }

    #[test]
    fn display_is_file_line_col() {
        let e = ConfigError::at("routes/erp.toml", 3, 7, "unknown field `urll`");
        assert_eq!(e.to_string(), "routes/erp.toml:3:7: unknown field `urll`");
    }
}
