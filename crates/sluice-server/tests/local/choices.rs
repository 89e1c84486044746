//! Several choices (`n`) and `logprobs` on local models, streamed as OpenAI streams them:
//! each choice's deltas under its `index`, interleaved, each ended by its own finish reason,
//! each chunk's tokens in its `logprobs.content`; put together, the stream is the whole
//! answer. The official OpenAI Python SDK accumulates such streams into the same answer
//! (`tests/python/test_openai_sdk_local.py`).

use super::*;

/// One choice of an answer, as the tests compare them: text, calls (name, arguments),
/// finish reason, and the tokens' (bytes, logprob) pairs.
#[derive(Debug, Default, Clone)]
struct Choice {
    content: String,
    calls: Vec<(String, String)>,
    finish: String,
    tokens: Vec<(Vec<u8>, f64)>,
}

fn tokens_of(logprobs: &Value) -> Vec<(Vec<u8>, f64)> {
    logprobs["content"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            assert!(
                t["token"].is_string() && t["top_logprobs"].is_array(),
                "{t}"
            );
            let bytes = t["bytes"].as_array().unwrap();
            (
                bytes.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
                t["logprob"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn whole_choices(v: &Value) -> Vec<Choice> {
    let choices = v["choices"].as_array().unwrap();
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{v}");
    }
    choices
        .iter()
        .map(|c| Choice {
            content: c["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            calls: c["message"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let f = &t["function"];
                    let name = f["name"].as_str().unwrap().to_string();
                    (name, f["arguments"].as_str().unwrap().to_string())
                })
                .collect(),
            finish: c["finish_reason"].as_str().unwrap().to_string(),
            tokens: tokens_of(&c["logprobs"]),
        })
        .collect()
}

/// A stream's choices put together; checks that each choice's role comes first, that
/// nothing follows a choice's finish chunk, and returns the usage.
fn streamed_choices(events: &[String]) -> (Vec<Choice>, Option<Value>) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut choices: Vec<Choice> = Vec::new();
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        if !c["usage"].is_null() {
            usage = Some(c["usage"].clone());
        }
        for ch in c["choices"].as_array().unwrap() {
            let index = ch["index"].as_u64().unwrap() as usize;
            if index == choices.len() {
                assert_eq!(ch["delta"]["role"], "assistant", "{e}");
                choices.push(Choice::default());
            }
            assert!(index < choices.len(), "choice {index} before its role: {e}");
            let choice = &mut choices[index];
            assert!(choice.finish.is_empty(), "after the finish chunk: {e}");
            if let Some(t) = ch["delta"]["content"].as_str() {
                choice.content.push_str(t);
            }
            for call in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let at = call["index"].as_u64().unwrap() as usize;
                if choice.calls.len() <= at {
                    choice.calls.resize(at + 1, Default::default());
                }
                if let Some(n) = call["function"]["name"].as_str() {
                    choice.calls[at].0.push_str(n);
                }
                if let Some(a) = call["function"]["arguments"].as_str() {
                    choice.calls[at].1.push_str(a);
                }
            }
            choice.tokens.extend(tokens_of(&ch["logprobs"]));
            if let Some(f) = ch["finish_reason"].as_str() {
                choice.finish = f.to_string();
            }
        }
    }
    (choices, usage)
}

/// Whole and streamed choices agree: the same text, calls and finish, the same tokens, and
/// their log probabilities within float rounding.
fn assert_same(whole: &[Choice], streamed: &[Choice], what: &str) {
    assert_eq!(whole.len(), streamed.len(), "{what}");
    for (i, (w, s)) in whole.iter().zip(streamed).enumerate() {
        assert_eq!(w.content, s.content, "{what}: choice {i}");
        assert_eq!(w.calls, s.calls, "{what}: choice {i}");
        assert_eq!(w.finish, s.finish, "{what}: choice {i}");
        let names = |c: &Choice| c.tokens.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(w), names(s), "{what}: choice {i}");
        for (a, b) in w.tokens.iter().zip(&s.tokens) {
            assert!((a.1 - b.1).abs() < 1e-3, "{what}: choice {i}: {a:?} {b:?}");
        }
    }
}

