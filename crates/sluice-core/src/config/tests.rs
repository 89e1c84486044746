use super::*;
use crate::env::MapEnv;
use std::path::PathBuf;
use std::time::Duration;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, &MapEnv::from_pairs([("KEY", "sk-test")]))
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9999"
max_body_bytes = 1000

[storage]
data_dir = "/tmp/x"

[[providers]]
name = "openai"
type = "openai"
base_url = "https://api.openai.com/v1/"
api_key = "env::KEY"
headers = { "OpenAI-Organization" = "org-1" }

[[providers]]
name = "groq"
type = "openai"
preset = "groq"
api_key = "literal"

[[models]]
name = "gpt-4o-mini"
provider = "openai"
price = { input = 0.15, output = 0.60, cached_input = 0.075 }
tier = "small"

[[models]]
name = "llama"
provider = "groq"
upstream = "llama-3.1-8b-instant"
"#;

#[test]
fn loads_a_full_config() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.server.listen.port(), 9999);
    assert_eq!(c.server.max_body_bytes, 1000);
    assert_eq!(c.providers[0].base_url, "https://api.openai.com/v1");
    assert_eq!(c.providers[0].api_key.as_ref().unwrap().expose(), "sk-test");
    assert_eq!(c.providers[0].headers[0].0, "openai-organization");
    assert_eq!(c.providers[1].base_url, "https://api.groq.com/openai/v1");
    assert_eq!(c.models[0].upstream, "gpt-4o-mini");
    assert_eq!(c.models[1].upstream, "llama-3.1-8b-instant");
    assert_eq!(c.models[1].provider, 1);
    assert_eq!(c.models[0].tier, Some(Tier::Small));
    // Secrets never show in Debug output.
    assert!(!format!("{c:?}").contains("sk-test"));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("[server]\nlisten = 5", "server.listen"),
        ("[server]\nlisten = \"nowhere\"", "server.listen"),
        ("[server]\nlisten_addr = \"x\"", "server.listen_addr"),
        ("[server]\nmax_body_bytes = 0", "server.max_body_bytes"),
        ("[storage]\ndir = \"x\"", "storage.dir"),
        ("[[providers]]\nname = \"a\"\ntype = \"nope\"", "providers[0].type"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"ftp://x\"", "providers[0].base_url"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\napi_key = \"env::MISSING\"", "providers[0].api_key"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\npreset = \"nope\"", "providers[0].preset"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\n[[providers]]\nname = \"a\"\ntype = \"openai\"", "providers[1].name"),
        ("[[models]]\nname = \"m\"\nprovider = \"ghost\"", "models[0].provider"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\n[[models]]\nname = \"m\"\nprovider = \"a\"\nprice = { input = -1.0, output = 1.0 }", "models[0].price"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\nsurprise = 1", "providers[0].surprise"),
        ("not toml [", ""),
    ];
    for (text, path) in cases {
        let err = load(text).unwrap_err();
        assert_eq!(err.path, path, "{text}: {err}");
        assert!(!err.message.is_empty());
    }
    let err = load("[server]\nlisten_addr = \"x\"").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `listen_addr`"),
        "{err}"
    );
}

#[test]
fn env_overrides() {
    let env = MapEnv::from_pairs([
        ("SLUICE__SERVER__LISTEN", "0.0.0.0:7000"),
        ("SLUICE__SERVER__MAX_BODY_BYTES", "42"),
        ("SLUICE__STORAGE__DATA_DIR", "/var/lib/sluice"),
    ]);
    let c = Config::from_toml("", &env).unwrap();
    assert_eq!(c.server.listen.port(), 7000);
    assert_eq!(c.server.max_body_bytes, 42);
    assert_eq!(c.storage.data_dir, PathBuf::from("/var/lib/sluice"));
    let bad = MapEnv::from_pairs([("SLUICE__SERVER__NOPE", "1")]);
    assert_eq!(Config::from_toml("", &bad).unwrap_err().path, "server.nope");
}

#[test]
fn from_env_builds_passthrough_providers() {
    let env = MapEnv::from_pairs([("OPENAI_API_KEY", "sk-1"), ("GROQ_API_KEY", "gsk-2")]);
    let c = Config::from_env(&env, Some("http://127.0.0.1:11434/v1".into())).unwrap();
    let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["openai", "groq", "ollama", "local"]);
    assert!(c.providers[..3].iter().all(|p| p.passthrough));
    assert_eq!(c.providers[3].kind, ProviderType::Local);
    // A running Ollama serves its own store's models.
    assert!(!c.local.ollama);
    assert_eq!(c.providers[1].api_key.as_ref().unwrap().expose(), "gsk-2");
    let bare = Config::from_env(&MapEnv::default(), None).unwrap();
    let names: Vec<_> = bare.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["local"]);
    assert!(bare.local.ollama);
}

