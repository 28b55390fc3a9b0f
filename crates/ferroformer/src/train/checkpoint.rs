//! Atomic file writes: a crash never leaves a half-written checkpoint file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `path` by letting `write` fill a temporary file in the same directory, syncing
/// it to disk, and renaming it over `path` (then syncing the directory).
pub fn atomic_write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let tmp = temp_path(path);
    let result = (|| {
        write(&tmp)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::file(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |tmp| {
        let mut f = File::create(tmp).map_err(|e| Error::file(tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::file(tmp, e))
    })
}

/// FNV-1a over a file's bytes: ties the files of one checkpoint together, so a resume from
/// files of different saves is detected.
pub fn file_checksum(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    Ok(format!("{h:016x}"))
}

/// The trainable parameters by name, as tensors (for saving a resumable checkpoint).
pub fn var_tensors(
    vars: &std::collections::HashMap<String, candle_core::Var>,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    vars.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// Overwrites every parameter in `vars` from a safetensors file written from
/// [`var_tensors`] of the same model: a missing tensor or another shape is an error naming
/// the tensor and the file.
pub fn load_vars(
    vars: &std::collections::HashMap<String, candle_core::Var>,
    path: &Path,
) -> Result<()> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .map_err(|e| Error::file(path, format!("cannot read model weights: {e}")))?;
    for (name, var) in vars {
        let t = tensors.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.clone(),
            source_desc: path.display().to_string(),
        })?;
        if t.dims() != var.as_tensor().dims() {
            return Err(Error::TensorShape {
                name: name.clone(),
                source_desc: path.display().to_string(),
                expected: var.as_tensor().dims().to_vec(),
                found: t.dims().to_vec(),
            });
        }
        // The file is read on the CPU; the parameters live on the training device.
        var.set(
            &t.to_dtype(candle_core::DType::F32)?
                .to_device(var.as_tensor().device())?,
        )?;
    }
    Ok(())
}

/// The variables of a `VarMap` by name (the trainable parameters of a model built on it).
pub fn varmap_vars(
    varmap: &candle_nn::VarMap,
) -> Result<std::collections::HashMap<String, candle_core::Var>> {
    Ok(varmap
        .data()
        .lock()
        .map_err(|_| Error::Invalid("poisoned variable map".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}