/// The whole answer and the streamed one to `body`, after a first whole answer that leaves the
/// model's slots holding the prompt as both then find it (a prompt evaluated afresh and one
/// reused from a slot give the same tokens, but log probabilities that differ in the last
/// digits: the reused prompt's last token runs as a decode step).
async fn whole_and_streamed(url: &str, body: Value) -> (Vec<Choice>, Value, Vec<Choice>, Value) {
    let r = post_json(url, body.to_string(), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(url, body.to_string(), &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let whole = whole_choices(&v);
    let mut streamed = body;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let mut s = post_stream(url, streamed.to_string(), &[]).await.unwrap();
    assert_eq!(s.status, 200);
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    let (choices, usage) = streamed_choices(&events);
    (whole, v["usage"].clone(), choices, usage.expect("usage"))
}

/// Three sampled choices with `logprobs`: the stream interleaves them and, put together, is
/// the whole answer; the tokens spell the text, each choice is its own generation, and usage
/// counts the prompt once. A stop string's tokens come with the finish chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_choices_with_logprobs_stream_as_they_answer_whole() {
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\nparallel = 2\n",
        model_file("choices", TestArch::Llama).display()
    );
    let (_fake, gw) = gateway("prompt_cache_slots = 0", &models).await;
    let url = gw.url("/v1/chat/completions");
    let body: Value = serde_json::from_str(&chat(
        "tiny",
        json!({"n": 3, "seed": 7, "temperature": 1, "max_tokens": 12, "logprobs": true, "top_logprobs": 2}),
    ))
    .unwrap();
    let (whole, whole_usage, streamed, usage) = whole_and_streamed(&url, body.clone()).await;
    assert_same(&whole, &streamed, "n = 3");
    assert_eq!(whole.len(), 3);
    assert!(
        whole[0].content != whole[1].content || whole[1].content != whole[2].content,
        "three seeds, three answers: {whole:?}"
    );
    let mut completion = 0;
    for c in &whole {
        let bytes: Vec<u8> = c.tokens.iter().flat_map(|t| t.0.clone()).collect();
        let spelled = String::from_utf8_lossy(&bytes);
        let spelled = spelled
            .strip_prefix(' ')
            .filter(|s| *s == c.content)
            .unwrap_or(&spelled);
        assert_eq!(spelled, c.content, "the tokens spell the text: {c:?}");
        completion += c.tokens.len() as u64;
    }
    let counted = usage["completion_tokens"].as_u64().unwrap();
    assert!(counted >= completion && counted <= 36, "{usage}");
    assert_eq!(usage["completion_tokens"], whole_usage["completion_tokens"]);
    assert_eq!(usage["prompt_tokens"], whole_usage["prompt_tokens"]);

    // The first choice alone, as one request with the same seed gives it.
    let one: Value = serde_json::from_str(&chat(
        "tiny",
        json!({"seed": 7, "temperature": 1, "max_tokens": 12, "logprobs": true, "top_logprobs": 2}),
    ))
    .unwrap();
    let (alone, alone_usage, _, _) = whole_and_streamed(&url, one).await;
    assert_same(&alone, &whole[..1], "choice 0 alone");
    assert_eq!(alone_usage["prompt_tokens"], whole_usage["prompt_tokens"]);

    // A stop string: what it matched is not text, but its tokens are in the list, the last
    // ones with the finish chunk.
    let text = &whole[0].content;
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= text.len() / 2 && i > 0)
        .unwrap_or(0);
    let stop: String = text[cut..].chars().take(2).collect();
    if !stop.trim().is_empty() {
        let mut stopped = body;
        stopped["n"] = json!(1);
        stopped["stop"] = json!([stop]);
        let (whole, _, streamed, _) = whole_and_streamed(&url, stopped).await;
        assert_same(&whole, &streamed, "stop string");
        assert!(!whole[0].content.contains(&stop), "{whole:?}");
        assert_eq!(whole[0].finish, "stop");
    }
}