#[test]
fn defaults() {
    let c = Config::test_default();
    assert_eq!(c.server.max_body_bytes, 10 << 20);
    assert_eq!(c.storage.data_dir, PathBuf::from(".sluice"));
    let p = load("[[providers]]\nname = \"m\"\ntype = \"openai\"\npreset = \"mistral\"").unwrap();
    assert!(!p.providers[0].stream_usage);
    assert_eq!(p.providers[0].timeout, Duration::from_secs(600));
}

const ROUTED: &str = r#"
[[providers]]
name = "p"
type = "openai"

[[models]]
name = "a"
provider = "p"
tier = "small"
[[models]]
name = "b"
provider = "p"
tier = "large"
quality = 9.0
[[models]]
name = "c"
provider = "p"

[routing]
retry = { attempts = 3, backoff_ms = 50 }
breaker = { consecutive_failures = 2, cooldown_ms = 1000 }
tiers = { small_below = 100, keywords = { "prove" = "large" } }

[[routes]]
name = "auto"
strategy = "tier"
targets = ["a", "b"]
timeout_ms = 5000
first_token_timeout_ms = 800
fallback_response = "Sorry, try again later."
canary = { target = "c", stages = [5, 50, 100], max_p95_ms = 1000 }

[[routes]]
name = "spread"
strategy = "weighted"
targets = ["a", "b"]
weights = [3, 1]
retry = { attempts = 1 }
"#;

#[test]
fn loads_routes_and_routing_defaults() {
    let c = load(ROUTED).unwrap();
    assert_eq!(c.routing.retry.attempts, 3);
    assert_eq!(c.routing.retry.backoff, Duration::from_millis(50));
    assert_eq!(c.routing.breaker.consecutive_failures, 2);
    assert_eq!(c.routing.tiers.small_below, 100);
    assert_eq!(
        c.routing.tiers.keywords,
        vec![("prove".to_string(), Tier::Large)]
    );
    let auto = &c.routes[0];
    assert_eq!(auto.strategy, crate::routing::Strategy::Tier);
    assert_eq!(auto.targets, [0, 1]);
    assert_eq!(auto.retry.attempts, 3, "inherits [routing]");
    assert_eq!(auto.timeout, Some(Duration::from_millis(5000)));
    let canary = auto.canary.as_ref().unwrap();
    assert_eq!(canary.target, 2);
    assert_eq!(canary.stages, [5.0, 50.0, 100.0]);
    assert_eq!(canary.max_error_rate, 0.02);
    let spread = &c.routes[1];
    assert_eq!(spread.weights, [3.0, 1.0]);
    assert_eq!(spread.retry.attempts, 1);
    assert_eq!(spread.retry.backoff, Duration::from_millis(50));
    assert_eq!(c.models[1].quality, 9.0);
    // Defaults without any [routing].
    let plain = load("[[providers]]\nname = \"p\"\ntype = \"openai\"\n[[models]]\nname = \"a\"\nprovider = \"p\"\n[[routes]]\nname = \"r\"\ntargets = [\"a\"]").unwrap();
    assert_eq!(plain.routes[0].strategy, crate::routing::Strategy::Fallback);
    assert_eq!(plain.routes[0].retry, crate::retry::RetryPolicy::default());
}

