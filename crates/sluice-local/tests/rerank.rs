//! Cross-encoder scores against sentence-transformers' `CrossEncoder.predict`, on the
//! random-initialised fixtures of `fixtures/cross-encoder/` (made, with the reference scores in
//! `reference.json`, by `scripts/make-cross-encoder-fixture.py`): `sigmoid/` (the default
//! activation for one label) and `identity/` (raw logits). No Python at test time.

use std::path::PathBuf;
use std::time::Duration;

use sluice_local::{
    is_embedding_model, is_reranker_model, Activation, BatchOptions, CrossEncoder, EmbedModel,
    ErrorKind, RerankInputError, Reranker, MAX_RERANK_DOCUMENTS,
};

/// Largest difference allowed from sentence-transformers' score.
const TOLERANCE: f32 = 1e-4;

#[derive(serde::Deserialize)]
struct Fixture {
    models: std::collections::BTreeMap<String, Reference>,
}

#[derive(serde::Deserialize)]
struct Reference {
    activation: String,
    max_seq_length: usize,
    requests: Vec<Request>,
}

#[derive(serde::Deserialize)]
struct Request {
    query: String,
    documents: Vec<String>,
    scores: Vec<f32>,
    tokens: Vec<usize>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cross-encoder")
}

fn fixture() -> Fixture {
    let path = fixtures().join("reference.json");
    serde_json::from_slice(&std::fs::read(path).expect("reference.json")).expect("json")
}

fn load(name: &str) -> CrossEncoder {
    CrossEncoder::load(&fixtures().join(name)).expect("load the fixture")
}

fn options(max_batch: usize) -> BatchOptions {
    BatchOptions {
        max_batch,
        max_wait: Duration::from_millis(20),
        queue: 64,
    }
}

/// Every request of the reference, scored by `model` alone, matches to [`TOLERANCE`], with the
/// same token count per pair.
fn check_model(name: &str, want_activation: Activation) {
    let model = load(name);
    let fixture = fixture();
    let reference = &fixture.models[name];
    assert_eq!(model.activation(), want_activation);
    assert_eq!(model.activation().as_str(), reference.activation);
    assert_eq!(model.max_seq_length(), reference.max_seq_length);
    let mut worst = 0f32;
    for request in &reference.requests {
        let documents: Vec<&str> = request.documents.iter().map(String::as_str).collect();
        let scores = model.score(&request.query, &documents).expect("score");
        for (i, document) in documents.iter().enumerate() {
            let tokens = model.tokenize(&request.query, document).expect("tokens");
            assert_eq!(
                tokens.ids.len(),
                request.tokens[i],
                "tokens of {document:?}"
            );
            let difference = (scores[i] - request.scores[i]).abs();
            assert!(
                difference <= TOLERANCE,
                "{name}: {} against {} for ({:?}, {document:?})",
                scores[i],
                request.scores[i],
                request.query
            );
            worst = worst.max(difference);
        }
    }
    eprintln!("{name}: largest difference from sentence-transformers {worst:e}");
}

#[test]
fn sigmoid_scores_match_sentence_transformers() {
    check_model("sigmoid", Activation::Sigmoid);
}

#[test]
fn identity_scores_match_sentence_transformers() {
    check_model("identity", Activation::Identity);
}

