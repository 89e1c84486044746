//! End-to-end tests against tiny models the tests write into temporary directories.

mod batching;
mod constrained;
mod tools;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::testing::{TestArch, TestDType, TestModel};
use crate::{
    estimate_memory, estimate_memory_with, ChatMessage, ChatModel, ChatRequest, Completion, Engine,
    ErrorKind, FinishReason, GenerationEvent, LoadOptions, SamplingParams,
};

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-local-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &TempDir, spec: &TestModel) -> PathBuf {
    let path = dir.path(&format!("{:?}-{:?}.gguf", spec.arch, spec.dtype));
    spec.write(&path).expect("write test model");
    path
}

fn load(path: &Path, parallel: usize) -> ChatModel {
    load_on(path, parallel, Engine::Auto)
}

fn load_on(path: &Path, parallel: usize, engine: Engine) -> ChatModel {
    ChatModel::load(
        path,
        &LoadOptions {
            parallel,
            queue_capacity: 4,
            context_length: None,
            engine,
            ..LoadOptions::default()
        },
    )
    .expect("load test model")
}

fn model(arch: TestArch, dtype: TestDType, parallel: usize) -> (TempDir, ChatModel) {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(arch, dtype));
    let model = load(&path, parallel);
    (dir, model)
}

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hello world, tell me a story."),
    ]
}

fn greedy(max_tokens: usize) -> ChatRequest {
    ChatRequest {
        messages: messages(),
        max_tokens: Some(max_tokens),
        sampling: SamplingParams {
            temperature: Some(0.0),
            ..SamplingParams::default()
        },
        ignore_eos: true,
        ..ChatRequest::default()
    }
}

fn sampled(seed: u64, max_tokens: usize) -> ChatRequest {
    ChatRequest {
        sampling: SamplingParams {
            temperature: Some(0.9),
            top_p: Some(0.95),
            top_k: Some(50),
            seed: Some(seed),
        },
        ..greedy(max_tokens)
    }
}

fn run(model: &ChatModel, request: ChatRequest) -> (Completion, Vec<String>) {
    let mut deltas = Vec::new();
    let completion = model
        .generate_blocking(request, |d| deltas.push(d.to_owned()))
        .expect("generation succeeds");
    (result(completion), deltas)
}

/// What a generation produced, without the time it waited and how much of its prompt a slot
/// had cached (which differ run to run; `tests/batching.rs` checks the latter).
fn result(completion: Completion) -> Completion {
    Completion {
        queue_wait: std::time::Duration::ZERO,
        usage: crate::Usage {
            cached_prompt_tokens: 0,
            ..completion.usage
        },
        ..completion
    }
}

#[test]
fn every_dtype_loads_and_generates_for_every_architecture() {
    let dir = TempDir::new();
    for (arch, dtype, engine) in [TestArch::Llama, TestArch::Qwen2, TestArch::Phi3]
        .into_iter()
        .flat_map(|a| TestDType::ALL.into_iter().map(move |d| (a, d)))
        .flat_map(|(a, d)| [Engine::Native, Engine::Candle].map(|e| (a, d, e)))
    {
        {
            let path = write(&dir, &TestModel::tiny(arch, dtype));
            let model = load_on(&path, 1, engine);
            let (done, deltas) = run(&model, greedy(12));
            assert_eq!(
                done.finish_reason,
                FinishReason::Length,
                "{arch:?} {dtype:?} {engine:?}"
            );
            assert_eq!(
                done.usage.completion_tokens, 12,
                "{arch:?} {dtype:?} {engine:?}"
            );
            assert_eq!(done.token_ids.len(), 12);
            assert!(done
                .token_ids
                .iter()
                .all(|&id| (id as usize) < model.info().vocab_size));
            assert_eq!(deltas.concat(), done.text);
            assert!(
                !done.text.is_empty(),
                "{arch:?} {dtype:?} {engine:?} generated no text"
            );
            let expected_arch = match arch {
                TestArch::Llama => crate::Architecture::Llama,
                TestArch::Qwen2 => crate::Architecture::Qwen2,
                TestArch::Phi3 => crate::Architecture::Phi3,
                TestArch::Gemma2 => crate::Architecture::Gemma2,
                TestArch::Gemma3 => crate::Architecture::Gemma3,
            };
            assert_eq!(model.info().architecture, expected_arch);
            // The estimate (file size, + corrections on candle) and the accounting of what the
            // engine holds differ only by the GGUF header and alignment padding.
            let options = LoadOptions {
                engine,
                ..LoadOptions::default()
            };
            let estimate = estimate_memory_with(&path, &options).expect("estimate");
            let measured = model.memory();
            assert_eq!(estimate.kv_cache_bytes, measured.kv_cache_bytes);
            assert!(
                estimate.weights_bytes >= measured.weights_bytes
                    && estimate.weights_bytes - measured.weights_bytes < 64 * 1024,
                "{arch:?} {dtype:?} {engine:?}: estimate {estimate:?} vs measured {measured:?}"
            );
        }
    }
}