#[test]
fn route_errors_name_the_key() {
    let base = "[[providers]]\nname = \"p\"\ntype = \"openai\"\n[[models]]\nname = \"a\"\nprovider = \"p\"\n";
    let cases = [
        ("[[routes]]\nname = \"a\"\ntargets = [\"a\"]", "routes[0].name"),
        ("[[routes]]\nname = \"r\"\ntargets = []", "routes[0].targets"),
        ("[[routes]]\nname = \"r\"\ntargets = [\"ghost\"]", "routes[0].targets[0]"),
        ("[[routes]]\nname = \"r\"\ntargets = [\"a\", \"a\"]", "routes[0].targets[1]"),
        ("[[routes]]\nname = \"r\"\ntargets = [\"a\"]\nweights = [1, 2]", "routes[0].weights"),
        ("[[routes]]\nname = \"r\"\ntargets = [\"a\"]\nstrategy = \"random\"", "routes[0].strategy"),
        ("[[routes]]\nname = \"r\"\ntargets = [\"a\"]\nretry = { attempts = 0 }", "routes[0].retry.attempts"),
        ("[[routes]]\nname = \"r\"\ntargets = [\"a\"]\ncanary = { target = \"zz\" }", "routes[0].canary.target"),
        ("[[routes]]\nname = \"r\"\ntargets = [\"a\"]\ncanary = { target = \"a\", stages = [150] }", "routes[0].canary.stages"),
        ("[[routes]]\nname = \"r\"\ntargets = [\"a\"]\n[[routes]]\nname = \"r\"\ntargets = [\"a\"]", "routes[1].name"),
        ("[routing]\nbreaker = { error_rate = 1.5 }", "routing.breaker.error_rate"),
        ("[routing]\ntiers = { small_below = 5000 }", "routing.tiers.small_below"),
    ];
    for (extra, path) in cases {
        let err = load(&format!("{base}{extra}")).unwrap_err();
        assert_eq!(err.path, path, "{extra}: {err}");
    }
}

#[test]
fn local_engine_is_one_of_three() {
    assert_eq!(load("").unwrap().local.engine, "auto");
    assert_eq!(
        load("[local]\nengine = \"candle\"").unwrap().local.engine,
        "candle"
    );
    assert_eq!(
        load("[local]\nengine = \"native\"").unwrap().local.engine,
        "native"
    );
    let err = load("[local]\nengine = \"gpu\"").unwrap_err();
    assert_eq!(err.path, "local.engine");
    assert!(err.to_string().contains("`gpu`"), "{err}");
}

#[test]
fn local_context_length_defaults_to_8192_and_models_may_set_their_own() {
    assert_eq!(load("").unwrap().local.context_length, 8192);
    let local = "[[providers]]\nname = \"l\"\ntype = \"local\"\n[[models]]\nname = \"m\"\nprovider = \"l\"\npath = \"m.gguf\"\n";
    let c = load(&format!("[local]\ncontext_length = 2048\n{local}")).unwrap();
    assert_eq!(c.local.context_length, 2048);
    assert_eq!(c.models[0].local.as_ref().unwrap().context_length, None);
    let c = load(&format!("{local}context_length = 32768\n")).unwrap();
    assert_eq!(c.local.context_length, 8192);
    assert_eq!(
        c.models[0].local.as_ref().unwrap().context_length,
        Some(32768)
    );
    let err = load("[local]\ncontext_length = 0").unwrap_err();
    assert_eq!(err.path, "local.context_length");
    let err = load(&format!("{local}context_length = 0\n")).unwrap_err();
    assert_eq!(err.path, "models[0].context_length", "{err}");
}

#[test]
fn embed_precision_is_f32_unless_a_local_model_says_int8() {
    let local = "[[providers]]\nname = \"l\"\ntype = \"local\"\n[[models]]\nname = \"m\"\nprovider = \"l\"\npath = \"minilm\"\n";
    let precision = |extra: &str| {
        load(&format!("{local}{extra}"))
            .map(|c| c.models[0].local.as_ref().unwrap().embed_precision)
    };
    assert_eq!(precision("").unwrap(), EmbedPrecision::F32);
    assert_eq!(
        precision("embed_precision = \"f32\"").unwrap(),
        EmbedPrecision::F32
    );
    assert_eq!(
        precision("embed_precision = \"int8\"").unwrap(),
        EmbedPrecision::Int8
    );
    let err = precision("embed_precision = \"fp16\"").unwrap_err();
    assert!(err.to_string().contains("fp16"), "{err}");
    let remote = "[[providers]]\nname = \"o\"\ntype = \"openai\"\n[[models]]\nname = \"m\"\nprovider = \"o\"\nembed_precision = \"int8\"\n";
    let err = load(remote).unwrap_err();
    assert_eq!(err.path, "models[0].embed_precision", "{err}");
}

#[test]
fn local_kv_cache_is_f32_f16_or_q8_0() {
    assert_eq!(load("").unwrap().local.kv_cache, "f32");
    for kv in ["f16", "q8_0"] {
        let toml = format!("[local]\nkv_cache = \"{kv}\"");
        assert_eq!(load(&toml).unwrap().local.kv_cache, kv);
    }
    let err = load("[local]\nkv_cache = \"q4\"").unwrap_err();
    assert_eq!(err.path, "local.kv_cache");
    assert!(err.to_string().contains("`q4`"), "{err}");
}

