//! Continuous batching and prompt reuse on the native engine, against each request run alone
//! on a fresh model.

use std::path::Path;

use super::{load, write, TempDir};
use crate::testing::{TestArch, TestDType, TestModel};
use crate::{ChatMessage, ChatModel, ChatRequest, Completion, GenerationEvent, SamplingParams};

fn ask(text: &str, max_tokens: usize) -> ChatRequest {
    chat(vec![ChatMessage::new("user", text)], max_tokens)
}

fn chat(messages: Vec<ChatMessage>, max_tokens: usize) -> ChatRequest {
    ChatRequest {
        messages,
        max_tokens: Some(max_tokens),
        sampling: SamplingParams {
            temperature: Some(0.0),
            ..SamplingParams::default()
        },
        ignore_eos: true,
        ..ChatRequest::default()
    }
}

/// What a request gives on a model of its own (one slot, nothing cached).
fn alone(path: &Path, request: ChatRequest) -> Completion {
    let model = load(path, 1);
    let done = model.generate_blocking(request, |_| {}).expect("generates");
    assert_eq!(done.usage.cached_prompt_tokens, 0);
    done
}

fn wait(mut generation: crate::Generation) -> Completion {
    loop {
        if let GenerationEvent::Done(done) = generation.blocking_next().expect("event").expect("ok")
        {
            break done;
        }
    }
}

/// Four requests of different lengths, two joining while the first two generate and one with
/// a prompt longer than a shared prefill chunk: each gets exactly the tokens it gets alone.
#[test]
fn batched_sequences_each_get_what_they_get_alone() {
    let dir = TempDir::new();
    for (arch, dtype) in [
        (TestArch::Llama, TestDType::Q4_0),
        (TestArch::Qwen2, TestDType::Q8_0),
    ] {
        let path = write(&dir, &TestModel::tiny(arch, dtype));
        let long = "a long question about rivers and boats ".repeat(8);
        let requests = [
            ask("Hello world, tell me a story.", 40),
            ask("Why?", 24),
            ask(&long, 16),
            ask("Count to ten, slowly please.", 30),
        ];
        let model = load(&path, 4);
        assert!(model.prompt_tokens(&requests[2].messages).unwrap().len() > 200);
        let mut first: Vec<_> = requests[..2]
            .iter()
            .map(|r| model.submit(r.clone()).expect("submit"))
            .collect();
        // The later two join once the first two are generating.
        for g in &mut first {
            assert!(matches!(
                g.blocking_next(),
                Some(Ok(GenerationEvent::Delta(_)))
            ));
        }
        let later: Vec<_> = requests[2..]
            .iter()
            .map(|r| model.submit(r.clone()).expect("submit"))
            .collect();
        let together: Vec<Completion> = std::thread::scope(|scope| {
            let handles: Vec<_> = first
                .into_iter()
                .chain(later)
                .map(|g| scope.spawn(move || wait(g)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (request, got)) in requests.into_iter().zip(together).enumerate() {
            let want = alone(&path, request);
            assert_eq!(got.token_ids, want.token_ids, "{arch:?} request {i}");
            assert_eq!(got.usage.prompt_tokens, want.usage.prompt_tokens);
        }
    }
}

/// The next turn of a conversation reuses the slot that holds the first: only the new tokens
/// run, the reused ones are reported, and the answer is what a fresh model gives.
#[test]
fn a_follow_up_turn_reuses_the_cached_prompt() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q4KM));
    let model = load(&path, 2);
    let mut turn = vec![ChatMessage::new("user", "Tell me about the sea.")];
    let first = model
        .generate_blocking(chat(turn.clone(), 12), |_| {})
        .unwrap();
    assert_eq!(first.usage.cached_prompt_tokens, 0);
    // Another conversation in between takes the other slot.
    let other = model
        .generate_blocking(ask("Something else entirely.", 6), |_| {})
        .unwrap();
    assert_eq!(other.usage.cached_prompt_tokens, 0);

    turn.push(ChatMessage::new("assistant", &first.text));
    turn.push(ChatMessage::new("user", "And the mountains?"));
    let prompt = model.prompt_tokens(&turn).unwrap();
    let first_prompt = model.prompt_tokens(&turn[..1]).unwrap();
    // The cache holds the first prompt and every answer token but the last (never run).
    let held: Vec<u32> = first_prompt
        .iter()
        .chain(&first.token_ids[..first.token_ids.len() - 1])
        .copied()
        .collect();
    let common = held.iter().zip(&prompt).take_while(|(a, b)| a == b).count();
    assert!(
        common >= first_prompt.len(),
        "{common} < {}",
        first_prompt.len()
    );

    let second = model
        .generate_blocking(chat(turn.clone(), 12), |_| {})
        .unwrap();
    assert_eq!(second.usage.cached_prompt_tokens, common);
    assert_eq!(second.usage.prompt_tokens, prompt.len());
    assert_eq!(
        second.token_ids,
        alone(&path, chat(turn.clone(), 12)).token_ids
    );

    // The same prompt again reuses all but its last token.
    let again = model.generate_blocking(chat(turn, 12), |_| {}).unwrap();
    assert_eq!(again.usage.cached_prompt_tokens, prompt.len() - 1);
    assert_eq!(again.token_ids, second.token_ids);
}