/// Gemma 2 and 3 generate on the native engine (their only one: candle is refused by name),
/// through their templates: Gemma 2's refuses a system message (a 400), Gemma 3's folds it
/// into the first user turn.
#[test]
fn gemma_loads_and_generates_natively_through_its_template() {
    let dir = TempDir::new();
    for arch in [TestArch::Gemma2, TestArch::Gemma3] {
        for dtype in [TestDType::Q8_0, TestDType::Q4KM, TestDType::F16] {
            let path = write(&dir, &TestModel::tiny(arch, dtype));
            let model = load_on(&path, 1, Engine::Auto);
            assert_eq!(model.engine(), "native", "{arch:?}");
            let request = ChatRequest {
                messages: vec![ChatMessage::new("user", "Hello world, tell me a story.")],
                ..greedy(12)
            };
            let (done, deltas) = run(&model, request.clone());
            assert_eq!(done.usage.completion_tokens, 12, "{arch:?} {dtype:?}");
            assert_eq!(deltas.concat(), done.text);
            assert_eq!(run(&model, request).0.token_ids, done.token_ids);
            let with_system = model.generate_blocking(greedy(4), |_| {});
            match arch {
                TestArch::Gemma2 => {
                    let err = with_system.expect_err("Gemma 2 has no system role");
                    assert!(err.is_invalid_request(), "{err}");
                    assert!(err.to_string().contains("System role"), "{err}");
                }
                _ => assert_eq!(with_system.expect("folded").usage.completion_tokens, 4),
            }
        }
        let path = write(&dir, &TestModel::tiny(arch, TestDType::Q8_0));
        let options = LoadOptions {
            engine: Engine::Candle,
            ..LoadOptions::default()
        };
        let err = ChatModel::load(&path, &options).expect_err("no candle gemma");
        assert!(err.is_unsupported(), "{err}");
        assert!(
            err.to_string().contains(&format!("`{}`", arch.name())),
            "{err}"
        );
    }
    let template = crate::template::ChatTemplate::new(
        crate::testing::GEMMA3_TEMPLATE.to_owned(),
        "<bos>".into(),
        "<eos>".into(),
    )
    .unwrap();
    assert_eq!(
        template.render(&messages(), true).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nHello world, tell me a story.<end_of_turn>\n\
         <start_of_turn>model\n"
    );
}

#[test]
fn greedy_generation_is_deterministic() {
    let (_dir, model) = model(TestArch::Llama, TestDType::Q8_0, 1);
    let (a, _) = run(&model, greedy(24));
    let (b, _) = run(&model, greedy(24));
    assert_eq!(a, b);
    // A fresh load of the same file gives the same tokens too.
    let (_dir2, again) = self::model(TestArch::Llama, TestDType::Q8_0, 1);
    assert_eq!(run(&again, greedy(24)).0.token_ids, a.token_ids);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let (_dir, model) = model(TestArch::Qwen2, TestDType::F16, 1);
    let (a, _) = run(&model, sampled(42, 24));
    let (b, _) = run(&model, sampled(42, 24));
    assert_eq!(a, b);
    let others: Vec<Vec<u32>> = (43..46)
        .map(|seed| run(&model, sampled(seed, 24)).0.token_ids)
        .collect();
    assert!(
        others.iter().any(|ids| *ids != a.token_ids),
        "different seeds should sample differently"
    );
}

#[test]
fn streaming_deltas_concatenate_to_the_full_text() {
    let (_dir, model) = model(TestArch::Llama, TestDType::F32, 1);
    let (done, deltas) = run(&model, sampled(7, 48));
    assert!(deltas.len() > 1, "expected several deltas, got {deltas:?}");
    assert!(deltas.iter().all(|d| !d.is_empty()));
    assert_eq!(deltas.concat(), done.text);
    assert_eq!(done.text, model.detokenize(&done.token_ids));
}