#[test]
fn local_weights_are_mapped_unless_mmap_is_off() {
    assert!(load("").unwrap().local.mmap);
    assert!(!load("[local]\nmmap = false").unwrap().local.mmap);
    let err = load("[local]\nmmap = \"no\"").unwrap_err();
    assert!(err.to_string().contains("mmap"), "{err}");
}

#[test]
fn local_prompt_cache_slots_default_to_one() {
    assert_eq!(load("").unwrap().local.prompt_cache_slots, 1);
    let off = load("[local]\nprompt_cache_slots = 0").unwrap();
    assert_eq!(off.local.prompt_cache_slots, 0);
    let err = load("[local]\nprompt_cache_slots = -1").unwrap_err();
    assert!(err.to_string().contains("prompt_cache_slots"), "{err}");
}

#[test]
fn local_device_is_cpu_cuda_or_metal() {
    assert_eq!(load("").unwrap().local.device, "cpu");
    for device in ["cpu", "cuda", "cuda:1", "metal"] {
        let toml = format!("[local]\ndevice = \"{device}\"");
        assert_eq!(load(&toml).unwrap().local.device, device);
    }
    for bad in ["gpu", "cuda:", "cuda:one"] {
        let err = load(&format!("[local]\ndevice = \"{bad}\"")).unwrap_err();
        assert_eq!(err.path, "local.device");
        assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
    }
}

#[test]
fn error_messages_word_for_word() {
    // `sluice serve --check` prints these, and the docs quote them.
    let p = "[[providers]]\nname = \"p\"\ntype = \"openai\"\n[[providers]]\nname = \"l\"\ntype = \"local\"\n";
    let m = "[[models]]\nname = \"a\"\nprovider = \"p\"\n";
    let r = "[[routes]]\nname = \"r\"\ntargets = [\"a\"]\n";
    let cases = [
        ("[server]\nlisten = \"nowhere\"".to_string(), "`server.listen`: `nowhere` is not an address such as `127.0.0.1:8080` or `[::1]:8080`"),
        ("[server]\nmax_connections = 0".into(), "`server.max_connections`: must be greater than 0"),
        ("[server]\nwatch_config_ms = 50".into(), "`server.watch_config_ms`: must be 0 (off) or at least 100"),
        ("[server]\nmaster_key = \"env::MISSING\"".into(), "`server.master_key`: environment variable `MISSING` is not set"),
        ("[storage]\nredis_url = \"http://x\"".into(), "`storage.redis_url`: must start with redis:// (e.g. `redis://127.0.0.1:6379`)"),
        ("[storage]\ndatabase_url = \"mysql://x\"".into(), "`storage.database_url`: must start with postgres:// (e.g. `postgres://sluice@127.0.0.1/sluice`)"),
        ("[cache]\nstore_timeout_ms = 0".into(), "`cache.store_timeout_ms`: must be greater than 0"),
        ("[limits]\nlease_ms = 0".into(), "`limits.lease_ms`: must be greater than 0"),
        ("[spend]\nbatch_size = 0".into(), "`spend.batch_size`: must be greater than 0"),
        ("[local]\nmemory_budget = 0".into(), "`local.memory_budget`: must be greater than 0 (bytes)"),
        ("[local]\nembedding_queue = 0".into(), "`local.embedding_queue`: must be greater than 0"),
        ("[local]\ndevice = \"gpu\"".into(), "`local.device`: `gpu` is not one of `cpu`, `cuda`, `cuda:N`, `metal`"),
        (format!("{p}[[providers]]\nname = \"p\"\ntype = \"openai\""), "`providers[2].name`: a provider named `p` is already defined"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\npreset = \"nope\"".into(), "`providers[0].preset`: unknown preset `nope`; expected one of openai, anthropic, gemini, groq, deepseek, mistral, together, openrouter, fireworks, xai, jina, cohere, vllm, llamacpp, ollama, lmstudio"),
        ("[[providers]]\nname = \"a\"\ntype = \"anthropic\"\npreset = \"groq\"".into(), "`providers[0].preset`: presets are for `type = \"openai\"` providers"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\ncache_system_min_bytes = 1".into(), "`providers[0].cache_system_min_bytes`: only applies to `type = \"anthropic\"` providers"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\nkeep_alive = \"5m\"".into(), "`providers[0].keep_alive`: only applies to `type = \"ollama\"` providers"),
        ("[[providers]]\nname = \"a\"\ntype = \"local\"\npassthrough = true".into(), "`providers[0].passthrough`: does not apply to `type = \"local\"` providers: sluice runs their models itself"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"ftp://x\"".into(), "`providers[0].base_url`: `ftp://x` must start with http:// or https://"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"https://x?q\"".into(), "`providers[0].base_url`: `https://x?q` is not a valid API root URL"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\nheaders = { \"b c\" = \"1\" }".into(), "`providers[0].headers.b c`: is not a valid HTTP header name"),
        ("[[providers]]\nname = \"a\"\ntype = \"openai\"\nheaders = { \"X-A\" = \"a\\nb\" }".into(), "`providers[0].headers.X-A`: header values must not contain line breaks"),
        ("[[providers]]\nname = \"a\"\ntype = \"anthropic\"\ndefault_max_tokens = 0".into(), "`providers[0].default_max_tokens`: must be greater than 0"),
        (format!("{p}{m}{m}"), "`models[1].name`: a model named `a` is already defined"),
        (format!("{p}{m}price = {{ input = 1.0, output = 1.0, cache_write = -1.0 }}"), "`models[0].price`: prices must be non-negative numbers (USD per million tokens)"),
        (format!("{p}{m}limits = {{ rpm = 0 }}"), "`models[0].limits.rpm`: must be greater than 0 (leave it out for no limit)"),
        (format!("{p}{m}preload = true"), "`models[0].preload`: only applies to models of a `type = \"local\"` provider"),
        (format!("{p}[[models]]\nname = \"a\"\nprovider = \"l\""), "`models[0].path`: a `local` model needs a path: its GGUF file, or its embedding model's directory"),
        (format!("{p}{m}[routing]\nbreaker = {{ consecutive_failures = 0 }}"), "`routing.breaker.consecutive_failures`: must be at least 1"),
        (format!("{p}{m}[[routes]]\nname = \"a\"\ntargets = [\"a\"]"), "`routes[0].name`: `a` is already a model name"),
        (format!("{p}{m}{r}{r}"), "`routes[1].name`: a route named `r` is already defined"),
        (format!("{p}{m}[[routes]]\nname = \"r\"\ntargets = [\"a\", \"a\"]"), "`routes[0].targets[1]`: `a` is listed twice"),
        (format!("{p}{m}{r}weights = [1, 2]"), "`routes[0].weights`: has 2 entries for 1 targets"),
        (format!("{p}{m}{r}canary = {{ target = \"a\", max_error_rate = 2.0 }}"), "`routes[0].canary.max_error_rate`: must be in [0, 1]"),
        (format!("{p}{m}{r}canary = {{ target = \"a\", window_ms = 0 }}"), "`routes[0].canary.window_ms`: must be greater than 0"),
        (format!("{p}{m}{r}first_token_timeout_ms = 0"), "`routes[0].first_token_timeout_ms`: must be greater than 0"),
    ];
    for (text, want) in cases {
        assert_eq!(load(&text).unwrap_err().to_string(), want, "{text}");
    }
    let bad_override = MapEnv::from_pairs([("SLUICE__SERVER__LISTEN__X", "1")]);
    assert_eq!(
        Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"", &bad_override)
            .unwrap_err()
            .to_string(),
        "`listen`: `SLUICE__SERVER__LISTEN__X` overrides a key that is not a table"
    );
}

