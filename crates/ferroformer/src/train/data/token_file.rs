//! Reading token files: `u32` token ids, memory-mapped.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u32>),
}

/// A file of `u32` token ids (little-endian), memory-mapped, or tokens held in memory.
///
/// The file must not be modified while it is open.
pub struct TokenFile {
    storage: Storage,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish()
    }
}

impl TokenFile {
    /// Memory-maps a file of little-endian `u32` token ids. Errors name the file if it cannot
    /// be opened or its size is not a multiple of 4 bytes.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| Error::file(path, format!("cannot read metadata: {e}")))?
            .len();
        if size % 4 != 0 {
            return Err(Error::file(
                path,
                format!("size {size} bytes is not a multiple of 4: not a file of u32 tokens"),
            ));
        }
        let path_buf = Some(path.to_path_buf());
        if size == 0 {
            return Ok(TokenFile {
                storage: Storage::Owned(Vec::new()),
                path: path_buf,
            });
        }
        // SAFETY: the map is read-only; the files this module writes are replaced by rename,
        // never modified in place, and the type's docs ask callers not to modify the file.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::file(path, format!("cannot memory-map: {e}")))?;
        let aligned = (map.as_ptr() as usize).is_multiple_of(std::mem::align_of::<u32>());
        let storage = if cfg!(target_endian = "little") && aligned && map.len() % 4 == 0 {
            Storage::Mapped(map)
        } else {
            Storage::Owned(
                map.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        };
        Ok(TokenFile {
            storage,
            path: path_buf,
        })
    }

    /// Tokens held in memory (for tests and small corpora).
    pub fn from_tokens(tokens: Vec<u32>) -> Self {
        TokenFile {
            storage: Storage::Owned(tokens),
            path: None,
        }
    }

    /// The token ids.
    pub fn tokens(&self) -> &[u32] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped(map) => {
                // SAFETY: `open` keeps a map only on little-endian targets when its start is
                // aligned for u32 and its length is a multiple of 4; every bit pattern is a
                // valid u32, and the slice borrows `self`, which owns the map.
                unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<u32>(), map.len() / 4) }
            }
        }
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.tokens().len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file this was opened from (`None` for [`TokenFile::from_tokens`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// The training and validation token streams made by
/// [`tokenize_corpus`](super::tokenize_corpus).
#[derive(Debug)]
pub struct TokenSplit {
    /// `train.bin`.
    pub train: TokenFile,
    /// `val.bin` (empty when `val_fraction` is 0 and there are no `val_files`).
    pub val: TokenFile,
}
