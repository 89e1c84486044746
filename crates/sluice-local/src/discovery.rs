//! Finding local models: GGUF files in a models directory, and Ollama's manifest store.
//!
//! Both scans only read directory entries, manifests and the first bytes of each file (the
//! `GGUF` magic and, when it comes early in the header, `general.architecture`); nothing is
//! hashed or loaded. A file or manifest that cannot be used is listed in
//! [`Discovery::skipped`] with the reason instead of failing the scan; only an unreadable
//! root directory given explicitly is an error.
//!
//! # Ollama's store
//!
//! (`ollama/ollama`: `envconfig/config.go`, `manifest/paths.go`, `types/model/name.go`.) The root
//! is `$OLLAMA_MODELS`, else `~/.ollama/models`; Linux service installs keep theirs in
//! `/usr/share/ollama/.ollama/models`, which is probed as well. Manifests live exactly four
//! levels down, `manifests/<host>/<namespace>/<model>/<tag>`, as Docker-style JSON whose
//! `layers[]` carry `mediaType`, `digest` (`sha256:<hex>`) and `size`. The GGUF is the
//! `application/vnd.ollama.image.model` layer, stored content-addressed at
//! `blobs/sha256-<hex>` — so the digest is the file's expected SHA-256, which
//! [`DiscoveredModel::to_spec`] hands to the pool to verify. The optional
//! `application/vnd.ollama.image.params` layer is a JSON object of options; its `stop` list and
//! `num_ctx` are kept. The `template` layer is a Go template, not Jinja, and is ignored (the
//! runtime uses the GGUF's own `tokenizer.chat_template`).
//!
//! Names follow Ollama's shortest display form: `llama3.2:1b` for
//! `registry.ollama.ai/library/llama3.2/1b`, `user/model:tag` for other namespaces of the default
//! registry, `hf.co/user/model:tag` for other hosts. [`normalize_ollama_name`] maps what a user
//! types (`llama3.2`, `library/llama3.2:latest`) to that form.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ErrorKind, Result};
use crate::gguf::raw::{read_string, read_u32, read_u64, scalar_size, skip};
use crate::pool::{ModelKind, ModelSpec};

/// Media type of the GGUF layer in an Ollama manifest.
pub const OLLAMA_MODEL_MEDIA_TYPE: &str = "application/vnd.ollama.image.model";

/// Media type of the options (`stop`, `num_ctx`, …) layer in an Ollama manifest.
pub const OLLAMA_PARAMS_MEDIA_TYPE: &str = "application/vnd.ollama.image.params";

/// Ollama's default registry host.
pub const OLLAMA_REGISTRY: &str = "registry.ollama.ai";

/// Ollama's default namespace.
pub const OLLAMA_LIBRARY: &str = "library";

/// The root of a Linux service install of Ollama.
pub const OLLAMA_SERVICE_ROOT: &str = "/usr/share/ollama/.ollama/models";

/// Largest params blob read (they are a few hundred bytes).
const MAX_PARAMS_BYTES: u64 = 1 << 20;

/// Header key-value pairs read while looking for `general.architecture`.
const MAX_HEADER_KEYS: u64 = 64;

/// Where a model was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A models directory.
    Directory,
    /// Ollama's store; the manifest it came from.
    Ollama {
        /// The manifest file.
        manifest: PathBuf,
    },
}

/// A usable model: a GGUF chat model file, or an embedding model or cross-encoder (reranker)
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredModel {
    /// The name to serve it as.
    pub name: String,
    /// The GGUF file, or the embedding model's directory.
    pub path: PathBuf,
    /// File size in bytes (of `model.safetensors` for an embedding model).
    pub size: u64,
    /// Expected SHA-256 (lowercase hex), when the source records one (Ollama's digest).
    pub sha256: Option<String>,
    /// `general.architecture`, when it is among the first header keys.
    pub architecture: Option<String>,
    /// Stop strings from Ollama's params layer.
    pub stop: Vec<String>,
    /// `num_ctx` from Ollama's params layer.
    pub context_length: Option<usize>,
    /// Where it was found.
    pub source: Source,
}

// === impl DiscoveredModel ===

impl DiscoveredModel {
    /// Whether the runtime supports the architecture (a chat [`crate::Architecture`]; `bert`
    /// embedding and reranker directories); `false` when unknown.
    pub fn is_supported(&self) -> bool {
        match self.architecture.as_deref() {
            Some("bert") => true,
            Some(name) => crate::Architecture::parse(name).is_ok(),
            None => false,
        }
    }

    /// What it is: a chat model (a file), an embedding model or a reranker (a directory whose
    /// `config.json` names a `...ForSequenceClassification`), as [`ModelSpec::kind`] decides.
    pub fn kind(&self) -> ModelKind {
        ModelKind::of_path(&self.path)
    }