#[test]
fn cache_scope_is_per_key_unless_set_global() {
    let c = load("").unwrap();
    assert_eq!(c.cache.policy.scope, CacheScope::Key);
    let c = load("[cache]\nscope = \"global\"").unwrap();
    assert_eq!(c.cache.policy.scope, CacheScope::Global);
    let err = load("[cache]\nscope = \"tenant\"").unwrap_err();
    assert!(err.to_string().contains("scope"), "{err}");
}

#[test]
fn files_and_upload_limit() {
    let c = Config::test_default();
    assert_eq!(c.server.max_upload_bytes, 100 << 20);
    assert!(c.files.enabled);
    assert_eq!(c.files.dir_in(Path::new("/d")), PathBuf::from("/d/files"));
    let c =
        load("[server]\nmax_upload_bytes = 5\n[files]\nenabled = false\ndir = \"/shared/files\"")
            .unwrap();
    assert_eq!(c.server.max_upload_bytes, 5);
    assert!(!c.files.enabled);
    assert_eq!(
        c.files.dir_in(Path::new("/d")),
        PathBuf::from("/shared/files")
    );
    for (text, path) in [
        ("[files]\ndir = \"\"", "files.dir"),
        ("[files]\nbucket = \"x\"", "files.bucket"),
        ("[server]\nmax_upload_bytes = 0", "server.max_upload_bytes"),
    ] {
        assert_eq!(load(text).unwrap_err().path, path, "{text}");
    }
}