#[test]
fn a_stop_sequence_spanning_tokens_is_honoured_and_not_emitted() {
    let (_dir, model) = model(TestArch::Llama, TestDType::F32, 1);
    let (full, _) = run(&model, greedy(60));
    let pieces: Vec<String> = full
        .token_ids
        .iter()
        .map(|&id| model.detokenize(&[id]))
        .collect();
    // Find tokens i, i+1 whose boundary a two-character stop string can straddle, where that
    // string does not occur earlier in the text.
    let mut found = None;
    let mut before = String::new();
    for i in 0..pieces.len() - 1 {
        let (a, b) = (&pieces[i], &pieces[i + 1]);
        if a.is_ascii() && b.is_ascii() && !a.is_empty() && !b.is_empty() {
            let stop = format!("{}{}", &a[a.len() - 1..], &b[..1]);
            let prefix = format!("{before}{}", &a[..a.len() - 1]);
            if full.text.find(&stop) == Some(prefix.len()) {
                found = Some((i, stop, prefix));
                break;
            }
        }
        before.push_str(a);
    }
    let (i, stop, prefix) = found.expect("a token boundary to stop at");
    let request = ChatRequest {
        stop: vec!["never-matches".into(), stop.clone()],
        ..greedy(60)
    };
    let (done, deltas) = run(&model, request.clone());
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(done.text, prefix);
    assert_eq!(deltas.concat(), prefix);
    assert!(deltas.iter().all(|d| !d.contains(&stop)));
    assert_eq!(
        done.usage.completion_tokens,
        i + 2,
        "stops on the token completing the stop string"
    );
    // With log probabilities, each token's come before the text it makes; the tokens held
    // back as the stop string only with the completion, which has them all.
    let mut generation = model
        .submit(ChatRequest {
            logprobs: Some(1),
            ..request
        })
        .expect("submit");
    let (mut streamed, mut text) = (Vec::new(), String::new());
    let done = loop {
        match generation.blocking_next().expect("event").expect("ok") {
            GenerationEvent::Logprobs(tokens) => streamed.extend(tokens),
            GenerationEvent::Delta(d) => {
                text.push_str(&d);
                let bytes: Vec<u8> = streamed.iter().flat_map(|t| t.bytes.clone()).collect();
                let sent = String::from_utf8_lossy(&bytes);
                assert!(
                    sent.trim_start().starts_with(text.trim_start()),
                    "{sent:?} {text:?}"
                );
            }
            GenerationEvent::Call { .. } => unreachable!("no tools"),
            GenerationEvent::Done(done) => break done,
        }
    };
    assert_eq!(done.logprobs.len(), i + 2);
    assert!(streamed.len() < done.logprobs.len());
    assert_eq!(streamed[..], done.logprobs[..streamed.len()]);
}

#[test]
fn max_tokens_gives_length_with_the_exact_count() {
    let (_dir, model) = model(TestArch::Qwen2, TestDType::Q4_0, 1);
    for max in [1, 5, 17] {
        let (done, _) = run(&model, sampled(3, max));
        assert_eq!(done.finish_reason, FinishReason::Length);
        assert_eq!(done.usage.completion_tokens, max);
    }
}

#[test]
fn prompt_tokens_equal_the_tokenized_rendered_template() {
    for arch in [TestArch::Llama, TestArch::Qwen2] {
        let (_dir, model) = model(arch, TestDType::F32, 1);
        let rendered = model.render_prompt(&messages()).expect("render");
        let ids = model.tokenize(&rendered).expect("tokenize");
        let (done, _) = run(&model, greedy(3));
        assert_eq!(done.usage.prompt_tokens, ids.len(), "{arch:?}");
        assert_eq!(model.prompt_tokens(&messages()).expect("prompt ids"), ids);
        // Control tokens are single ids: no double BOS, markers not split into bytes.
        let (tokens, _) = TestModel::tiny(arch, TestDType::F32).vocabulary();
        let marker = if arch == TestArch::Llama {
            "<|start_header_id|>"
        } else {
            "<|im_start|>"
        };
        let marker_id = tokens
            .iter()
            .position(|t| t == marker)
            .expect("marker in vocab") as u32;
        assert_eq!(
            ids.iter().filter(|&&id| id == marker_id).count(),
            3,
            "{arch:?}: {ids:?}"
        );
        if arch == TestArch::Llama {
            let bos = tokens
                .iter()
                .position(|t| t == "<|begin_of_text|>")
                .expect("bos") as u32;
            assert_eq!(ids.iter().filter(|&&id| id == bos).count(), 1);
            assert_eq!(ids[0], bos);
        }
    }
}

#[test]
fn a_raw_prompt_is_tokenized_as_it_is_without_the_template() {
    for arch in [TestArch::Llama, TestArch::Qwen2] {
        let (_dir, model) = model(arch, TestDType::F32, 1);
        let text = "Once upon a time";
        let plain = model.tokenize(text).expect("tokenize");
        let request = ChatRequest {
            raw_prompt: Some(text.into()),
            ..greedy(3)
        };
        let (done, _) = run(&model, request);
        // Llama's tokenizer asks for BOS; the template's markers never appear.
        let bos = usize::from(arch == TestArch::Llama);
        assert_eq!(done.usage.prompt_tokens, plain.len() + bos, "{arch:?}");
        assert_eq!(done.usage.completion_tokens, 3, "{arch:?}");
    }
}

