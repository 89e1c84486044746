//! Scans of generated models directories and fake Ollama stores.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::pool::sha256_file;
use crate::testing::{TestArch, TestDType, TestModel};

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-local-discovery-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn write_gguf(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    TestModel::tiny(TestArch::Llama, TestDType::Q8_0)
        .write(path)
        .unwrap();
}

fn reasons(discovery: &Discovery) -> Vec<(String, String)> {
    discovery
        .skipped
        .iter()
        .map(|s| {
            let file = s.path.file_name().unwrap().to_string_lossy().into_owned();
            (file, s.reason.clone())
        })
        .collect()
}

// === Models directory ===

#[test]
fn models_dir_finds_gguf_files_one_level_deep() {
    let dir = TempDir::new();
    write_gguf(&dir.path("alpha.gguf"));
    write_gguf(&dir.path("family/beta.GGUF"));
    write_gguf(&dir.path("family/deeper/gamma.gguf")); // two levels: not scanned
    write_gguf(&dir.path("family/alpha.gguf")); // duplicate name
    write_gguf(&dir.path("big-00001-of-00002.gguf"));
    write(&dir.path("fake.gguf"), b"not a model at all");
    write(&dir.path("empty.gguf"), b"");
    write(&dir.path("README.md"), b"# models");

    let found = scan_models_dir(&dir.0).unwrap();
    let names: Vec<&str> = found.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let alpha = found.model("alpha").unwrap();
    assert_eq!(alpha.path, dir.path("alpha.gguf"));
    assert_eq!(alpha.size, std::fs::metadata(&alpha.path).unwrap().len());
    assert_eq!(alpha.architecture.as_deref(), Some("llama"));
    assert!(alpha.is_supported());
    assert_eq!(alpha.sha256, None);
    assert_eq!(alpha.source, Source::Directory);
    assert_eq!(
        found.model("beta").unwrap().path,
        dir.path("family/beta.GGUF")
    );

    let mut skipped = reasons(&found);
    skipped.sort();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert_eq!(skipped[0].0, "alpha.gguf");
    assert!(skipped[0].1.contains("duplicate model name `alpha`"));
    assert_eq!(skipped[1].0, "big-00001-of-00002.gguf");
    assert!(skipped[1].1.contains("split GGUF"));
    assert_eq!(skipped[2].0, "empty.gguf");
    assert!(skipped[2].1.contains("too short"));
    assert_eq!(skipped[3].0, "fake.gguf");
    assert!(skipped[3].1.contains("no `GGUF` magic"));
}

/// Every chat architecture the runtime runs is discovered as supported; others are not.
#[test]
fn discovery_supports_every_chat_architecture_it_runs() {
    let dir = TempDir::new();
    let all = [
        TestArch::Llama,
        TestArch::Qwen2,
        TestArch::Phi3,
        TestArch::Gemma2,
        TestArch::Gemma3,
    ];
    for arch in all {
        TestModel::tiny(arch, TestDType::Q8_0)
            .write(&dir.path(&format!("{}.gguf", arch.name())))
            .unwrap();
    }
    let found = scan_models_dir(&dir.0).unwrap();
    for arch in all {
        let model = found.model(arch.name()).unwrap();
        assert_eq!(model.architecture.as_deref(), Some(arch.name()));
        assert!(model.is_supported(), "{arch:?}");
    }
    let mut other = found.model("llama").unwrap().clone();
    other.architecture = Some("mamba".into());
    assert!(!other.is_supported());
}

#[test]
fn a_missing_models_dir_is_an_error() {
    let dir = TempDir::new();
    let error = scan_models_dir(&dir.path("nope")).unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Io { .. }), "{error}");
}

#[test]
fn split_part_names_are_recognised() {
    assert!(is_split_part("model-00001-of-00003"));
    assert!(!is_split_part("model-0001-of-0003"));
    assert!(!is_split_part("model"));
    assert!(!is_split_part("-00001-of-00003"));
}

// === Ollama ===

/// Stores `bytes` as a blob; returns its `sha256:<hex>` digest.
fn blob(root: &Path, bytes: &[u8]) -> String {
    let staging = root.join("staging");
    write(&staging, bytes);
    let hex = sha256_file(&staging).unwrap();
    std::fs::rename(&staging, root.join("blobs").join(format!("sha256-{hex}"))).unwrap();
    format!("sha256:{hex}")
}

