//! The deployment files (Dockerfile, docker-compose.yml, deploy/): the config they ship is
//! one config, `sluice serve --check` takes it, and the Kubernetes manifests validate against
//! the Kubernetes schemas (kubernetes-validate from PyPI, installed by test.sh).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// The block of `sluice.toml: |` in the ConfigMap, unindented.
fn configmap_config() -> String {
    let text = read("deploy/k8s/configmap.yaml");
    let mut lines = text.lines().skip_while(|l| l.trim() != "sluice.toml: |");
    lines.next();
    let mut out = String::new();
    for line in lines {
        if line.is_empty() {
            out.push('\n');
        } else if let Some(rest) = line.strip_prefix("    ") {
            out.push_str(rest);
            out.push('\n');
        } else {
            break;
        }
    }
    out
}

#[test]
fn the_configmap_ships_deploy_sluice_toml() {
    assert_eq!(configmap_config(), read("deploy/sluice.toml"));
}

#[test]
fn the_shipped_config_passes_serve_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--check", "--config"])
        .arg(root().join("deploy/sluice.toml"))
        .env_remove("SLUICE_CONFIG")
        .env("SLUICE_MASTER_KEY", "sk-master-0123456789abcdef")
        .env("SLUICE_REDIS_URL", "redis://redis:6379")
        .env(
            "SLUICE_DATABASE_URL",
            "postgres://sluice@postgres:5432/sluice",
        )
        .env("OPENAI_API_KEY", "sk-openai")
        .env("ANTHROPIC_API_KEY", "sk-anthropic")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_image_and_the_manifests_agree_on_paths_and_ports() {
    let dockerfile = read("Dockerfile");
    let deployment = read("deploy/k8s/deployment.yaml");
    let compose = read("docker-compose.yml");
    let config = read("deploy/sluice.toml");
    assert!(config.contains("listen = \"0.0.0.0:8080\""));
    assert!(dockerfile.contains("EXPOSE 8080"));
    assert!(deployment.contains("containerPort: 8080"));
    assert!(compose.contains("\"8080:8080\""));
    for path in ["/etc/sluice/sluice.toml", "/usr/local/bin/sluice"] {
        assert!(dockerfile.contains(path), "{path}");
    }
    assert!(deployment.contains("mountPath: /etc/sluice"));
    assert!(deployment.contains("mountPath: /var/lib/sluice"));
    assert!(config.contains("data_dir = \"/var/lib/sluice\""));
    // Readiness is the endpoint that asks the stores; liveness only the process.
    assert!(deployment.contains("path: /health/ready"));
    // The pod's grace period outlasts the preStop pause plus sluice's own drain.
    let grace: u64 = field(&deployment, "terminationGracePeriodSeconds:");
    let pause: u64 = field(&deployment, "seconds:");
    let drain_ms: u64 = field(&config, "shutdown_grace_ms =");
    assert!(
        pause + drain_ms / 1000 < grace,
        "{pause} + {drain_ms} ms < {grace}"
    );
}

/// The number after `key` on its line.
fn field(text: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap();
    line.trim_start()[key.len()..].trim().parse().unwrap()
}

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas() {
    let Some(python) = std::env::var_os("SLUICE_PYTHON") else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_PYTHON_SDK").is_none(),
            "SLUICE_PYTHON is not set"
        );
        eprintln!("skipped: SLUICE_PYTHON is not set (./test.sh sets it)");
        return;
    };
    // `python -m`, not the venv's console script: a script's shebang names the venv's path
    // when it was made, so a moved or copied venv cannot run it.
    let manifests = [
        "configmap.yaml",
        "secret.yaml",
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
        "hpa.yaml",
    ];
    let out = Command::new(&python)
        .args(["-m", "kubernetes_validate"])
        .args(["--strict", "--kubernetes-version", "1.31.0"])
        .args(manifests.iter().map(|m| root().join("deploy/k8s").join(m)))
        .output()
        .unwrap_or_else(|e| panic!("{python:?} -m kubernetes_validate: {e}"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report.matches("passed").count(),
        manifests.len(),
        "{report}"
    );
}