/// A raw prompt (legacy text completions) that extends an earlier one reuses the slot's
/// cache as chat turns do, and still gets what it gets alone.
#[test]
fn a_raw_prompt_extending_another_reuses_the_cached_prompt() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q8_0));
    let model = load(&path, 1);
    let raw = |text: &str| ChatRequest {
        raw_prompt: Some(text.into()),
        ..ask("ignored", 6)
    };
    let first = model
        .generate_blocking(raw("The river ran past the mill"), |_| {})
        .unwrap();
    assert_eq!(first.usage.cached_prompt_tokens, 0);
    let longer = "The river ran past the mill and under the bridge";
    let second = model.generate_blocking(raw(longer), |_| {}).unwrap();
    assert!(second.usage.cached_prompt_tokens > 0, "{:?}", second.usage);
    assert!(second.usage.cached_prompt_tokens < second.usage.prompt_tokens);
    assert_eq!(second.token_ids, alone(&path, raw(longer)).token_ids);
}

/// A request cancelled mid-generation frees its slot for the next one, and candle (no batching)
/// never reports reused tokens.
#[test]
fn a_cancelled_sequence_leaves_and_candle_reuses_nothing() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q8_0));
    let model = load(&path, 1);
    let mut g = model.submit(ask("Go on forever.", 400)).unwrap();
    assert!(matches!(
        g.blocking_next(),
        Some(Ok(GenerationEvent::Delta(_)))
    ));
    drop(g);
    let next = model.generate_blocking(ask("Short.", 4), |_| {}).unwrap();
    assert_eq!(next.usage.completion_tokens, 4);

    let candle: ChatModel = super::load_on(&path, 1, crate::Engine::Candle);
    let request = ask("Same prompt twice.", 4);
    for _ in 0..2 {
        let done = candle.generate_blocking(request.clone(), |_| {}).unwrap();
        assert_eq!(done.usage.cached_prompt_tokens, 0);
    }
}

/// A model with `kept` prompt cache slots beyond its `parallel` running ones.
fn load_keeping(path: &Path, parallel: usize, kept: usize) -> ChatModel {
    let options = crate::LoadOptions {
        parallel,
        queue_capacity: 4,
        prompt_cache_slots: kept,
        ..crate::LoadOptions::default()
    };
    ChatModel::load(path, &options).expect("load test model")
}