fn manifest(root: &Path, relative: &str, layers: &[(&str, &str, u64)]) {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(media_type, digest, size)| {
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
        })
        .collect();
    let json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": format!("sha256:{}", "c".repeat(64)), "size": 10},
        "layers": layers,
    });
    write(
        &root.join("manifests").join(relative),
        serde_json::to_vec(&json).unwrap().as_slice(),
    );
}

#[test]
fn ollama_store_is_read_with_names_digests_and_params() {
    let store = TempDir::new();
    let root = &store.0;
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    let gguf_path = store.path("model.gguf");
    write_gguf(&gguf_path);
    let gguf = std::fs::read(&gguf_path).unwrap();
    let size = gguf.len() as u64;
    let model = blob(root, &gguf);
    let params = blob(
        root,
        br#"{"stop":["<|eot_id|>","<|end|>"],"num_ctx":2048,"temperature":0.6}"#,
    );
    let single_stop = blob(root, br#"{"stop":"END"}"#);
    let template = blob(root, b"{{ .Prompt }}");
    let text = blob(root, b"plain text, not a GGUF");
    let broken_params = blob(root, b"{not json");

    manifest(
        root,
        "registry.ollama.ai/library/llama3.2/1b",
        &[
            (OLLAMA_MODEL_MEDIA_TYPE, &model, size),
            ("application/vnd.ollama.image.template", &template, 13),
            (OLLAMA_PARAMS_MEDIA_TYPE, &params, 60),
        ],
    );
    manifest(
        root,
        "registry.ollama.ai/someone/tiny/latest",
        &[
            (OLLAMA_MODEL_MEDIA_TYPE, &model, size),
            (OLLAMA_PARAMS_MEDIA_TYPE, &single_stop, 14),
        ],
    );
    manifest(
        root,
        "hf.co/user/model-GGUF/Q4_K_M",
        &[
            (OLLAMA_MODEL_MEDIA_TYPE, &model, size),
            (OLLAMA_PARAMS_MEDIA_TYPE, &broken_params, 9),
        ],
    );
    // Broken ones.
    write(
        &root.join("manifests/registry.ollama.ai/library/junk/latest"),
        b"{ nope",
    );
    manifest(
        root,
        "registry.ollama.ai/library/safetensors/latest",
        &[("application/vnd.ollama.image.tensor", &model, size)],
    );
    let missing = format!("sha256:{}", "a".repeat(64));
    manifest(
        root,
        "registry.ollama.ai/library/missing/latest",
        &[(OLLAMA_MODEL_MEDIA_TYPE, &missing, 10)],
    );
    manifest(
        root,
        "registry.ollama.ai/library/textblob/latest",
        &[(OLLAMA_MODEL_MEDIA_TYPE, &text, 22)],
    );
    manifest(
        root,
        "registry.ollama.ai/library/badsize/latest",
        &[(OLLAMA_MODEL_MEDIA_TYPE, &model, size + 1)],
    );
    manifest(
        root,
        "registry.ollama.ai/library/baddigest/latest",
        &[(OLLAMA_MODEL_MEDIA_TYPE, "md5:1234", size)],
    );
    // Wrong depth: ignored.
    write(&root.join("manifests/registry.ollama.ai/stray"), b"{}");

    let found = ollama_models(Some(root)).unwrap();
    let mut names: Vec<&str> = found.models.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "hf.co/user/model-GGUF:Q4_K_M",
            "llama3.2:1b",
            "someone/tiny:latest"
        ]
    );

    let hex = model.strip_prefix("sha256:").unwrap();
    let llama = found.model("llama3.2:1b").unwrap();
    assert_eq!(llama.path, root.join("blobs").join(format!("sha256-{hex}")));
    assert_eq!(llama.sha256.as_deref(), Some(hex));
    assert_eq!(llama.size, size);
    assert_eq!(llama.architecture.as_deref(), Some("llama"));
    assert_eq!(llama.stop, ["<|eot_id|>", "<|end|>"]);
    assert_eq!(llama.context_length, Some(2048));
    assert_eq!(
        llama.source,
        Source::Ollama {
            manifest: root.join("manifests/registry.ollama.ai/library/llama3.2/1b")
        }
    );
    let spec = llama.to_spec();
    assert_eq!(spec.name, "llama3.2:1b");
    assert_eq!(spec.sha256.as_deref(), Some(hex));
    assert_eq!(spec.load.context_length, Some(2048));
    crate::pool::verify_sha256(&spec.name, &spec.path, hex).unwrap();

    assert_eq!(found.model("someone/tiny:latest").unwrap().stop, ["END"]);
    let hf = found.model("hf.co/user/model-GGUF:Q4_K_M").unwrap();
    assert!(hf.stop.is_empty(), "broken params are ignored");
    assert_eq!(hf.context_length, None);

    let skipped = reasons(&found);
    let reason = |name: &str| {
        found
            .skipped
            .iter()
            .find(|s| s.path.to_string_lossy().contains(&format!("/{name}/")))
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("`{name}` not skipped: {skipped:?}"))
    };
    assert!(reason("junk").contains("invalid manifest JSON"));
    assert!(reason("safetensors").contains("no GGUF layer"));
    assert!(reason("missing").contains("cannot open"));
    assert!(reason("textblob").contains("no `GGUF` magic"));
    assert!(reason("badsize").contains("but the manifest says"));
    assert!(reason("baddigest").contains("invalid layer digest `md5:1234`"));
    assert_eq!(found.skipped.len(), 6, "{skipped:?}");
}

