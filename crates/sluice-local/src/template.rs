//! Chat templates: the Jinja source from `tokenizer.chat_template`, rendered with minijinja the
//! way Hugging Face `transformers` renders it.
//!
//! Parity with `transformers`' `apply_chat_template`: `trim_blocks` + `lstrip_blocks`, Python
//! string/dict methods (`.strip()`, `.startswith()`, `.items()` …) through
//! `minijinja_contrib::pycompat`, `raise_exception(msg)` failing the render, `strftime_now(fmt)`
//! (UTC), and a `tojson` filter whose output matches Python's `json.dumps(x, ensure_ascii=False)`
//! byte for byte (minijinja's own HTML-escapes `<`, `>`, `&`, `'`). Variables: `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token`, `tools` (OpenAI's tool objects, or none).

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind as JinjaErrorKind};
use serde::Serialize;

use crate::error::{ErrorKind, Result};

/// The template used when a file has no `tokenizer.chat_template` (ChatML, as llama.cpp does).
pub const DEFAULT_CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat";

/// One chat message as the template sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` …
    pub role: String,
    /// The message text.
    pub content: String,
    /// An assistant message's calls, as templates with a tool format read them:
    /// `{"type": "function", "id": …, "function": {"name": …, "arguments": {…}}}` (arguments
    /// as a JSON value, not a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A `tool` message: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A `tool` message: the function that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

// === impl ChatMessage ===

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// A compiled chat template with the model's BOS/EOS strings.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

// === impl ChatTemplate ===

impl ChatTemplate {
    pub(crate) fn new(source: String, bos_token: String, eos_token: String) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ErrorKind::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(
                    JinjaErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_function("strftime_now", |format: String| {
            strftime(&format, unix_now())
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| ErrorKind::Template(describe(&e)))?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders `messages`, ending with the assistant header when `add_generation_prompt`.
    pub(crate) fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with `tools` (OpenAI's tool objects) for templates that
    /// render them.
    pub(crate) fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ErrorKind::Template(describe(&e)))?;
        let context = minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            tools => tools.map_or(Value::from(()), |t| Value::from(minijinja::value::Serde(t))),
        };
        template
            .render(context)
            .map_err(|e| ErrorKind::TemplateRender(describe(&e)).into())
    }
}

/// The error with its chain of causes, on one line.
fn describe(error: &minijinja::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// --- tojson ---

/// `x | tojson(indent=None, sort_keys=False)` with Python's `json.dumps` output.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_usize() {
            Some(n) => Some(" ".repeat(n)),
            None => v.as_str().map(str::to_owned),
        },
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    // Accepted for parity, no effect: output is always `ensure_ascii=False` style.
    let _ = kwargs.get::<Option<Value>>("ensure_ascii")?;
    let _ = kwargs.get::<Option<Value>>("separators")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(value, indent.as_deref(), sort_keys, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    value: &Value,
    indent: Option<&str>,
    sort_keys: bool,
    depth: usize,
    out: &mut String,
) -> Result<(), minijinja::Error> {
    if depth > 128 {
        return Err(minijinja::Error::new(
            JinjaErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let number = f64::try_from(value.clone())?;
                out.push_str(&python_float(number));
            }
        }
        ValueKind::String => write_json_string(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if indent.is_some() { "," } else { ", " });
                }
                newline(out, depth + 1);
                write_json(item, indent, sort_keys, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if sort_keys {
                keys.sort_by_key(|k| k.to_string());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(if indent.is_some() { "," } else { ", " });
                }
                newline(out, depth + 1);
                // Python converts non-string keys with `str()`.
                match key.as_str() {
                    Some(k) => write_json_string(k, out),
                    None => write_json_string(&key.to_string(), out),
                }
                out.push_str(": ");
                write_json(&value.get_item(key)?, indent, sort_keys, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        ValueKind::Bytes | ValueKind::Plain | ValueKind::Invalid => {
            write_json_string(&value.to_string(), out)
        }
        _ => write_json_string(&value.to_string(), out),
    }
    Ok(())
}

/// A JSON string as `json.dumps(ensure_ascii=False)` writes it.
fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` as `json.dumps` writes it (`1.0`, `0.0001`, `1e-05`, `1e+16`).
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let scientific = format!("{x:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..16).contains(&exponent) {
        let plain = format!("{x}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

// --- strftime_now ---

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31) (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, usize::try_from(month).unwrap_or(1), day)
}

/// A subset of C `strftime` on a UTC timestamp: `%Y %y %m %d %e %j %H %I %M %S %p %b %B %a %A %%`.
fn strftime(format: &str, unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let weekday = usize::try_from((days + 3).rem_euclid(7)).unwrap_or(0); // 1970-01-01 was a Thursday.
    let month_name = MONTHS[(month - 1) % 12];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let day_of_year = {
        const CUMULATIVE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        CUMULATIVE[(month - 1) % 12] + day + i64::from(leap && month > 2)
    };
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate::new(source.to_owned(), "<s>".into(), "</s>".into())
            .expect("template compiles")
    }

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = template(DEFAULT_CHAT_TEMPLATE);
        let out = t
            .render(&[ChatMessage::new("user", "hi")], true)
            .expect("renders");
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let t = template("{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}ok");
        let err = t
            .render(&[ChatMessage::new("user", "hi")], true)
            .expect_err("raises");
        assert!(err.to_string().contains("system first"), "{err}");
        assert!(matches!(err.kind(), ErrorKind::TemplateRender(_)));
    }

    #[test]
    fn tojson_matches_python() {
        let t = template(concat!(
            "{{ {'b': 1, 'a': [1.5, true, none, 'x<y&\\'z\"\\n'], 'c': {}, 'd': 2.0, 'e': 0.00001} | tojson }}|",
            "{{ {'k': [1, 2]} | tojson(indent=2) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}"
        ));
        let out = t.render(&[], false).expect("renders");
        assert_eq!(
            out,
            "{\"b\": 1, \"a\": [1.5, true, null, \"x<y&'z\\\"\\n\"], \"c\": {}, \"d\": 2.0, \"e\": 1e-05}|{\n  \"k\": [\n    1,\n    2\n  ]\n}|{\"a\": 2, \"b\": 1}"
        );
    }

    #[test]
    fn python_methods_and_trim_blocks() {
        let t = template("{% for m in messages %}\n{{ m.content.strip().upper() }}{% if m.role.startswith('us') %}!{% endif %}\n{% endfor %}");
        let out = t
            .render(&[ChatMessage::new("user", "  hi ")], false)
            .expect("renders");
        // `trim_blocks` eats the newline after each block tag, as Jinja does.
        assert_eq!(out, "HI!");
    }

    #[test]
    fn strftime_formats_utc() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let ts = 1_709_211_909;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", ts), "2024-02-29 13:05:09");
        assert_eq!(
            strftime("%d %b %Y, %A %B %j %I%p %%", ts),
            "29 Feb 2024, Thursday February 060 01PM %"
        );
        let t = template("{{ strftime_now('%Y') | length }}");
        assert_eq!(t.render(&[], false).expect("renders"), "4");
    }
}