#[test]
fn guardrails_are_checked_at_load() {
    let p = "[[providers]]\nname = \"a\"\ntype = \"openai\"\n";
    let ok = format!("{p}[[guardrails]]\nname = \"pii\"\ndetectors = [\"email\", \"card\"]\naction = \"redact\"\nrestore = true\n[[models]]\nname = \"m\"\nprovider = \"a\"\nguardrails = [\"pii\"]\n[[routes]]\nname = \"r\"\ntargets = [\"m\"]\nguardrails = [\"pii\"]\n");
    let c = Config::from_toml(&ok, &MapEnv::default()).unwrap();
    assert_eq!(c.guardrails.len(), 1);
    assert_eq!(c.models[0].guardrails, vec![0]);
    assert_eq!(c.routes[0].guardrails, vec![0]);
    assert_eq!(c.guardrails[0].validate_json, None);
    let json = format!("{p}[[guardrails]]\nname = \"shape\"\nvalidate_json = {{}}\n[[guardrails]]\nname = \"lax\"\nvalidate_json = {{ retries = 0, on_failure = \"pass\", tools = false }}\n");
    let c = Config::from_toml(&json, &MapEnv::default()).unwrap();
    assert!(c.guardrails[0].guard.is_none(), "no detectors needed");
    assert_eq!(
        c.guardrails[0].validate_json,
        Some(ValidateJson {
            retries: 1,
            pass: false,
            tools: true
        })
    );
    assert_eq!(
        c.guardrails[1].validate_json,
        Some(ValidateJson {
            retries: 0,
            pass: true,
            tools: false
        })
    );
    for (text, at, want) in [
        (format!("{p}[[guardrails]]\nname = \"g\"\ndetectors = [\"mail\"]\naction = \"log\"\n"), "guardrails[0].detectors", "unknown detector `mail`"),
        (format!("{p}[[guardrails]]\nname = \"g\"\npatterns = {{ x = \"(\" }}\naction = \"log\"\n"), "guardrails[0].detectors", "invalid pattern"),
        (format!("{p}[[guardrails]]\nname = \"g\"\ndetectors = [\"ip\"]\naction = \"mask\"\n"), "guardrails[0].action", "redact"),
        (format!("{p}[[guardrails]]\nname = \"g\"\ndetectors = [\"ip\"]\naction = \"log\"\nrestore = true\n"), "guardrails[0].restore", "only applies"),
        (format!("{p}[[models]]\nname = \"m\"\nprovider = \"a\"\nguardrails = [\"nope\"]\n"), "models[0].guardrails", "no guardrail named `nope`"),
        (format!("{p}[[guardrails]]\nname = \"g\"\nwebhook = {{ url = \"ftp://x\" }}\n"), "guardrails[0].webhook.url", "http://"),
        (format!("{p}[[guardrails]]\nname = \"g\"\nwebhook = {{ url = \"http://h/x\", on_error = \"ignore\" }}\n"), "guardrails[0].webhook.on_error", "`allow` or `deny`"),
        (format!("{p}[[guardrails]]\nname = \"g\"\n"), "guardrails[0].action", "is required"),
        (format!("{p}[[guardrails]]\nname = \"g\"\nvalidate_json = {{ on_failure = \"drop\" }}\n"), "guardrails[0].validate_json.on_failure", "`error` or `pass`"),
        (format!("{p}[[guardrails]]\nname = \"g\"\nvalidate_json = {{ retries = 9 }}\n"), "guardrails[0].validate_json.retries", "at most 5"),
    ] {
        let e = Config::from_toml(&text, &MapEnv::default()).unwrap_err();
        assert_eq!(e.path, at, "{text}");
        assert!(e.message.contains(want), "{}", e.message);
    }
}