    /// A pool spec for it: name, path, checksum and context length; the rest default.
    pub fn to_spec(&self) -> ModelSpec {
        let mut spec = ModelSpec::new(self.name.clone(), self.path.clone());
        spec.sha256.clone_from(&self.sha256);
        spec.load.context_length = self.context_length;
        spec
    }
}

/// A file or manifest that was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file or manifest.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Usable models, sorted by path; names are unique (the first wins).
    pub models: Vec<DiscoveredModel>,
    /// What was passed over, with reasons.
    pub skipped: Vec<Skipped>,
}

// === impl Discovery ===

impl Discovery {
    /// The model of that name.
    pub fn model(&self, name: &str) -> Option<&DiscoveredModel> {
        self.models.iter().find(|m| m.name == name)
    }

    fn skip(&mut self, path: &Path, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::debug!(path = %path.display(), %reason, "skipping local model");
        self.skipped.push(Skipped {
            path: path.to_path_buf(),
            reason,
        });
    }

    /// Adds a model unless its name is taken.
    fn add(&mut self, seen: &mut HashSet<String>, model: DiscoveredModel) {
        if seen.insert(model.name.clone()) {
            self.models.push(model);
        } else {
            let reason = format!("duplicate model name `{}`", model.name);
            self.skip(&model.path, reason);
        }
    }
}

// === Models directory ===

/// `*.gguf` files in `dir` and in its immediate subdirectories, named by file stem. Files that
/// are unreadable, lack the `GGUF` magic, or are parts of a split model
/// (`-00001-of-00003.gguf`) are skipped; other files are ignored.
pub fn scan_models_dir(dir: &Path) -> Result<Discovery> {
    let mut discovery = Discovery::default();
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for entry in sorted_entries(dir)? {
        if crate::embed::is_embedding_model(&entry) || crate::rerank::is_reranker_model(&entry) {
            match probe_embedding_dir(&entry) {
                Ok(model) => discovery.add(&mut seen, model),
                Err(reason) => discovery.skip(&entry, reason),
            }
        } else if entry.is_dir() {
            match sorted_entries(&entry) {
                Ok(inner) => files.extend(inner.into_iter().filter(|p| !p.is_dir())),
                Err(error) => discovery.skip(&entry, error.to_string()),
            }
        } else {
            files.push(entry);
        }
    }
    for path in files {
        let is_gguf = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if !is_gguf {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            discovery.skip(&path, "file name is not UTF-8");
            continue;
        };
        if is_split_part(name) {
            discovery.skip(
                &path,
                "split GGUF files are not supported; merge them first",
            );
            continue;
        }
        match probe_gguf(&path) {
            Ok((size, architecture)) => {
                let model = DiscoveredModel {
                    name: name.to_owned(),
                    path: path.clone(),
                    size,
                    sha256: None,
                    architecture,
                    stop: Vec::new(),
                    context_length: None,
                    source: Source::Directory,
                };
                discovery.add(&mut seen, model);
            }
            Err(reason) => discovery.skip(&path, reason),
        }
    }
    Ok(discovery)
}

/// An embedding model or cross-encoder directory ([`crate::embed::is_embedding_model`],
/// [`crate::rerank::is_reranker_model`]), named after the directory; its architecture is
/// `config.json`'s `model_type`.
fn probe_embedding_dir(dir: &Path) -> std::result::Result<DiscoveredModel, String> {
    let name = dir
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or("directory name is not UTF-8")?;
    let config = std::fs::read(dir.join("config.json")).map_err(|e| e.to_string())?;
    let config: serde_json::Value =
        serde_json::from_slice(&config).map_err(|e| format!("config.json: {e}"))?;
    let architecture = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let size = std::fs::metadata(dir.join("model.safetensors"))
        .map_err(|e| e.to_string())?
        .len();
    Ok(DiscoveredModel {
        name: name.to_owned(),
        path: dir.to_path_buf(),
        size,
        sha256: None,
        architecture,
        stop: Vec::new(),
        context_length: None,
        source: Source::Directory,
    })
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| {
        crate::Error::from(ErrorKind::Io {
            path: dir.to_path_buf(),
            source,
        })
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        entries.push(entry.map_err(io)?.path());
    }
    entries.sort();
    Ok(entries)
}

/// `name-00001-of-00002` (llama.cpp's `gguf-split` naming).
fn is_split_part(stem: &str) -> bool {
    let bytes = stem.as_bytes();
    let n = bytes.len();
    n > 15
        && bytes[n - 15] == b'-'
        && bytes[n - 14..n - 9].iter().all(u8::is_ascii_digit)
        && &bytes[n - 9..n - 5] == b"-of-"
        && bytes[n - 5..].iter().all(u8::is_ascii_digit)
}

