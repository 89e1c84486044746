//! Legacy text completions (`/v1/completions`) on a local chat model: what is asked, read from
//! the client's body. The prompt goes to the model as it is (no chat template), through the
//! same queue, continuous batching and prompt reuse as chat. What a local model cannot do is
//! refused with a 400 naming the field, never dropped: token-id prompts (another model's
//! tokens), more than one prompt, `suffix` (no fill-in-the-middle), `n` or `best_of` above 1,
//! `logprobs`.

use super::errors::invalid;
use super::request::keep_alive_of;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_core::Error;
use sluice_local::pool::KeepAlive;
use sluice_local::ChatRequest;
use sluice_types::completions::DEFAULT_MAX_TOKENS;
use sluice_types::openai::Stop;

/// The fields read, each kept raw so that a wrong type is refused naming its field.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow, default)]
    top_p: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stop: Option<&'a RawValue>,
    #[serde(borrow, default)]
    seed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    echo: Option<&'a RawValue>,
    #[serde(borrow, default)]
    suffix: Option<&'a RawValue>,
    #[serde(borrow, default)]
    n: Option<&'a RawValue>,
    #[serde(borrow, default)]
    best_of: Option<&'a RawValue>,
    #[serde(borrow, default)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    keep_alive: Option<&'a RawValue>,
    /// As for chat: llama.cpp's, Ollama's and vLLM's `top_k`, and `ignore_eos`.
    #[serde(borrow, default)]
    top_k: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ignore_eos: Option<&'a RawValue>,
}

/// A text completion for a local model, read from the client's body.
pub(super) struct LocalText {
    pub request: ChatRequest,
    /// Whether the stream ends with usage.
    pub include_usage: bool,
    /// The request's own keep-alive.
    pub keep_alive: Option<KeepAlive>,
    /// `echo`: the prompt, sent before the completion.
    pub echo: Option<String>,
}

/// `raw` (absent or `null`: `None`) read as a `T`, or a 400 naming `param` that says what it
/// must be.
fn field<T: DeserializeOwned>(
    raw: Option<&RawValue>,
    param: &'static str,
    what: &str,
) -> Result<Option<T>, Error> {
    match raw.filter(|r| r.get() != "null") {
        None => Ok(None),
        Some(r) => serde_json::from_str(r.get())
            .map(Some)
            .map_err(|_| invalid(format!("`{param}` must be {what}"), param)),
    }
}

/// Refuses `param` unless it is absent, `null` or 1.
fn at_most_one(raw: Option<&RawValue>, param: &'static str) -> Result<(), Error> {
    match field::<u64>(raw, param, "a positive integer")? {
        None | Some(1) => Ok(()),
        Some(_) => Err(invalid(
            format!("local models return one completion: `{param}` must be 1"),
            param,
        )),
    }
}

/// The one prompt text: a string, or an array of one string.
fn prompt_text(raw: Option<&RawValue>) -> Result<String, Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Prompt {
        One(String),
        Many(Vec<serde_json::Value>),
    }
    let refuse = |message: &str| Err(invalid(message.into(), "prompt"));
    match field::<Prompt>(raw, "prompt", "a string or an array")? {
        None => refuse("`prompt` is required"),
        Some(Prompt::One(text)) => Ok(text),
        Some(Prompt::Many(items)) => match <[_; 1]>::try_from(items) {
            Ok([serde_json::Value::String(text)]) => Ok(text),
            Ok(_) => refuse("local models take text: `prompt` must be a string (token ids are another model's tokens)"),
            Err(items) if items.iter().all(serde_json::Value::is_string) => {
                refuse("local models answer one prompt a request: `prompt` must be one string")
            }
            Err(_) => refuse("local models take text: `prompt` must be a string (token ids are another model's tokens)"),
        },
    }
}