#[test]
fn the_chat_template_from_metadata_is_used() {
    let (_dir, llama) = model(TestArch::Llama, TestDType::F32, 1);
    assert_eq!(
        llama.render_prompt(&messages()).expect("render"),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHello world, tell me a story.<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let (_dir, qwen) = model(TestArch::Qwen2, TestDType::F32, 1);
    assert_eq!(
        qwen.render_prompt(&[ChatMessage::new("user", "hi")]).expect("render"),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );

    let dir = TempDir::new();
    let custom = TestModel {
        chat_template: Some(
            "{% for m in messages %}[{{ m.role | upper }}:{{ m.content }}]{% endfor %}{% if add_generation_prompt %}<|start_header_id|>{% endif %}"
                .into(),
        ),
        ..TestModel::tiny(TestArch::Llama, TestDType::F32)
    };
    let model = load(&write(&dir, &custom), 1);
    let rendered = model
        .render_prompt(&[ChatMessage::new("user", "hi")])
        .expect("render");
    assert_eq!(rendered, "[USER:hi]<|start_header_id|>");
    assert_eq!(
        model.chat_template(),
        custom.chat_template.as_deref().expect("set")
    );
    // add_bos_token: the template did not emit BOS, so the runtime prepends it.
    let ids = model
        .prompt_tokens(&[ChatMessage::new("user", "hi")])
        .expect("ids");
    assert_eq!(model.detokenize(&ids[..1]), "");
    assert_eq!(ids.len(), model.tokenize(&rendered).expect("ids").len() + 1);

    let without = TestModel {
        chat_template: None,
        ..TestModel::tiny(TestArch::Qwen2, TestDType::F32)
    };
    let model = load(&write(&dir, &without), 1);
    assert_eq!(model.chat_template(), crate::DEFAULT_CHAT_TEMPLATE);
}

#[test]
fn concurrent_sequences_match_sequential_runs() {
    for arch in [TestArch::Llama, TestArch::Qwen2] {
        let (_dir, model) = model(arch, TestDType::Q8_0, 2);
        let sequential: Vec<Completion> = [11, 12]
            .iter()
            .map(|&seed| run(&model, sampled(seed, 40)).0)
            .collect();
        let generations: Vec<_> = [11, 12]
            .iter()
            .map(|&seed| model.submit(sampled(seed, 40)).expect("submit"))
            .collect();
        let concurrent: Vec<Completion> = std::thread::scope(|scope| {
            let handles: Vec<_> = generations
                .into_iter()
                .map(|mut generation| {
                    scope.spawn(move || loop {
                        match generation.blocking_next().expect("event").expect("ok") {
                            GenerationEvent::Done(done) => break result(done),
                            GenerationEvent::Delta(_)
                            | GenerationEvent::Call { .. }
                            | GenerationEvent::Logprobs(_) => {}
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        assert_eq!(sequential, concurrent, "{arch:?}");
        assert_ne!(sequential[0].token_ids, sequential[1].token_ids);
    }
}

#[tokio::test]
async fn a_full_queue_is_reported_and_the_async_api_streams() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::F32));
    let model = ChatModel::load(
        &path,
        &LoadOptions {
            parallel: 1,
            queue_capacity: 1,
            context_length: None,
            ..LoadOptions::default()
        },
    )
    .expect("load");
    // A long request occupies the only slot ...
    let mut long = model.submit(greedy(400)).expect("first is accepted");
    while model.active() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // ... one more may wait ...
    let waiting = model.submit(greedy(4)).expect("second waits in the queue");
    assert_eq!(model.queued(), 1);
    // ... and the next is refused at once.
    let err = model.submit(greedy(4)).expect_err("queue is full");
    assert!(err.is_queue_full(), "{err}");
    assert!(matches!(err.kind(), ErrorKind::QueueFull { capacity: 1 }));
    // The long one streams; dropping it cancels it and frees the slot for the waiting one.
    let first = long.next().await.expect("an event").expect("ok");
    assert!(matches!(first, GenerationEvent::Delta(_)), "{first:?}");
    drop(long);
    let done = waiting.collect().await.expect("the queued request runs");
    assert_eq!(done.usage.completion_tokens, 4);
    let done = model.complete(greedy(2)).await.expect("complete");
    assert_eq!(done.finish_reason, FinishReason::Length);
}

#[test]
fn a_zero_capacity_queue_still_feeds_idle_slots() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::F32));
    let model = ChatModel::load(
        &path,
        &LoadOptions {
            parallel: 1,
            queue_capacity: 0,
            context_length: None,
            ..LoadOptions::default()
        },
    )
    .expect("load");
    let (done, _) = run(&model, greedy(3));
    assert_eq!(done.usage.completion_tokens, 3);
    let busy = model.submit(greedy(400)).expect("the idle slot takes it");
    while model.active() == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let err = model.submit(greedy(3)).expect_err("no slot, no queue");
    assert!(err.is_queue_full(), "{err}");
    drop(busy);
}

#[test]
fn handles_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ChatModel>();
    send::<crate::Generation>();
    send_sync::<crate::Error>();
}

#[test]
fn corrupt_and_truncated_files_give_clear_errors() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q4_0));
    let bytes = std::fs::read(&path).expect("read");

    let truncated = dir.path("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let err = ChatModel::load(&truncated, &LoadOptions::default()).expect_err("truncated");
    assert!(matches!(err.kind(), ErrorKind::InvalidFile { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    let header_only = dir.path("header.gguf");
    std::fs::write(&header_only, &bytes[..64]).expect("write");
    let err =
        ChatModel::load(&header_only, &LoadOptions::default()).expect_err("cut in the header");
    assert!(matches!(err.kind(), ErrorKind::InvalidFile { .. }), "{err}");

    let garbage = dir.path("garbage.gguf");
    std::fs::write(&garbage, b"this is not a model file at all").expect("write");
    let err = ChatModel::load(&garbage, &LoadOptions::default()).expect_err("garbage");
    assert!(matches!(err.kind(), ErrorKind::InvalidFile { .. }), "{err}");

    let mut flipped = bytes.clone();
    let n = flipped.len();
    for b in &mut flipped[n - 4096..] {
        *b = 0xFF;
    }
    let flipped_path = dir.path("flipped.gguf");
    std::fs::write(&flipped_path, &flipped).expect("write");
    // Corrupt tensor data still loads (GGUF has no checksums) but must not panic.
    if let Ok(model) = ChatModel::load(&flipped_path, &LoadOptions::default()) {
        let _ = model.generate_blocking(greedy(2), |_| {});
    }

    let err =
        ChatModel::load(&dir.path("missing.gguf"), &LoadOptions::default()).expect_err("missing");
    assert!(matches!(err.kind(), ErrorKind::Io { .. }), "{err}");
}

#[test]
fn an_unknown_architecture_is_rejected() {
    let dir = TempDir::new();
    for name in ["mamba", "gemma", "phi"] {
        let spec = TestModel {
            architecture_name: Some(name.into()),
            ..TestModel::tiny(TestArch::Llama, TestDType::F32)
        };
        let path = write(&dir, &spec);
        let err = ChatModel::load(&path, &LoadOptions::default()).expect_err("unknown arch");
        assert!(
            matches!(err.kind(), ErrorKind::UnsupportedArchitecture(a) if a == name),
            "{err}"
        );
        assert!(err.is_unsupported());
        assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
        let err = estimate_memory(&path, 1, None).expect_err("estimate");
        assert!(err.is_unsupported(), "{err}");
    }
}

/// Phi-3's 128k-context files (LongRoPE) are refused by name, by both engines.
#[test]
fn a_phi3_file_with_long_rope_is_refused_by_name() {
    let dir = TempDir::new();
    let spec = TestModel {
        long_rope: true,
        ..TestModel::tiny(TestArch::Phi3, TestDType::Q8_0)
    };
    let path = write(&dir, &spec);
    for engine in [Engine::Auto, Engine::Candle] {
        let options = LoadOptions {
            engine,
            ..LoadOptions::default()
        };
        let err = ChatModel::load(&path, &options).expect_err("LongRoPE");
        assert!(
            matches!(err.kind(), ErrorKind::UnsupportedFeature(_)),
            "{engine:?}: {err}"
        );
        assert!(err.is_unsupported());
        let message = err.to_string();
        assert!(
            message.contains("LongRoPE") && message.contains("`phi3`"),
            "{message}"
        );
    }
    assert!(estimate_memory(&path, 1, None)
        .expect_err("estimate")
        .is_unsupported());
}

#[test]
fn a_tensor_type_no_engine_reads_is_named_with_its_tensor() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q8_0));
    for (id, name) in [(20, "IQ4_NL"), (17, "IQ2_XS"), (99, "type id 99")] {
        crate::testing::set_tensor_type(&path, "blk.1.attn_q.weight", id).unwrap();
        let load = ChatModel::load(&path, &LoadOptions::default()).expect_err("IQ type");
        let estimate = estimate_memory(&path, 1, None).expect_err("IQ type");
        for err in [load, estimate] {
            assert!(
                matches!(err.kind(), ErrorKind::UnsupportedTensorType { tensor, dtype }
                    if tensor == "blk.1.attn_q.weight" && dtype == name),
                "{err}"
            );
            assert!(err.is_unsupported());
            let text = err.to_string();
            assert!(!text.contains("not a valid GGUF"), "{text}");
            assert!(
                text.contains(name) && text.contains("blk.1.attn_q.weight"),
                "{text}"
            );
        }
    }
}