/// The file size and, if found early in the header, `general.architecture`; `Err` is the reason
/// to skip it.
fn probe_gguf(path: &Path) -> std::result::Result<(u64, Option<String>), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| "too short for a GGUF file".to_owned())?;
    if &magic != b"GGUF" {
        return Err("not a GGUF file (no `GGUF` magic)".to_owned());
    }
    Ok((size, read_architecture(&mut reader).ok().flatten()))
}

/// Walks the first header key-value pairs (after the magic) for `general.architecture`.
fn read_architecture(reader: &mut (impl Read + Seek)) -> std::io::Result<Option<String>> {
    let version = read_u32(reader)?;
    if version < 2 {
        return Ok(None); // v1 used 32-bit counts; not worth supporting here
    }
    let _tensors = read_u64(reader)?;
    let keys = read_u64(reader)?;
    for _ in 0..keys.min(MAX_HEADER_KEYS) {
        let key = read_string(reader, 1 << 16)?;
        let kind = read_u32(reader)?;
        if key == "general.architecture" && kind == 8 {
            return Ok(Some(read_string(reader, 1 << 10)?));
        }
        match kind {
            8 => {
                let len = read_u64(reader)?;
                skip(reader, len)?;
            }
            9 => {
                let element = read_u32(reader)?;
                let count = read_u64(reader)?;
                match scalar_size(element) {
                    Some(size) => skip(reader, count.saturating_mul(size))?,
                    None => return Ok(None), // string arrays: stop looking
                }
            }
            scalar => match scalar_size(scalar) {
                Some(size) => skip(reader, size)?,
                None => return Ok(None),
            },
        }
    }
    Ok(None)
}

// === Ollama ===

/// Where to look for Ollama's store, in order: `$OLLAMA_MODELS` if set and non-empty, else
/// `$HOME/.ollama/models`; then [`OLLAMA_SERVICE_ROOT`].
pub fn ollama_roots() -> Vec<PathBuf> {
    ollama_roots_from(|key| std::env::var_os(key))
}

/// [`ollama_roots`] with the environment given as a function (for tests).
pub fn ollama_roots_from(env: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    match env("OLLAMA_MODELS").filter(|v| !v.is_empty()) {
        Some(root) => roots.push(PathBuf::from(root)),
        None => {
            if let Some(home) = env("HOME").filter(|v| !v.is_empty()) {
                roots.push(Path::new(&home).join(".ollama").join("models"));
            }
        }
    }
    let service = PathBuf::from(OLLAMA_SERVICE_ROOT);
    if !roots.contains(&service) {
        roots.push(service);
    }
    roots
}

/// Models in Ollama's store at `root`, or (`None`) in every existing [`ollama_roots`] (the
/// first root wins a name). An explicit `root` without a `manifests` directory is an error;
/// missing default roots are passed over silently.
pub fn ollama_models(root: Option<&Path>) -> Result<Discovery> {
    let mut discovery = Discovery::default();
    let mut seen = HashSet::new();
    match root {
        Some(root) => scan_ollama_root(root, &mut discovery, &mut seen)?,
        None => {
            for root in ollama_roots() {
                if root.join("manifests").is_dir() {
                    if let Err(error) = scan_ollama_root(&root, &mut discovery, &mut seen) {
                        discovery.skip(&root, error.to_string());
                    }
                }
            }
        }
    }
    Ok(discovery)
}

/// The display name of `<host>/<namespace>/<model>:<tag>` (see the module docs).
pub fn ollama_name(host: &str, namespace: &str, model: &str, tag: &str) -> String {
    if host == OLLAMA_REGISTRY && namespace == OLLAMA_LIBRARY {
        format!("{model}:{tag}")
    } else if host == OLLAMA_REGISTRY {
        format!("{namespace}/{model}:{tag}")
    } else {
        format!("{host}/{namespace}/{model}:{tag}")
    }
}

