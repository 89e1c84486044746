//! Logs on stderr, filtered by `SLUICE_LOG` (default `info`), as text or as one JSON object a
//! line (`[server] log_format = "json"`).
//!
//! The subscriber is installed once, at start, before the config is read (so that reading it
//! can log); `sluice serve` then picks the format from its config with [`set_format`], before
//! it serves. The choice is one relaxed atomic read per event, no lock. In JSON every field of
//! the event and of the spans it is in (a request's `request_id`) is a key of the object, so a
//! request's lines carry its id:
//!
//! ```text
//! {"timestamp":"2026-12-04T10:00:00.000000Z","level":"WARN","target":"sluice_server::pipeline::walk","message":"circuit breaker opened","model":"gpt","request_id":"abc"}
//! ```

use sluice_core::config::LogFormat;
use sluice_core::env::SLUICE_LOG;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Whether lines are written as JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the subscriber: text until [`set_format`] says otherwise.
pub fn init() {
    let filter: Targets = std::env::var(SLUICE_LOG)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .fmt_fields(Fields)
                .event_format(Lines {
                    text: Format::default().with_ansi(ansi),
                }),
        )
        .with(filter)
        .try_init();
}

/// Writes lines in `format` from now on. Called before any span is opened: a span's fields
/// are kept in the format current when it opened.
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Relaxed);
}

/// Formats the fields of spans (kept with the span) and events: as text, or as JSON members
/// (`"name":value`, comma-separated, no braces).
struct Fields;

impl<'w> FormatFields<'w> for Fields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        if !JSON.load(Relaxed) {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut members = Members::default();
        fields.record(&mut members);
        writer.write_str(&members.0)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        if !JSON.load(Relaxed) {
            if !current.fields.is_empty() {
                current.fields.push(' ');
            }
            return DefaultFields::new().format_fields(current.as_writer(), fields);
        }
        let mut members = Members::default();
        fields.record(&mut members);
        if !current.fields.is_empty() && !members.0.is_empty() {
            current.fields.push(',');
        }
        current.fields.push_str(&members.0);
        Ok(())
    }
}

/// The event format: tracing-subscriber's text, or one JSON object a line.
struct Lines {
    text: Format,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if !JSON.load(Relaxed) {
            return self.text.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":\"");
        SystemTime.format_time(&mut Writer::new(&mut line))?;
        let meta = event.metadata();
        let _ = write!(
            line,
            "\",\"level\":\"{}\",\"target\":{}",
            meta.level(),
            json_string(meta.target())
        );
        let mut members = Members::default();
        event.record(&mut members);
        if !members.0.is_empty() {
            line.push(',');
            line.push_str(&members.0);
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        line.push(',');
                        line.push_str(fields);
                    }
                }
            }
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// Fields as JSON members.
#[derive(Default)]
struct Members(String);

impl Members {
    fn key(&mut self, field: &Field) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(&json_string(field.name()));
        self.0.push(':');
    }
}

impl Visit for Members {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.0.push_str(&json_string(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.0, "{value}");
        } else {
            self.0.push_str(&json_string(&value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.0.push_str(&json_string(&format!("{value:?}")));
    }
}

/// `s` as a JSON string, quoted and escaped.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_and_escaped() {
        assert_eq!(json_string("a \"b\"\n"), r#""a \"b\"\n""#);
    }
}
