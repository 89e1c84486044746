//! Where chat models run: the CPU (default), an NVIDIA GPU (`cuda`, `cuda:N`) or Apple's GPU
//! (`metal`), and how much memory a GPU offers the pool.
//!
//! GPUs run on candle's CUDA and Metal backends, which `sluice-local` builds only with its `cuda`
//! and `metal` cargo features; without them, asking for a GPU is a clear load error, not a silent
//! fallback to the CPU. The native engine is CPU-only, so a GPU device runs candle (`engine =
//! "auto"` picks it; `"native"` is refused). Embedding models always run on the CPU.

use std::path::Path;
use std::process::Command;

use candle_core::Device;

use crate::error::{ErrorKind, Result};

/// A device for chat models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU.
    #[default]
    Cpu,
    /// NVIDIA GPU number `n` (CUDA).
    Cuda(usize),
    /// Apple's GPU (Metal).
    Metal,
}

/// Share of a GPU's memory the pool takes by default: the rest is the CUDA context's and the
/// compute buffers'.
pub const DEFAULT_GPU_BUDGET_PERCENT: u64 = 90;

// === impl DeviceKind ===

impl DeviceKind {
    /// Parses `cpu`, `cuda` (GPU 0), `cuda:N` or `metal`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "cpu" => Some(Self::Cpu),
            "cuda" => Some(Self::Cuda(0)),
            "metal" => Some(Self::Metal),
            _ => name
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda),
        }
    }

    /// Whether it is a GPU.
    pub fn is_gpu(self) -> bool {
        self != Self::Cpu
    }

    /// The config name.
    pub fn name(self) -> String {
        match self {
            Self::Cpu => "cpu".to_owned(),
            Self::Cuda(n) => format!("cuda:{n}"),
            Self::Metal => "metal".to_owned(),
        }
    }

    /// Opens the device; a backend this build lacks, or a GPU that is not there, is an error
    /// that says which.
    pub(crate) fn open(self) -> Result<Device> {
        let opened = match self {
            Self::Cpu => return Ok(Device::Cpu),
            Self::Cuda(n) => Device::new_cuda(n),
            Self::Metal => Device::new_metal(0),
        };
        opened.map_err(|e| {
            let (feature, built) = match self {
                Self::Metal => ("metal", cfg!(feature = "metal")),
                _ => ("cuda", cfg!(feature = "cuda")),
            };
            let why = if built {
                format!("{e}")
            } else {
                format!("this build has no {feature} support (build sluice-local with `--features {feature}`)")
            };
            ErrorKind::Backend(format!("device `{}` is not available: {why}", self.name())).into()
        })
    }

    /// The default memory budget on this device: [`DEFAULT_GPU_BUDGET_PERCENT`] of an NVIDIA
    /// GPU's memory (from `nvidia-smi`); `None` for the CPU, for Metal (its memory is the
    /// machine's, so the RAM default applies) and when the GPU's memory cannot be read.
    pub fn default_budget(self) -> Option<u64> {
        match self {
            Self::Cuda(n) => nvidia_gpu_memory(Path::new("nvidia-smi"), n)
                .map(|b| b / 100 * DEFAULT_GPU_BUDGET_PERCENT),
            Self::Cpu | Self::Metal => None,
        }
    }
}

/// Total memory of NVIDIA GPU `index` in bytes, as `program` (`nvidia-smi`) reports it
/// (`--query-gpu=memory.total --format=csv,noheader,nounits`, in MiB); `None` when it cannot
/// run or says something else.
pub fn nvidia_gpu_memory(program: &Path, index: usize) -> Option<u64> {
    let output = Command::new(program)
        .args([
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
            "-i",
            &index.to_string(),
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let mib: u64 = text.lines().next()?.trim().parse().ok()?;
    mib.checked_mul(1 << 20).filter(|&b| b > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(DeviceKind::parse("cpu"), Some(DeviceKind::Cpu));
        assert_eq!(DeviceKind::parse("cuda"), Some(DeviceKind::Cuda(0)));
        assert_eq!(DeviceKind::parse("cuda:1"), Some(DeviceKind::Cuda(1)));
        assert_eq!(DeviceKind::parse("metal"), Some(DeviceKind::Metal));
        assert_eq!(DeviceKind::parse("cuda:x"), None);
        assert_eq!(DeviceKind::parse("gpu"), None);
        assert_eq!(DeviceKind::Cuda(1).name(), "cuda:1");
        assert!(!DeviceKind::Cpu.is_gpu() && DeviceKind::Metal.is_gpu());
    }

    #[test]
    fn a_gpu_this_build_lacks_is_a_clear_error() {
        if cfg!(feature = "cuda") {
            return;
        }
        let error = DeviceKind::Cuda(0).open().expect_err("no CUDA here");
        let text = error.to_string();
        assert!(
            text.contains("`cuda:0`") && text.contains("--features cuda"),
            "{text}"
        );
        assert!(DeviceKind::Cpu.open().is_ok());
    }

    /// `nvidia-smi` stand-ins: one that answers as a 24 GiB GPU does (checking the query it is
    /// given), one that fails, one that prints something else.
    #[test]
    fn gpu_memory_is_read_from_nvidia_smi() {
        let dir = crate::tests::TempDir::new();
        let script = |name: &str, body: &str| {
            let path = dir.path(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let good = script(
            "smi-good",
            r#"[ "$1 $2 $3 $4" = "--query-gpu=memory.total --format=csv,noheader,nounits -i 1" ] || exit 9
echo "24576""#,
        );
        assert_eq!(nvidia_gpu_memory(&good, 1), Some(24576 << 20));
        assert_eq!(nvidia_gpu_memory(&good, 0), None, "wrong index: exit 9");
        let failing = script("smi-fail", "echo 'NVIDIA-SMI has failed' >&2; exit 9");
        assert_eq!(nvidia_gpu_memory(&failing, 0), None);
        let odd = script("smi-odd", "echo '[N/A]'");
        assert_eq!(nvidia_gpu_memory(&odd, 0), None);
        assert_eq!(nvidia_gpu_memory(&dir.path("absent"), 0), None);
        assert_eq!(DeviceKind::Cpu.default_budget(), None);
        assert_eq!(DeviceKind::Metal.default_budget(), None);
    }
}