/// `turn` answered with `answer`, then asked `question`.
fn follow_up(turn: &[ChatMessage], answer: &str, question: &str) -> Vec<ChatMessage> {
    let mut next = turn.to_vec();
    next.push(ChatMessage::new("assistant", answer));
    next.push(ChatMessage::new("user", question));
    next
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// With one prompt cache slot, a conversation's cache outlives another conversation run in
/// between on the model's only running slot: its next turn reuses it (reported as cached
/// tokens), and gets a fresh model's tokens and log probabilities (within float rounding: the
/// kept tokens were computed in other passes). Without the slot, the other conversation took
/// the cache and the next turn runs from (almost) the start.
#[test]
fn a_kept_conversation_outlives_another_and_answers_as_a_fresh_model() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q4KM));
    for kept in [1, 0] {
        let model = load_keeping(&path, 1, kept);
        let turn = vec![ChatMessage::new("user", "Tell me about the sea.")];
        let first = model
            .generate_blocking(chat(turn.clone(), 12), |_| {})
            .unwrap();
        let other = model
            .generate_blocking(ask("Something else entirely, please.", 6), |_| {})
            .unwrap();
        assert!(other.usage.cached_prompt_tokens < other.usage.prompt_tokens / 2);
        let first_prompt = model.prompt_tokens(&turn).unwrap().len();
        let request = ChatRequest {
            logprobs: Some(2),
            ..chat(follow_up(&turn, &first.text, "And the mountains?"), 12)
        };
        let second = model.generate_blocking(request.clone(), |_| {}).unwrap();
        let cached = second.usage.cached_prompt_tokens;
        if kept == 0 {
            assert!(
                cached < first_prompt,
                "{cached} cached without a prompt cache"
            );
            continue;
        }
        assert!(cached >= first_prompt, "{cached} < {first_prompt}");
        let fresh = alone(&path, request);
        assert_eq!(second.token_ids, fresh.token_ids);
        assert_eq!(second.logprobs.len(), fresh.logprobs.len());
        let largest = second
            .logprobs
            .iter()
            .zip(&fresh.logprobs)
            .map(|(a, b)| (a.logprob - b.logprob).abs())
            .fold(0.0f32, f32::max);
        eprintln!("largest log probability difference, reused against fresh: {largest}");
        assert!(largest < 1e-3, "{largest}");
    }
}

/// A prompt that diverges inside the cached tokens (late enough for its prefix to be worth the
/// cache: at least half of it) reuses exactly the common prefix and gets what it gets alone.
#[test]
fn a_prompt_diverging_inside_the_cache_reuses_the_common_prefix() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q8_0));
    let model = load_keeping(&path, 1, 1);
    let story = "Tell me a story about the sea, its waves, its tides and its ships, ";
    let sea = ask(&format!("{story}in the evening."), 2);
    let sky = ask(&format!("{story}at dawn."), 8);
    model.generate_blocking(sea.clone(), |_| {}).unwrap();
    let common = common_prefix(
        &model.prompt_tokens(&sea.messages).unwrap(),
        &model.prompt_tokens(&sky.messages).unwrap(),
    );
    let done = model.generate_blocking(sky.clone(), |_| {}).unwrap();
    assert_eq!(done.usage.cached_prompt_tokens, common);
    assert!(common > 0 && common < done.usage.prompt_tokens);
    assert_eq!(done.token_ids, alone(&path, sky).token_ids);
}

/// One running slot and one prompt cache slot keep two conversations; a third takes the least
/// recently used one's cache (LRU eviction): the other's next turn still reuses its cache,
/// the evicted one's does not.
#[test]
fn a_third_conversation_evicts_the_least_recently_used() {
    let dir = TempDir::new();
    let path = write(&dir, &TestModel::tiny(TestArch::Llama, TestDType::Q8_0));
    let model = load_keeping(&path, 1, 1);
    let turns: Vec<Vec<ChatMessage>> = [
        "Tell me about the sea.",
        "Why is grass green?",
        "Name a bird.",
    ]
    .iter()
    .map(|q| vec![ChatMessage::new("user", *q)])
    .collect();
    let answers: Vec<Completion> = turns
        .iter()
        .map(|t| model.generate_blocking(chat(t.clone(), 6), |_| {}).unwrap())
        .collect();
    let next = |i: usize| {
        let request = chat(follow_up(&turns[i], &answers[i].text, "Go on."), 4);
        let done = model.generate_blocking(request, |_| {}).unwrap();
        (
            done.usage.cached_prompt_tokens,
            model.prompt_tokens(&turns[i]).unwrap().len(),
        )
    };
    // The second conversation was used after the first: kept.
    let (cached, first_prompt) = next(1);
    assert!(cached >= first_prompt, "{cached} < {first_prompt}");
    // The first was the least recently used when the third came: evicted.
    let (cached, first_prompt) = next(0);
    assert!(cached < first_prompt, "{cached} cached after eviction");
}
