//! Legacy text completions (`/v1/completions`) on local chat models: the prompt continued
//! as it is (no chat template), whole and streamed, with exact usage, `echo`, stop strings,
//! prompt reuse and continuous batching, and what a local model cannot do refused by name.

use super::*;

fn completion(model: &str, prompt: &str, extra: Value) -> String {
    let mut v = json!({"model": model, "prompt": prompt, "temperature": 0});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

/// The text and the events of a streamed completion (`[DONE]` last).
async fn streamed(gw: &common::Gateway, body: String) -> (String, Vec<Value>) {
    let mut s = post_stream(&gw.url("/v1/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let parsed: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text = parsed
        .iter()
        .filter_map(|v| v["choices"][0]["text"].as_str())
        .collect();
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_model_completes_a_prompt_whole_and_streamed() {
    let llama = model_file("text", TestArch::Llama);
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\nprice = {{ input = 1.0, output = 2.0 }}\n",
        llama.display()
    );
    let (_fake, gw) = gateway("", &models).await;
    let body = completion(
        "tiny",
        "Once upon a time",
        json!({"max_tokens": 6, "ignore_eos": true}),
    );
    let r = post_json(&gw.url("/v1/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "tiny");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 6);
    // No chat template: the prompt is its own tokens (at most a byte each, and BOS).
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens <= "Once upon a time".len() as u64 + 1, "{v}");
    let whole = v["choices"][0]["text"].as_str().unwrap().to_string();

    // Streamed: the same text piece by piece, the finish, usage when asked, [DONE].
    let body = completion(
        "tiny",
        "Once upon a time",
        json!({"max_tokens": 6, "ignore_eos": true, "stream": true,
               "stream_options": {"include_usage": true}}),
    );
    let (text, events) = streamed(&gw, body).await;
    assert_eq!(text, whole);
    assert!(events.iter().all(|e| e["object"] == "text_completion"));
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 6);
    // The same prompt again: its slot kept every prompt token but the last.
    assert_eq!(
        last["usage"]["prompt_tokens_details"]["cached_tokens"],
        prompt_tokens - 1
    );
    let finish = &events[events.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], "length");
    // The same words asked as a chat message are rendered through the template: more tokens.
    let chat = json!({"model": "tiny", "max_tokens": 1,
        "messages": [{"role": "user", "content": "Once upon a time"}]});
    let r = post_json(&gw.url("/v1/chat/completions"), chat.to_string(), &[])
        .await
        .unwrap();
    let templated = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        prompt_tokens + 4 < templated,
        "{prompt_tokens} vs {templated}"
    );

    // `echo` puts the prompt first, whole and streamed.
    let body = completion(
        "tiny",
        "Once upon a time",
        json!({"max_tokens": 6, "ignore_eos": true, "echo": true}),
    );
    let r = post_json(&gw.url("/v1/completions"), body, &[])
        .await
        .unwrap();
    assert_eq!(
        r.json()["choices"][0]["text"],
        format!("Once upon a time{whole}")
    );
    let body = completion(
        "tiny",
        "Once upon a time",
        json!({"max_tokens": 6, "ignore_eos": true, "echo": true, "stream": true}),
    );
    let (text, _) = streamed(&gw, body).await;
    assert_eq!(text, format!("Once upon a time{whole}"));

    // The spend log says `completions`, with the model's own counts.
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let rec = records
        .iter()
        .rev()
        .find(|r| r.endpoint == "completions" && r.model.as_deref() == Some("tiny"))
        .expect("a spend record");
    assert_eq!(rec.completion_tokens, 6);
    assert!(!rec.usage_estimated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_local_model_cannot_do_with_a_prompt_is_refused_by_name() {
    let llama = model_file("text-refused", TestArch::Llama);
    let models = format!(
        "[[models]]\nname = \"tiny\"\nprovider = \"here\"\npath = \"{}\"\n",
        llama.display()
    );
    let (_fake, gw) = gateway("", &models).await;
    for (extra, param) in [
        (json!({"prompt": [1, 2, 3]}), "prompt"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"suffix": "return x"}), "suffix"),
        (json!({"n": 2}), "n"),
        (json!({"best_of": 2}), "best_of"),
        (json!({"logprobs": 1}), "logprobs"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"stop": 7}), "stop"),
    ] {
        let r = super::post_json_slow(
            &gw.url("/v1/completions"),
            completion("tiny", "x", extra.clone()),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400, "{extra}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{extra}: {}", r.text());
    }
}

/// The real SmolLM2 file (`SLUICE_SMOLLM2_GGUF`; skipped without it), greedy: a plain prompt is
/// continued as text, a stop string ends it, and prompts sent together (continuous batching)
/// are each continued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_continues_a_prompt_as_text() {
    let Some(file) = std::env::var_os("SLUICE_SMOLLM2_GGUF") else {
        eprintln!("skipped: SLUICE_SMOLLM2_GGUF is not set");
        return;
    };
    let models = format!(
        "[[models]]\nname = \"smol\"\nprovider = \"here\"\npath = \"{}\"\nparallel = 3\n",
        std::path::Path::new(&file).display()
    );
    let (_fake, gw) = gateway("context_length = 2048", &models).await;
    let prompt = "The capital of France is";
    let r = super::post_json_slow(
        &gw.url("/v1/completions"),
        completion("smol", prompt, json!({"max_tokens": 8})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    eprintln!("{v}");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{v}");
    // Five words, a handful of tokens: no system prompt or chat markers were added.
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() <= 8, "{v}");

    // A stop string ends the completion there, not included.
    let r = super::post_json_slow(
        &gw.url("/v1/completions"),
        completion("smol", prompt, json!({"max_tokens": 8, "stop": ["Paris"]})),
        &[],
    )
    .await
    .unwrap();
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(
        !v["choices"][0]["text"].as_str().unwrap().contains("Paris"),
        "{v}"
    );

    // Three prompts at once, batched together (`parallel = 3`): each is continued on its
    // own. (Greedy tokens of a real model may flip at a near-tie between a batched and a lone
    // forward pass; sluice-local's tests compare them exactly on its test models.)
    let prompts = [
        "The capital of France is",
        "def add(a, b):\n    return",
        "Water boils at a temperature of",
    ];
    let together = join_in_order(prompts.map(|p| {
        let url = gw.url("/v1/completions");
        let body = completion("smol", p, json!({"max_tokens": 12}));
        tokio::spawn(async move { super::post_json_slow(&url, body, &[]).await.unwrap().json() })
    }))
    .await;
    for (p, v) in prompts.iter().zip(&together) {
        assert_eq!(v["object"], "text_completion", "{p}: {v}");
        assert_eq!(v["usage"]["completion_tokens"], 12, "{p}: {v}");
    }
    let text = |i: usize| {
        together[i]["choices"][0]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(text(0).contains("Paris"), "{}", text(0));
    assert!(
        text(1).contains('a') && text(1).contains('b'),
        "{}",
        text(1)
    );
}

/// The results of spawned tasks, in order.
async fn join_in_order<const N: usize>(tasks: [tokio::task::JoinHandle<Value>; N]) -> Vec<Value> {
    let mut out = Vec::with_capacity(N);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