#[test]
fn requests_are_validated_and_the_context_is_enforced() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Qwen2, TestDType::F32));
    let model = ChatModel::load(
        &path,
        &LoadOptions {
            parallel: 1,
            queue_capacity: 2,
            context_length: Some(80),
            ..LoadOptions::default()
        },
    )
    .expect("load");
    assert_eq!(model.context_length(), 80);
    let err = model
        .generate_blocking(greedy(0), |_| {})
        .expect_err("max_tokens 0");
    assert!(matches!(err.kind(), ErrorKind::InvalidRequest(_)), "{err}");
    let long = ChatRequest {
        messages: vec![ChatMessage::new("user", "word ".repeat(100))],
        ..greedy(4)
    };
    let err = model.generate_blocking(long, |_| {}).expect_err("too long");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ContextLengthExceeded {
                context_length: 80,
                ..
            }
        ),
        "{err}"
    );
    // Generation stops at the context length with `length`.
    let prompt = model.prompt_tokens(&messages()).expect("ids").len();
    let (done, _) = run(&model, greedy(1000));
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!(done.usage.completion_tokens, 80 - prompt);
    // KV accounting follows the loaded context.
    assert_eq!(model.memory().kv_cache_bytes, 2 * 2 * 2 * 16 * 80 * 4);
}