#[test]
fn pairs_are_two_segments_cut_longest_first() {
    let model = load("sigmoid");
    let max = model.max_seq_length();
    // Words of the fixture's reduced vocabulary, one token each.
    let short = model.tokenize("the river", "of the sea").expect("short");
    // [CLS] the river [SEP] | of the sea [SEP]
    assert_eq!(short.ids.len(), 8);
    assert_eq!(short.second, 4);
    let long = "the ".repeat(500);
    let cut = model.tokenize("the river", &long).expect("long document");
    assert_eq!(cut.ids.len(), max);
    assert_eq!(cut.second, 4, "the short query is kept whole");
    let cut = model.tokenize(&long, "of the sea").expect("long query");
    assert_eq!(cut.ids.len(), max);
    assert_eq!(cut.second, max - 4, "the short document is kept whole");
    let both = model.tokenize(&long, &long).expect("both long");
    assert_eq!(both.ids.len(), max);
    // Three special tokens; of an odd rest the second text keeps one more.
    assert_eq!(both.second, 1 + (max - 3) / 2 + 1);
    // Two long texts of different lengths: the shorter keeps the smaller half, whichever
    // side it is on.
    let longer = "the ".repeat(700);
    let shorter_query = model.tokenize(&long, &longer).expect("shorter query");
    assert_eq!(shorter_query.second, 1 + (max - 3) / 2 + 1);
    let shorter_document = model.tokenize(&longer, &long).expect("shorter document");
    assert_eq!(shorter_document.second, 1 + (max - 3) - (max - 3) / 2 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_match_the_reference() {
    let reranker = Reranker::new(load("sigmoid"), options(16)).expect("reranker");
    let fixture = fixture();
    let requests = &fixture.models["sigmoid"].requests;
    // All queued before any is awaited: the thread finds them waiting and batches their pairs
    // (16 at a time, so the 45-document request spans batches).
    let submitted = std::time::Instant::now();
    let pending: Vec<_> = requests
        .iter()
        .map(|r| {
            reranker
                .submit(r.query.clone(), r.documents.clone())
                .expect("queued")
        })
        .collect();
    for (request, pending) in requests.iter().zip(pending) {
        let answer = pending.await.expect("answer");
        assert_eq!(answer.scores.len(), request.documents.len());
        for (got, want) in answer.scores.iter().zip(&request.scores) {
            assert!((got - want).abs() <= TOLERANCE, "{got} against {want}");
        }
        assert_eq!(answer.prompt_tokens, request.tokens.iter().sum::<usize>());
        assert!(answer.queue_wait <= submitted.elapsed(), "{answer:?}");
    }
    let stats = reranker.stats();
    let pairs: usize = requests.iter().map(|r| r.documents.len()).sum();
    assert_eq!(stats.requests, requests.len() as u64);
    assert_eq!(stats.inputs, pairs as u64);
    assert!(
        stats.batches < requests.len() as u64 + 3,
        "pairs were not batched: {stats:?}"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_before_queueing() {
    let reranker = Reranker::new(load("identity"), options(8)).expect("reranker");
    let refusal = |query: &str, documents: Vec<String>| {
        let error = match reranker.submit(query.to_owned(), documents) {
            Ok(_) => panic!("accepted"),
            Err(error) => error,
        };
        assert!(error.is_invalid_request(), "{error}");
        match error.kind() {
            ErrorKind::InvalidRerank(why) => why.clone(),
            other => panic!("{other}"),
        }
    };
    assert_eq!(
        refusal("", vec!["a document".into()]),
        RerankInputError::EmptyQuery
    );
    assert_eq!(refusal("query", Vec::new()), RerankInputError::NoDocuments);
    assert_eq!(
        refusal("query", vec![String::new(); MAX_RERANK_DOCUMENTS + 1]),
        RerankInputError::TooManyDocuments {
            count: MAX_RERANK_DOCUMENTS + 1,
            max: MAX_RERANK_DOCUMENTS
        }
    );
    assert_eq!(reranker.stats().requests, 0);
    // Empty documents are fine: sentence-transformers scores them too.
    let answer = reranker
        .score("query".into(), vec![String::new(), " ".into()])
        .await
        .expect("scored");
    assert_eq!(answer.scores.len(), 2);
}

#[test]
fn a_cross_encoder_is_not_an_embedding_model() {
    let dir = fixtures().join("sigmoid");
    assert!(is_reranker_model(&dir));
    assert!(!is_embedding_model(&dir));
    let error = EmbedModel::load(&dir).expect_err("not an embedding model");
    assert!(
        matches!(error.kind(), ErrorKind::InvalidMetadata { key, .. } if key == "architectures"),
        "{error}"
    );
    assert!(!is_reranker_model(&fixtures()));
}

/// A copy of the `sigmoid` fixture with `edit` applied to its JSON files, in a fresh temporary
/// directory.
fn edited(tag: &str, edit: impl Fn(&str, &mut serde_json::Value)) -> PathBuf {
    let from = fixtures().join("sigmoid");
    let to = std::env::temp_dir().join(format!("sluice-rerank-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).expect("temp dir");
    for entry in std::fs::read_dir(&from).expect("fixture") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let target = to.join(name);
        if name.ends_with(".json") && name != "tokenizer.json" {
            let mut json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
            edit(name, &mut json);
            std::fs::write(&target, serde_json::to_vec(&json).expect("json")).expect("write");
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
    to
}

#[test]
fn unsupported_heads_are_refused_by_name() {
    let relu = edited("relu", |name, json| {
        if name == "config_sentence_transformers.json" {
            json["activation_fn"] = "torch.nn.modules.activation.ReLU".into();
        }
    });
    let error = CrossEncoder::load(&relu).expect_err("ReLU");
    assert!(
        matches!(error.kind(), ErrorKind::UnsupportedActivation(name) if name.ends_with("ReLU")),
        "{error}"
    );
    assert!(error.is_unsupported());

    let two = edited("labels", |name, json| {
        if name == "config.json" {
            json["id2label"] = serde_json::json!({"0": "no", "1": "yes"});
        }
    });
    let error = CrossEncoder::load(&two).expect_err("two labels");
    assert!(
        matches!(error.kind(), ErrorKind::UnsupportedLabels(2)),
        "{error}"
    );

    // Without `activation_fn` anywhere, one label means Sigmoid (sentence-transformers'
    // default); the legacy key of files saved before 4.0 is read too.
    let default = edited("default", |name, json| {
        if name == "config_sentence_transformers.json" {
            json["activation_fn"] = serde_json::Value::Null;
        }
    });
    assert_eq!(
        CrossEncoder::load(&default).expect("load").activation(),
        Activation::Sigmoid
    );
    let legacy = edited("legacy", |name, json| match name {
        "config_sentence_transformers.json" => json["activation_fn"] = serde_json::Value::Null,
        "config.json" => {
            json["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity".into()
        }
        _ => {}
    });
    assert_eq!(
        CrossEncoder::load(&legacy).expect("load").activation(),
        Activation::Identity
    );
    for dir in [relu, two, default, legacy] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_loads_a_discovered_reranker_and_counts_its_memory() {
    use sluice_local::discovery::scan_models_dir;
    use sluice_local::pool::{LocalLoader, ModelKind, Pool, PoolConfig};

    // A models directory holding the fixture as `my-reranker/`.
    let models = std::env::temp_dir().join(format!("sluice-rerank-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&models);
    std::fs::create_dir_all(&models).expect("models dir");
    let dir = models.join("my-reranker");
    std::fs::create_dir_all(&dir).expect("model dir");
    for entry in std::fs::read_dir(fixtures().join("sigmoid")).expect("fixture") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
    }
    let found = scan_models_dir(&models).expect("scan");
    let model = found.model("my-reranker").expect("discovered");
    assert_eq!(model.kind(), ModelKind::Rerank);
    assert!(model.is_supported(), "{:?}", model.architecture);
    let mut spec = model.to_spec();
    assert_eq!(spec.kind, ModelKind::Rerank);
    spec.batch = options(8);
    let estimate = sluice_local::estimate_rerank_memory(&dir, 8).expect("estimate");

    let pool = Pool::new(LocalLoader, PoolConfig::default(), [spec]);
    let lease = pool.acquire("my-reranker", None).await.expect("lease");
    assert_eq!(lease.kind(), ModelKind::Rerank);
    assert!(lease.as_embedder().is_none() && lease.as_chat().is_none());
    let reranker = lease.as_reranker().expect("a reranker");
    let measured = reranker.model().memory_with_batch(8);
    let status = pool.snapshot();
    let status = status.model("my-reranker").expect("status");
    assert_eq!(status.bytes_measured, Some(measured));
    assert_eq!(status.engine, Some("native"));
    // The estimate counts the file's tensors as `f32`, the measurement what is held (the
    // linear layers packed with their padding to the kernel's width); both add one batch's
    // scratch and the tokenizer.
    let off = (measured as f64 - estimate as f64).abs() / estimate as f64;
    assert!(off < 0.01, "estimate {estimate}, measured {measured}");

    let fixture = fixture();
    let request = &fixture.models["sigmoid"].requests[0];
    let answer = reranker
        .score(request.query.clone(), request.documents.clone())
        .await
        .expect("scores");
    for (got, want) in answer.scores.iter().zip(&request.scores) {
        assert!((got - want).abs() <= TOLERANCE, "{got} against {want}");
    }
    drop(lease);
    let _ = std::fs::remove_dir_all(models);
}
