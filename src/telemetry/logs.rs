//! The log layer: human-readable lines (coloured on a terminal, without the `otel.*` fields that
//! only steer the exporter) or one JSON object per line, on stderr, filtered by `RUST_LOG`
//! (default `info`).

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{self, FormatFields};
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The log layer of `format`, with its `RUST_LOG` filter (`default` without one).
pub(super) fn layer(format: LogFormat, default: &str) -> impl Layer<Registry> + Send + Sync {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt::layer()
            .fmt_fields(TextFields)
            // Colours on a terminal only: log files and collectors get plain text.
            .with_ansi(ansi())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed(),
    };
    logs.with_filter(filter)
}

/// A terminal on stderr, and no `NO_COLOR`.
fn ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The text log format's fields, without the `otel.*` fields that only steer the exporter.
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut v = SkipOtel(DefaultVisitor::new(writer, true));
        fields.record(&mut v);
        v.0.finish()
    }
}

struct SkipOtel<'a>(DefaultVisitor<'a>);

impl Visit for SkipOtel<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !field.name().starts_with("otel.") {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !field.name().starts_with("otel.") {
            self.0.record_debug(field, value);
        }
    }
}