/// The text completion of an OpenAI `/v1/completions` body, for a local model.
pub(super) fn text_request(body: &[u8]) -> Result<LocalText, Error> {
    let w: Wire<'_> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("invalid request body: {e}"), "prompt"))?;
    let prompt = prompt_text(w.prompt)?;
    if w.suffix.is_some_and(|s| s.get() != "null") {
        return Err(invalid(
            "local models do not fill in the middle: leave out `suffix`".into(),
            "suffix",
        ));
    }
    at_most_one(w.n, "n")?;
    at_most_one(w.best_of, "best_of")?;
    if w.logprobs.is_some_and(|l| l.get() != "null") {
        return Err(invalid(
            "local models do not return `logprobs`".into(),
            "logprobs",
        ));
    }
    let max_tokens = field::<u64>(w.max_tokens, "max_tokens", "a positive integer")?
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        return Err(invalid(
            "local models complete at least one token: `max_tokens` must be at least 1".into(),
            "max_tokens",
        ));
    }
    let stop = field::<Stop>(w.stop, "stop", "a string or an array of strings")?;
    let echo = field::<bool>(w.echo, "echo", "a boolean")?.unwrap_or(false);
    #[derive(Deserialize)]
    struct StreamOptions {
        #[serde(default)]
        include_usage: bool,
    }
    let include_usage = field::<StreamOptions>(w.stream_options, "stream_options", "an object")?
        .is_some_and(|o| o.include_usage);
    let mut request = ChatRequest {
        max_tokens: Some(usize::try_from(max_tokens).unwrap_or(usize::MAX)),
        stop: stop.map(Stop::into_vec).unwrap_or_default(),
        ignore_eos: field(w.ignore_eos, "ignore_eos", "a boolean")?.unwrap_or(false),
        ..ChatRequest::default()
    };
    request.sampling.temperature = field(w.temperature, "temperature", "a number")?;
    request.sampling.top_p = field(w.top_p, "top_p", "a number")?;
    request.sampling.seed = field::<i64>(w.seed, "seed", "an integer")?.map(|s| s as u64);
    request.sampling.top_k = field::<u64>(w.top_k, "top_k", "a non-negative integer")?
        .filter(|&k| k > 0)
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX));
    let keep_alive = field::<serde_json::Value>(w.keep_alive, "keep_alive", "a duration")?;
    request.raw_prompt = Some(prompt.clone());
    Ok(LocalText {
        request,
        include_usage,
        keep_alive: keep_alive_of(keep_alive)?,
        echo: echo.then_some(prompt),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: serde_json::Value) -> (String, Option<&'static str>) {
        match text_request(body.to_string().as_bytes()) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => match e.kind() {
                sluice_core::ErrorKind::InvalidRequest { message, param } => {
                    (message.clone(), *param)
                }
                other => panic!("{other:?}"),
            },
        }
    }

    #[test]
    fn reads_a_prompt_and_its_sampling() {
        let body = serde_json::json!({"model": "m", "prompt": ["Once"], "max_tokens": 5,
            "temperature": 0, "top_p": 0.5, "stop": "\n", "seed": 3, "echo": true,
            "stream_options": {"include_usage": true}, "n": 1, "logprobs": null});
        let t = text_request(body.to_string().as_bytes()).unwrap();
        assert_eq!(t.request.raw_prompt.as_deref(), Some("Once"));
        assert_eq!(t.request.max_tokens, Some(5));
        assert_eq!(t.request.stop, ["\n"]);
        assert_eq!(t.request.sampling.seed, Some(3));
        assert_eq!(t.request.sampling.top_p, Some(0.5));
        assert!(t.include_usage);
        assert_eq!(t.echo.as_deref(), Some("Once"));
        let plain = text_request(br#"{"model":"m","prompt":"x"}"#).unwrap();
        assert_eq!(plain.request.max_tokens, Some(16), "OpenAI's default");
        assert!(plain.echo.is_none() && !plain.include_usage);
    }

    #[test]
    fn what_local_models_cannot_do_is_refused_by_name() {
        use serde_json::json;
        for (body, param, want) in [
            (json!({"prompt": [1, 2]}), "prompt", "token ids"),
            (json!({"prompt": [[1, 2]]}), "prompt", "token ids"),
            (json!({"prompt": ["a", "b"]}), "prompt", "one prompt"),
            (
                json!({"prompt": "x", "suffix": "y"}),
                "suffix",
                "fill in the middle",
            ),
            (json!({"prompt": "x", "n": 2}), "n", "must be 1"),
            (json!({"prompt": "x", "best_of": 3}), "best_of", "must be 1"),
            (
                json!({"prompt": "x", "logprobs": 2}),
                "logprobs",
                "logprobs",
            ),
            (
                json!({"prompt": "x", "max_tokens": 0}),
                "max_tokens",
                "at least 1",
            ),
            (json!({"prompt": "x", "stop": 5}), "stop", "a string"),
            (json!({"prompt": "x", "top_p": "hi"}), "top_p", "a number"),
            (json!({"prompt": "x", "echo": "yes"}), "echo", "a boolean"),
            (
                json!({"prompt": "x", "keep_alive": "soon"}),
                "keep_alive",
                "keep_alive",
            ),
        ] {
            let (message, got) = refused(body.clone());
            assert_eq!(got, Some(param), "{body}: {message}");
            assert!(message.contains(want), "{body}: {message}");
        }
    }
}