/// A random-weight Qwen2 file (a template without a tool format: the fallback prompt) with room
/// for the fallback prompt's tools and a call.
fn roomy_file(name: &str) -> std::path::PathBuf {
    let path = model_file(name, TestArch::Qwen2);
    TestModel {
        context_length: 2048,
        ..TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0)
    }
    .write(&path)
    .unwrap();
    path
}

fn weather() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": false
    })
}

/// Forced calls in several choices, streamed and whole (one function: its arguments as they
/// come; two functions: the call at the end), with `logprobs` covering the calls' tokens: every
/// choice's call validates, and the stream is the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_choices_call_tools_streamed_as_whole() {
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\nparallel = 2\n",
        roomy_file("choices-tools").display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let url = gw.url("/v1/chat/completions");
    let tool = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": weather()}});
    for tools in [
        json!([tool("weather")]),
        json!([tool("weather"), tool("forecast")]),
    ] {
        let body: Value = serde_json::from_str(&chat(
            "tiny",
            json!({"n": 2, "seed": 3, "temperature": 1, "max_tokens": 600, "tools": tools, "tool_choice": "required", "logprobs": true}),
        ))
        .unwrap();
        let (whole, _, streamed, _) = whole_and_streamed(&url, body).await;
        assert_same(&whole, &streamed, &tools.to_string());
        for c in &whole {
            assert_eq!(c.finish, "tool_calls", "{c:?}");
            assert_eq!(c.calls.len(), 1, "{c:?}");
            let arguments: Value = serde_json::from_str(&c.calls[0].1).unwrap();
            sluice_local::testing::json_schema::validate(&weather(), &arguments)
                .unwrap_or_else(|e| panic!("{e}: {arguments}"));
            assert!(!c.tokens.is_empty(), "{c:?}");
        }
    }
}

/// The official OpenAI Python SDK's stream helper accumulates several streamed choices with
/// their `logprobs`, and forced calls in several choices, into what the whole answer says;
/// on the real SmolLM2 file too when `SLUICE_SMOLLM2_GGUF` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_accumulates_streamed_choices_and_logprobs() {
    const SCRIPT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/test_openai_sdk_local.py"
    );
    let python = common::script::python();
    let py = python.clone();
    let available = tokio::task::spawn_blocking(move || common::script::importable(&py, "openai"))
        .await
        .unwrap();
    if let Err(why) = available {
        assert_ne!(
            std::env::var("SLUICE_REQUIRE_PYTHON_SDK").as_deref(),
            Ok("1"),
            "the OpenAI Python SDK is required: {why}"
        );
        eprintln!("SKIPPED {SCRIPT}: {why}");
        return;
    }
    let mut models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\nparallel = 2\n",
        roomy_file("sdk-choices").display()
    );
    // SmolLM2 runs one sequence at a time: its choices running side by side give the same
    // tokens, but log probabilities that vary with what else is in the batch (by up to 0.05
    // seen), which the comparison within 1e-3 would not tolerate.
    let smol = std::env::var("SLUICE_SMOLLM2_GGUF").unwrap_or_default();
    if !smol.is_empty() {
        models.push_str(&format!(
            "[[models]]\nname = \"smol\"\nprovider = \"here\"\npath = \"{smol}\"\nparallel = 1\n"
        ));
    }
    let (_fake, gw) = gateway("context_length = 2048", &models).await;
    let base_url = gw.url("/v1");
    let local_models = if smol.is_empty() { "tiny" } else { "tiny,smol" };
    let run = tokio::task::spawn_blocking(move || {
        common::script::run_script(
            &python,
            SCRIPT,
            &[
                ("SLUICE_BASE_URL", base_url.as_str()),
                ("SLUICE_LOCAL_MODELS", local_models),
            ],
            SLOW,
        )
    })
    .await
    .unwrap();
    run.assert_passed(SCRIPT);
}