#[test]
fn responses_retention_and_size() {
    let c = Config::test_default();
    assert_eq!(c.responses.ttl, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(c.responses.max_bytes, 32 << 20);
    let c = load("[responses]\nttl_seconds = 60\nmax_bytes = 1000").unwrap();
    assert_eq!(c.responses.ttl, Duration::from_secs(60));
    assert_eq!(c.responses.max_bytes, 1000);
    for (text, path) in [
        ("[responses]\nttl_seconds = 0", "responses.ttl_seconds"),
        ("[responses]\nmax_bytes = 0", "responses.max_bytes"),
        ("[responses]\nttl = 5", "responses.ttl"),
    ] {
        assert_eq!(load(text).unwrap_err().path, path, "{text}");
    }
}

#[test]
fn responses_go_native_only_to_openai_itself_unless_told() {
    let mode = |provider: &str| {
        let text =
            format!("[[providers]]\n{provider}\n[[models]]\nname = \"m\"\nprovider = \"p\"\n");
        load(&text).map(|c| c.providers[0].responses)
    };
    // OpenAI's own API: its preset, or no base_url at all.
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\npreset = \"openai\"").unwrap(),
        ResponsesMode::Native
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"").unwrap(),
        ResponsesMode::Native
    );
    // A custom base_url without the key is translated to chat (the issue's contract).
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"").unwrap(),
        ResponsesMode::Chat
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\npreset = \"groq\"").unwrap(),
        ResponsesMode::Chat
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nresponses = \"native\"")
            .unwrap(),
        ResponsesMode::Native
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\npreset = \"openai\"\nresponses = \"chat\"").unwrap(),
        ResponsesMode::Chat
    );
    let e = mode("name = \"p\"\ntype = \"anthropic\"\nresponses = \"native\"").unwrap_err();
    assert_eq!(e.path, "providers[0].responses", "{e}");
    assert!(
        load("[[providers]]\nname = \"p\"\ntype = \"openai\"\nresponses = \"both\"\n").is_err()
    );
}

#[test]
fn a_semantic_stage_may_name_a_reranker() {
    let with = |semantic: &str| {
        let text = format!(
            "[[providers]]\nname = \"p\"\ntype = \"openai\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\ncache = {{ enabled = true, semantic = {semantic} }}\n[[models]]\nname = \"e\"\nprovider = \"p\"\n[[models]]\nname = \"r\"\nprovider = \"p\"\n"
        );
        load(&text).map(|c| c.models[0].cache.semantic.clone().unwrap())
    };
    let plain = with("{ model = \"e\" }").unwrap();
    assert_eq!(plain.reranker, None);
    let checked = with("{ model = \"e\", reranker = \"r\" }").unwrap();
    let check = checked.reranker.unwrap();
    assert_eq!(
        (&*check.model, check.threshold),
        ("r", DEFAULT_RERANK_THRESHOLD)
    );
    let tuned = with("{ model = \"e\", reranker = \"r\", rerank_threshold = -2.5 }").unwrap();
    assert_eq!(tuned.reranker.unwrap().threshold, -2.5);
    for semantic in [
        "{ model = \"e\", rerank_threshold = 0.5 }",
        "{ model = \"e\", reranker = \"\" }",
        "{ model = \"e\", reranker = \"r\", rerank_threshold = nan }",
    ] {
        let e = with(semantic).unwrap_err();
        assert!(
            e.path.starts_with("models[0].cache.semantic.re"),
            "{semantic}: {}",
            e.path
        );
    }
}

#[test]
fn a_semantic_block_turns_its_targets_cache_on_unless_told_otherwise() {
    let policy = |cache: &str| {
        let text = format!(
            "[[providers]]\nname = \"p\"\ntype = \"openai\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\ncache = {cache}\n[[models]]\nname = \"other\"\nprovider = \"p\"\n[[models]]\nname = \"e\"\nprovider = \"p\"\n"
        );
        let c = load(&text).unwrap();
        (c.models[0].cache.clone(), c.models[1].cache.clone())
    };
    let (m, other) = policy("{ semantic = { model = \"e\" } }");
    assert!(m.enabled && m.sampled_chat && m.semantic.is_some());
    assert!(!m.nondeterministic, "only chat's sampled requests");
    assert!(!other.enabled && !other.sampled_chat && other.semantic.is_none());
    let (off, _) = policy("{ enabled = false, semantic = { model = \"e\" } }");
    assert!(!off.enabled);
    let (seeded, _) = policy("{ nondeterministic = false, semantic = { model = \"e\" } }");
    assert!(seeded.enabled && !seeded.sampled_chat && !seeded.nondeterministic);
    let (all, _) = policy("{ nondeterministic = true }");
    assert!(all.nondeterministic && all.sampled_chat);
    let (plain, _) = policy("{ ttl_seconds = 60 }");
    assert!(!plain.enabled && !plain.nondeterministic && !plain.sampled_chat);
}

