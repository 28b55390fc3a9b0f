//! `--device cpu|cuda[:N]|metal`: where a command runs its model. One flag and one parser,
//! flattened into every command that loads a model.

use anyhow::{bail, Context};
use candle_core::Device;

/// The devices `--device` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU (the default, and the only device GGUF models and the fast kernels run on).
    #[default]
    Cpu,
    /// NVIDIA GPU number N (`cuda` is `cuda:0`); needs a build with `--features cuda`.
    Cuda(usize),
    /// The Apple GPU; needs a build with `--features metal`.
    Metal,
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => write!(f, "metal"),
        }
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `metal` (clap's value parser for `--device`).
pub fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    let expected = "expected cpu, cuda, cuda:N (N a GPU number) or metal";
    match s.trim().to_ascii_lowercase().as_str() {
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        "metal" => Ok(DeviceChoice::Metal),
        other => match other.strip_prefix("cuda:") {
            Some(n) => n
                .parse()
                .map(DeviceChoice::Cuda)
                .map_err(|_| format!("`{s}`: `{n}` is not a GPU number; {expected}")),
            None => Err(format!("`{s}`: {expected}")),
        },
    }
}

/// The `--device` flag.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// Where the model runs: cpu, cuda, cuda:N or metal. CUDA and Metal need a build with
    /// `--features cuda` / `--features metal`; GGUF models run on the CPU only.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
}

impl DeviceArgs {
    /// Opens the chosen device; an error says how to build with a backend this binary lacks.
    pub fn open(&self) -> anyhow::Result<Device> {
        open_device(self.device)
    }
}

/// Opens `choice`, or says why it cannot be used.
pub fn open_device(choice: DeviceChoice) -> anyhow::Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                bail!(
                    "--device {choice}: this ferroformer was built without CUDA support; \
                     rebuild it with `cargo build --release --features cuda` (needs the CUDA \
                     toolkit), or run on the CPU (--device cpu)"
                );
            }
            Device::new_cuda(n).with_context(|| format!("--device {choice}: cannot open GPU {n}"))
        }
        DeviceChoice::Metal => {
            if !candle_core::utils::metal_is_available() {
                bail!(
                    "--device metal: this ferroformer was built without Metal support; \
                     rebuild it with `cargo build --release --features metal` (macOS), or \
                     run on the CPU (--device cpu)"
                );
            }
            Device::new_metal(0).context("--device metal: cannot open the Metal device")
        }
    }
}

/// An error unless `choice` is the CPU: GGUF models (quantized products in llama.cpp's
/// arithmetic) run only there. Checked before the device is opened, so that a build without
/// the backend does not send the user off to rebuild for nothing.
pub fn require_cpu_for_gguf(choice: DeviceChoice, model: &str) -> anyhow::Result<()> {
    if choice != DeviceChoice::Cpu {
        bail!(
            "--device {choice}: `{model}` is a GGUF model, and GGUF models run on the CPU only \
             (their quantized products and llama.cpp's arithmetic are CPU kernels); use \
             --device cpu, or a safetensors checkpoint of the model on the GPU"
        );
    }
    Ok(())
}

/// Loads a causal LM (a `.gguf` file, a checkpoint directory, or a hub id of either) onto
/// `--device` through the library's one loader; every command that runs a causal LM calls
/// this. A GGUF model off the CPU is refused before the device is opened.
pub fn load_language_model(
    model: &str,
    device: &DeviceArgs,
) -> anyhow::Result<ferroformer::generation::LanguageModel> {
    if ferroformer::models::gguf::gguf_file(model)?.is_some() {
        require_cpu_for_gguf(device.device, model)?;
    }
    let options = ferroformer::models::LoadOptions {
        device: device.open()?,
        ..Default::default()
    };
    Ok(ferroformer::generation::LanguageModel::from_pretrained(
        model, &options,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_device_name() {
        assert_eq!(parse_device("cpu"), Ok(DeviceChoice::Cpu));
        assert_eq!(parse_device("CPU"), Ok(DeviceChoice::Cpu));
        assert_eq!(parse_device("cuda"), Ok(DeviceChoice::Cuda(0)));
        assert_eq!(parse_device("cuda:3"), Ok(DeviceChoice::Cuda(3)));
        assert_eq!(parse_device("metal"), Ok(DeviceChoice::Metal));
    }

    #[test]
    fn rejects_other_names() {
        for bad in ["bogus", "gpu", "cuda:", "cuda:x", "cuda:-1", "cpu:0", ""] {
            let e = parse_device(bad).unwrap_err();
            assert!(e.contains("expected cpu, cuda"), "{bad}: {e}");
        }
    }

    #[test]
    fn cpu_opens() {
        assert!(open_device(DeviceChoice::Cpu).unwrap().is_cpu());
    }

    #[test]
    #[cfg_attr(feature = "cuda", ignore = "this build has the CUDA backend")]
    fn cuda_without_the_backend_says_how_to_build() {
        let e = open_device(DeviceChoice::Cuda(0)).unwrap_err().to_string();
        assert!(e.contains("cargo build --release --features cuda"), "{e}");
    }

    #[test]
    #[cfg_attr(feature = "metal", ignore = "this build has the Metal backend")]
    fn metal_without_the_backend_says_how_to_build() {
        let e = open_device(DeviceChoice::Metal).unwrap_err().to_string();
        assert!(e.contains("cargo build --release --features metal"), "{e}");
    }

    #[test]
    fn gguf_models_need_the_cpu() {
        assert!(require_cpu_for_gguf(DeviceChoice::Cpu, "m.gguf").is_ok());
        for choice in [
            DeviceChoice::Cuda(0),
            DeviceChoice::Cuda(1),
            DeviceChoice::Metal,
        ] {
            let e = require_cpu_for_gguf(choice, "m.gguf")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("m.gguf") && e.contains("CPU only") && e.contains(&choice.to_string()),
                "{e}"
            );
        }
    }
}