/// A file whose own context is large (131,072 positions) is sized by the default context, not
/// by its maximum: in the estimate, in what the loaded model holds, and in the context it runs.
#[test]
fn the_kv_cache_is_sized_by_the_default_context_not_the_files_maximum() {
    let dir = TempDir::new();
    for arch in [TestArch::Llama, TestArch::Qwen2] {
        let spec = TestModel {
            context_length: 131_072,
            ..TestModel::tiny(arch, TestDType::Q8_0)
        };
        let path = write(&dir, &spec);
        let info = crate::read_model_info(&path).expect("info");
        assert_eq!(info.context_length, 131_072);
        let estimate = estimate_memory(&path, 2, None).expect("estimate");
        let default = crate::DEFAULT_CONTEXT_LENGTH;
        assert_eq!(estimate.context_length, default);
        assert_eq!(
            estimate.kv_cache_bytes,
            info.kv_cache_bytes(default, 2, crate::KvCacheType::F32)
        );
        let model = ChatModel::load(
            &path,
            &LoadOptions {
                parallel: 2,
                ..LoadOptions::default()
            },
        )
        .expect("load");
        assert_eq!(model.context_length(), default);
        let held = model.memory();
        assert_eq!(held.context_length, default);
        assert_eq!(
            held.kv_cache_bytes, estimate.kv_cache_bytes,
            "estimated as held"
        );
        // The estimate counts the whole file (the header too) for the weights.
        assert!(held.weights_bytes <= estimate.weights_bytes);
        // Asked for: up to the file's own.
        for (asked, used) in [(1024, 1024), (1 << 20, 131_072)] {
            let e = estimate_memory(&path, 1, Some(asked)).expect("estimate");
            assert_eq!(e.context_length, used);
            assert_eq!(
                e.kv_cache_bytes,
                info.kv_cache_bytes(used, 1, crate::KvCacheType::F32)
            );
        }
    }
    // An F16 cache (native engine) holds half, estimated as held.
    let path = write(&dir, &TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0));
    let f16 = LoadOptions {
        kv_cache: crate::KvCacheType::F16,
        ..LoadOptions::default()
    };
    let model = ChatModel::load(&path, &f16).expect("load");
    if model.engine() == "native" {
        let f32 = estimate_memory(&path, 1, None).unwrap();
        let estimate = crate::estimate_memory_with(&path, &f16).unwrap();
        assert_eq!(estimate.kv_cache_bytes * 2, f32.kv_cache_bytes);
        assert_eq!(model.memory().kv_cache_bytes, estimate.kv_cache_bytes);
        // Q8_0 needs heads of whole blocks: this file's heads of 16 values get F16.
        let q8 = LoadOptions {
            kv_cache: crate::KvCacheType::Q8_0,
            ..LoadOptions::default()
        };
        let estimate = crate::estimate_memory_with(&path, &q8).unwrap();
        assert_eq!(estimate.kv_cache_bytes * 2, f32.kv_cache_bytes);
    }
    // Heads of 64 values in Q8_0: 34 bytes for 32 values, estimated as held.
    let spec = TestModel {
        hidden: 256,
        ffn: 512,
        ..TestModel::tiny(TestArch::Llama, TestDType::Q8_0)
    };
    let path = write(&dir, &spec);
    let q8 = LoadOptions {
        kv_cache: crate::KvCacheType::Q8_0,
        ..LoadOptions::default()
    };
    let model = ChatModel::load(&path, &q8).expect("load");
    if model.engine() == "native" {
        let f32 = estimate_memory(&path, 1, None).unwrap();
        let estimate = crate::estimate_memory_with(&path, &q8).unwrap();
        assert_eq!(estimate.kv_cache_bytes * 128, f32.kv_cache_bytes * 34);
        assert_eq!(model.memory().kv_cache_bytes, estimate.kv_cache_bytes);
    }
    // A file whose own context is smaller keeps it.
    let path = write(&dir, &TestModel::tiny(TestArch::Qwen2, TestDType::Q8_0));
    assert_eq!(estimate_memory(&path, 1, None).unwrap().context_length, 512);
}