#[test]
fn an_explicit_ollama_root_without_manifests_is_an_error() {
    let dir = TempDir::new();
    assert!(ollama_models(Some(&dir.0)).is_err());
}

#[test]
fn ollama_roots_follow_the_environment() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        }
    };
    assert_eq!(
        ollama_roots_from(env(&[
            ("OLLAMA_MODELS", "/data/ollama"),
            ("HOME", "/home/u")
        ])),
        [
            PathBuf::from("/data/ollama"),
            PathBuf::from(OLLAMA_SERVICE_ROOT)
        ]
    );
    assert_eq!(
        ollama_roots_from(env(&[("OLLAMA_MODELS", ""), ("HOME", "/home/u")])),
        [
            PathBuf::from("/home/u/.ollama/models"),
            PathBuf::from(OLLAMA_SERVICE_ROOT)
        ]
    );
    assert_eq!(
        ollama_roots_from(env(&[("OLLAMA_MODELS", OLLAMA_SERVICE_ROOT)])),
        [PathBuf::from(OLLAMA_SERVICE_ROOT)]
    );
}

#[test]
fn ollama_names_take_the_shortest_form() {
    assert_eq!(
        ollama_name(OLLAMA_REGISTRY, OLLAMA_LIBRARY, "llama3.2", "1b"),
        "llama3.2:1b"
    );
    assert_eq!(
        ollama_name(OLLAMA_REGISTRY, "user", "m", "latest"),
        "user/m:latest"
    );
    assert_eq!(
        ollama_name("hf.co", "user", "m", "Q4_K_M"),
        "hf.co/user/m:Q4_K_M"
    );

    let normalize = |s| normalize_ollama_name(s);
    assert_eq!(normalize("llama3.2").as_deref(), Some("llama3.2:latest"));
    assert_eq!(normalize("llama3.2:1b").as_deref(), Some("llama3.2:1b"));
    assert_eq!(
        normalize("library/llama3.2:1b").as_deref(),
        Some("llama3.2:1b")
    );
    assert_eq!(
        normalize("registry.ollama.ai/library/llama3.2").as_deref(),
        Some("llama3.2:latest")
    );
    assert_eq!(normalize("user/m").as_deref(), Some("user/m:latest"));
    assert_eq!(
        normalize("hf.co/user/m:Q8_0").as_deref(),
        Some("hf.co/user/m:Q8_0")
    );
    assert_eq!(
        normalize("localhost:5000/user/m").as_deref(),
        Some("localhost:5000/user/m:latest")
    );
    assert_eq!(normalize(""), None);
    assert_eq!(normalize("a/b/c/d"), None);
    assert_eq!(normalize("m:"), None);
}