#[test]
fn batches_are_forwarded_only_by_openai_itself_unless_told() {
    let mode = |provider: &str| {
        let text =
            format!("[[providers]]\n{provider}\n[[models]]\nname = \"m\"\nprovider = \"p\"\n");
        load(&text).map(|c| c.providers[0].batch)
    };
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\npreset = \"openai\"").unwrap(),
        BatchMode::Native
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"").unwrap(),
        BatchMode::Native
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"").unwrap(),
        BatchMode::Sluice
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\npreset = \"groq\"").unwrap(),
        BatchMode::Sluice
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nbatch = \"native\"")
            .unwrap(),
        BatchMode::Native
    );
    assert_eq!(
        mode("name = \"p\"\ntype = \"openai\"\nbatch = \"sluice\"").unwrap(),
        BatchMode::Sluice
    );
    let e = mode("name = \"p\"\ntype = \"ollama\"\nbatch = \"native\"").unwrap_err();
    assert_eq!(e.path, "providers[0].batch", "{e}");
    let c = load("[batches]\npoll_interval_ms = 250").unwrap();
    assert_eq!(c.batches.poll_interval, Duration::from_millis(250));
    assert_eq!(
        load("").unwrap().batches.poll_interval,
        Duration::from_secs(30)
    );
    assert!(load("[batches]\npoll_interval_ms = 0").is_err());
}

#[test]
fn a_provider_bounds_its_requests_in_flight_to_1024_unless_set() {
    let provider = |extra: &str| {
        load(&format!(
            "[[providers]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n{extra}"
        ))
        .unwrap()
        .providers[0]
            .max_connections
    };
    assert_eq!(provider(""), 1024);
    assert_eq!(provider("max_connections = 64"), 64);
    assert_eq!(provider("max_connections = 0"), 0, "no bound");
    let err = load("[[providers]]\nname = \"up\"\ntype = \"openai\"\nmax_connections = -1\n");
    assert!(err.is_err(), "a negative bound is refused");
}

#[test]
fn requests_in_flight_are_bounded_by_the_providers_slots_unless_set() {
    let up = |name: &str, extra: &str| {
        format!("[[providers]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n{extra}\n")
    };
    let bound = |text: String| load(&text).unwrap().requests_in_flight_bound();
    assert_eq!(bound(up("a", "")), Some(1024));
    assert_eq!(
        bound(up("a", "max_connections = 64") + &up("b", "max_connections = 100")),
        Some(164),
        "the sum of the providers' slots"
    );
    assert_eq!(
        bound(up("a", "max_connections = 0") + &up("b", "")),
        None,
        "a provider without a bound: none"
    );
    assert_eq!(bound(String::new()), None, "no providers: no bound");
    let server = |extra: &str| format!("[server]\n{extra}\n") + &up("a", "");
    assert_eq!(bound(server("max_requests_in_flight = 10")), Some(10));
    assert_eq!(bound(server("max_requests_in_flight = 0")), None);
    let config = load(&server("queue_timeout_ms = 250")).unwrap();
    assert_eq!(
        config.server.queue_timeout,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        load(&up("a", "")).unwrap().server.queue_timeout,
        std::time::Duration::from_secs(60)
    );
    assert!(load(&server("queue_timeout_ms = 0")).is_err());
}

#[test]
fn a_health_check_takes_its_defaults_and_is_off_without_one() {
    let provider = |check: &str| {
        format!("[[providers]]\nname = \"p\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n{check}\n")
    };
    let c = load(&provider("")).unwrap();
    assert_eq!(c.providers[0].health_check, None, "off by default");
    let c = load(&provider("health_check = {}")).unwrap();
    assert_eq!(
        c.providers[0].health_check,
        Some(HealthCheckConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            kind: HealthCheckKind::Models,
            failures: 2,
        })
    );
    let c = load(&provider(
        "health_check = { kind = \"chat\", model = \"gpt-4o-mini\", interval_ms = 10000 }",
    ))
    .unwrap();
    let h = c.providers[0].health_check.clone().unwrap();
    assert_eq!(h.interval, Duration::from_secs(10));
    assert_eq!(
        h.kind,
        HealthCheckKind::Chat {
            model: "gpt-4o-mini".into()
        }
    );
    let local = "[[providers]]\nname = \"l\"\ntype = \"local\"\nhealth_check = {}\n";
    let e = load(local).unwrap_err();
    assert_eq!(e.path, "providers[0].health_check", "{e}");
}

#[test]
fn the_config_file_is_watched_only_when_an_interval_is_set() {
    assert_eq!(load("").unwrap().server.watch_config, None);
    assert_eq!(
        load("[server]\nwatch_config_ms = 0")
            .unwrap()
            .server
            .watch_config,
        None
    );
    assert_eq!(
        load("[server]\nwatch_config_ms = 2000")
            .unwrap()
            .server
            .watch_config,
        Some(Duration::from_secs(2))
    );
}