#[test]
fn memory_accounting_counts_slots() {
    let dir = TempDir::new();
    for arch in [TestArch::Llama, TestArch::Qwen2] {
        let path = write(&dir, &TestModel::tiny(arch, TestDType::F16));
        let file = std::fs::metadata(&path).expect("stat").len();
        for engine in [Engine::Native, Engine::Candle] {
            let options = |parallel| LoadOptions {
                parallel,
                queue_capacity: 1,
                context_length: Some(256),
                engine,
                ..LoadOptions::default()
            };
            let one = estimate_memory_with(&path, &options(1)).expect("estimate");
            let three = estimate_memory_with(&path, &options(3)).expect("estimate");
            assert_eq!(three.kv_cache_bytes, 3 * one.kv_cache_bytes);
            match (engine, arch) {
                // candle's qwen2 slots each load the weights.
                (Engine::Candle, TestArch::Qwen2) => {
                    assert_eq!(three.weights_bytes, 3 * one.weights_bytes)
                }
                _ => assert_eq!(three.weights_bytes, one.weights_bytes),
            }
            if engine == Engine::Candle {
                // F16 weights are held as F32: more than the file.
                assert!(one.weights_bytes > file);
            } else {
                // Held as stored, with F32 copies of the norms (a few KB here).
                assert!(one.weights_bytes >= file && one.weights_bytes - file < 16 * 1024);
            }
            let model = ChatModel::load(&path, &options(3)).expect("load");
            assert_eq!(model.memory().kv_cache_bytes, three.kv_cache_bytes);
            assert!(model.memory().total() <= three.total(), "{engine:?}");
            // The prompt cache's slots are counted like running ones, on the native engine
            // (candle keeps none).
            let kept = LoadOptions {
                prompt_cache_slots: 2,
                ..options(1)
            };
            let estimate = estimate_memory_with(&path, &kept).expect("estimate");
            let slots = if engine == Engine::Native { 3 } else { 1 };
            assert_eq!(estimate.kv_cache_bytes, slots * one.kv_cache_bytes);
            let model = ChatModel::load(&path, &kept).expect("load");
            assert_eq!(model.memory().kv_cache_bytes, estimate.kv_cache_bytes);
        }
    }
}

#[test]
fn an_end_of_turn_token_stops_generation() {
    let (_dir, model) = model(TestArch::Llama, TestDType::F32, 1);
    let (tokens, _) = TestModel::tiny(TestArch::Llama, TestDType::F32).vocabulary();
    let stop_ids: Vec<u32> = ["<|eot_id|>", "<|end_of_text|>"]
        .iter()
        .map(|t| tokens.iter().position(|x| x == t).expect("in vocab") as u32)
        .collect();
    // A hot sampler is close to uniform over the vocabulary, so some seed hits a stop token.
    let stopped = (0..8).find_map(|seed| {
        let request = ChatRequest {
            sampling: SamplingParams {
                temperature: Some(5.0),
                seed: Some(seed),
                ..SamplingParams::default()
            },
            ignore_eos: false,
            ..greedy(400)
        };
        let (done, deltas) = run(&model, request);
        (done.finish_reason == FinishReason::Stop).then_some((done, deltas))
    });
    let (done, deltas) = stopped.expect("a seed that samples a stop token");
    let last = *done.token_ids.last().expect("tokens");
    assert!(stop_ids.contains(&last), "ended on {last}");
    assert!(done.token_ids[..done.token_ids.len() - 1]
        .iter()
        .all(|id| !stop_ids.contains(id)));
    assert_eq!(done.usage.completion_tokens, done.token_ids.len());
    assert_eq!(deltas.concat(), done.text);
    assert!(
        !done.text.contains("<|"),
        "control tokens are not emitted: {:?}",
        done.text
    );
}