/// What a user types (`llama3.2`, `library/llama3.2`, `registry.ollama.ai/library/llama3.2:1b`,
/// `hf.co/user/model`) in the form [`ollama_models`] names models (`:latest` added when there
/// is no tag). `None` for an empty name or more than three path parts.
pub fn normalize_ollama_name(name: &str) -> Option<String> {
    let name = name.trim();
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[slash..].rfind(':') {
        Some(colon) => (&name[..slash + colon], &name[slash + colon + 1..]),
        None => (name, "latest"),
    };
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) || tag.is_empty() {
        return None;
    }
    Some(match parts.as_slice() {
        [model] => ollama_name(OLLAMA_REGISTRY, OLLAMA_LIBRARY, model, tag),
        [namespace, model] => ollama_name(OLLAMA_REGISTRY, namespace, model, tag),
        [host, namespace, model] => ollama_name(host, namespace, model, tag),
        _ => return None,
    })
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Params {
    #[serde(default)]
    stop: Option<StopList>,
    #[serde(default)]
    num_ctx: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StopList {
    One(String),
    Many(Vec<String>),
}

fn scan_ollama_root(
    root: &Path,
    discovery: &mut Discovery,
    seen: &mut HashSet<String>,
) -> Result<()> {
    let manifests = root.join("manifests");
    for host in sorted_entries(&manifests)? {
        for namespace in subdirectories(&host, discovery) {
            for model in subdirectories(&namespace, discovery) {
                let tags = match sorted_entries(&model) {
                    Ok(tags) => tags,
                    Err(error) => {
                        discovery.skip(&model, error.to_string());
                        continue;
                    }
                };
                for tag in tags.into_iter().filter(|t| t.is_file()) {
                    let parts = [&host, &namespace, &model, &tag]
                        .map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned));
                    let [Some(host), Some(namespace), Some(model_name), Some(tag_name)] = parts
                    else {
                        discovery.skip(&tag, "manifest path is not UTF-8");
                        continue;
                    };
                    let name = ollama_name(&host, &namespace, &model_name, &tag_name);
                    match read_ollama_manifest(root, &tag, name) {
                        Ok(model) => discovery.add(seen, model),
                        Err(reason) => discovery.skip(&tag, reason),
                    }
                }
            }
        }
    }
    Ok(())
}

fn subdirectories(dir: &Path, discovery: &mut Discovery) -> Vec<PathBuf> {
    if !dir.is_dir() {
        return Vec::new();
    }
    match sorted_entries(dir) {
        Ok(entries) => entries.into_iter().filter(|e| e.is_dir()).collect(),
        Err(error) => {
            discovery.skip(dir, error.to_string());
            Vec::new()
        }
    }
}

fn read_ollama_manifest(
    root: &Path,
    manifest: &Path,
    name: String,
) -> std::result::Result<DiscoveredModel, String> {
    let text = std::fs::read(manifest).map_err(|e| format!("cannot read manifest: {e}"))?;
    let parsed: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("invalid manifest JSON: {e}"))?;
    let layer = parsed
        .layers
        .iter()
        .find(|l| l.media_type == OLLAMA_MODEL_MEDIA_TYPE)
        .ok_or_else(|| format!("no GGUF layer (`{OLLAMA_MODEL_MEDIA_TYPE}`)"))?;
    let (path, sha256) = blob_path(root, &layer.digest)?;
    let (size, architecture) =
        probe_gguf(&path).map_err(|reason| format!("model blob `{}`: {reason}", path.display()))?;
    if let Some(expected) = layer.size.filter(|&s| s != size) {
        return Err(format!(
            "model blob `{}` is {size} bytes but the manifest says {expected}",
            path.display()
        ));
    }
    let params = parsed
        .layers
        .iter()
        .find(|l| l.media_type == OLLAMA_PARAMS_MEDIA_TYPE)
        .map(|l| read_params(root, &l.digest))
        .transpose()
        .unwrap_or_else(|reason| {
            tracing::warn!(manifest = %manifest.display(), %reason, "ignoring Ollama params layer");
            None
        })
        .unwrap_or_default();
    let stop = match params.stop {
        Some(StopList::One(stop)) => vec![stop],
        Some(StopList::Many(stops)) => stops,
        None => Vec::new(),
    };
    Ok(DiscoveredModel {
        name,
        path,
        size,
        sha256: Some(sha256),
        architecture,
        stop,
        context_length: params.num_ctx,
        source: Source::Ollama {
            manifest: manifest.to_path_buf(),
        },
    })
}

/// `blobs/sha256-<hex>` for a `sha256:<hex>` (or `sha256-<hex>`) digest, with the hex.
fn blob_path(root: &Path, digest: &str) -> std::result::Result<(PathBuf, String), String> {
    let hex = digest
        .strip_prefix("sha256:")
        .or_else(|| digest.strip_prefix("sha256-"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("invalid layer digest `{digest}`"))?
        .to_ascii_lowercase();
    Ok((root.join("blobs").join(format!("sha256-{hex}")), hex))
}

fn read_params(root: &Path, digest: &str) -> std::result::Result<Params, String> {
    let (path, _) = blob_path(root, digest)?;
    let file = File::open(&path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
    let mut text = Vec::new();
    file.take(MAX_PARAMS_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("invalid params JSON: {e}"))
}

#[cfg(test)]
mod tests;