/// A GPU device runs candle (the native engine is CPU-only, and asking it for a GPU is
/// refused); a GPU backend this build lacks is a clear load error, not a quiet CPU fallback.
#[test]
fn a_gpu_device_runs_candle_or_says_why_not() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q8_0));
    let on = |engine, device| {
        ChatModel::load(
            &path,
            &LoadOptions {
                engine,
                device,
                ..LoadOptions::default()
            },
        )
    };
    let error = on(Engine::Native, crate::DeviceKind::Cuda(0))
        .err()
        .unwrap();
    assert!(error.is_unsupported(), "{error}");
    assert!(
        error.to_string().contains("native engine cannot run")
            && error.to_string().contains("it runs on the CPU"),
        "{error}"
    );
    if !cfg!(feature = "cuda") {
        let error = on(Engine::Auto, crate::DeviceKind::Cuda(0)).err().unwrap();
        assert!(error.to_string().contains("--features cuda"), "{error}");
    }
    if !cfg!(feature = "metal") {
        let error = on(Engine::Candle, crate::DeviceKind::Metal).err().unwrap();
        assert!(error.to_string().contains("--features metal"), "{error}");
    }
    assert!(on(Engine::Auto, crate::DeviceKind::Cpu).is_ok());
}

/// A SentencePiece (`tokenizer.ggml.model = "llama"`) file, as Llama 2 and Mistral GGUFs are:
/// the prompt tokenizes by score with BOS first, generation runs on both engines, streamed
/// deltas concatenate to the text, and the answer does not start with the space prefix.
#[test]
fn a_sentencepiece_model_tokenizes_and_chats_on_both_engines() {
    let dir = TempDir::new();
    let spec = TestModel::tiny_sentencepiece(TestDType::Q8_0);
    let path = dir.path("spm.gguf");
    spec.write(&path).expect("write");
    let (tokens, _) = spec.vocabulary();
    let id = |t: &str| tokens.iter().position(|x| x == t).expect("in vocab") as u32;
    for engine in [Engine::Native, Engine::Candle] {
        let model = load_on(&path, 1, engine);
        let rendered = model.render_prompt(&messages()).expect("render");
        assert_eq!(
            rendered,
            "<s>[INST] Be brief. [/INST][INST] Hello world, tell me a story. [/INST]"
        );
        let ids = model.tokenize(&rendered).expect("tokenize");
        assert_eq!(ids[0], id("<s>"));
        assert_eq!(
            ids.iter().filter(|&&i| i == id("<s>")).count(),
            1,
            "one BOS"
        );
        // Merged by score (earlier pieces score higher): "ll" before "▁H", and "el" never;
        // text after the BOS gets the space prefix.
        let pieces: Vec<&str> = ids.iter().map(|&i| tokens[i as usize].as_str()).collect();
        let hello = ["▁H", "e", "ll", "o", "▁world", ","];
        assert!(pieces.windows(6).any(|w| w == hello), "{pieces:?}");
        assert_eq!(&pieces[..3], ["<s>", "▁", "["], "{pieces:?}");
        let (done, deltas) = run(&model, greedy(16));
        assert_eq!(done.usage.prompt_tokens, ids.len(), "{engine:?}");
        assert_eq!(done.usage.completion_tokens, 16, "{engine:?}");
        assert_eq!(deltas.concat(), done.text, "{engine:?}");
        assert!(!done.text.contains('▁'), "{engine:?}: {:?}", done.text);
        assert!(!done.text.is_empty(), "{engine:?}");
        // An answer whose first piece is "▁word" starts with "word".
        let first_spaced = (0..64).find_map(|seed| {
            let (done, deltas) = run(&model, sampled(seed, 3));
            let first = tokens[done.token_ids[0] as usize].as_str();
            (first.len() > "▁".len() && first.starts_with('▁')).then_some((done, deltas, first))
        });
        let (done, deltas, first) = first_spaced.expect("a seed whose first piece is spaced");
        assert!(
            done.text.starts_with(first.trim_start_matches('▁')),
            "{engine:?}: {:?} from {first:?}",
            done.text
        );
        assert_eq!(deltas.concat(), done.text);
    }
}

#[test]
fn the_q4_k_m_writer_mixes_q4k_and_q6k() {
    use candle_core::quantized::GgmlDType;
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q4KM));
    let (content, _) = crate::gguf::file::read_header(&path).expect("header");
    let dtype = |name: &str| content.tensor_infos[name].ggml_dtype;
    assert_eq!(dtype("blk.0.attn_q.weight"), GgmlDType::Q4K);
    assert_eq!(dtype("blk.0.attn_v.weight"), GgmlDType::Q4K);
    assert_eq!(dtype("blk.1.attn_v.weight"), GgmlDType::Q6K);
    assert_eq!(dtype("blk.1.ffn_down.weight"), GgmlDType::Q6K);
    assert_eq!(dtype("output.weight"), GgmlDType::Q6K);
    assert_eq!(dtype("output_norm.weight"), GgmlDType::F32);
    let info = crate::read_model_info(&path).expect("info");
    assert_eq!(info.file_type, Some(15));
    assert_eq!(
        (info.block_count, info.embedding_length, info.head_dim),
        (2, 256, 64)
    );
}
