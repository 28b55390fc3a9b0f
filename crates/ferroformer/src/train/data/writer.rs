//! Writing output files atomically: to a temporary file beside the destination, fsynced,
//! then renamed into place.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A temporary file beside its destination, removed on drop unless renamed into place.
pub(super) struct TempFile {
    /// The temporary file.
    pub(super) tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempFile {
    /// Creates (truncating) the temporary file for `dest`, readable and writable.
    pub(super) fn create(dest: &Path) -> Result<(Self, File)> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        // Readable too: the fraction split reads the tail back.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::file(&tmp, format!("cannot create: {e}")))?;
        Ok((
            TempFile {
                tmp,
                dest: dest.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    /// The same temporary file, to be renamed to `dest` instead.
    pub(super) fn retarget(mut self, dest: &Path) -> Self {
        self.dest = dest.to_path_buf();
        self
    }

    /// fsyncs `file` (this temp file) and renames it over the destination.
    pub(super) fn persist(mut self, file: File) -> Result<()> {
        file.sync_all()
            .map_err(|e| Error::file(&self.tmp, format!("cannot sync to disk: {e}")))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(|e| {
            Error::file(
                &self.dest,
                format!("cannot rename {} into place: {e}", self.tmp.display()),
            )
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Streams u32 tokens (little-endian) into a temporary file.
pub(super) struct TokenWriter {
    temp: TempFile,
    out: BufWriter<File>,
    /// Tokens written so far.
    pub(super) count: u64,
    bytes: Vec<u8>,
}

impl TokenWriter {
    /// A writer whose file will become `dest`.
    pub(super) fn create(dest: &Path) -> Result<Self> {
        let (temp, file) = TempFile::create(dest)?;
        Ok(TokenWriter {
            temp,
            out: BufWriter::with_capacity(1 << 20, file),
            count: 0,
            bytes: Vec::new(),
        })
    }

    /// Appends `ids`.
    pub(super) fn push(&mut self, ids: &[u32]) -> Result<()> {
        self.bytes.clear();
        self.bytes.extend(ids.iter().flat_map(|t| t.to_le_bytes()));
        self.out
            .write_all(&self.bytes)
            .map_err(|e| Error::file(&self.temp.tmp, format!("cannot write: {e}")))?;
        self.count += ids.len() as u64;
        Ok(())
    }

    /// Flushes and returns the temporary file, its handle and the token count.
    pub(super) fn finish(self) -> Result<(TempFile, File, u64)> {
        let TokenWriter {
            temp, out, count, ..
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| Error::file(&temp.tmp, format!("cannot write: {}", e.error())))?;
        Ok((temp, file, count))
    }

    /// Flushes, fsyncs and renames the file into place; returns the token count.
    pub(super) fn persist(self) -> Result<u64> {
        let (temp, file, count) = self.finish()?;
        temp.persist(file)?;
        Ok(count)
    }
}

/// fsyncs the folder `dir`, so renames in it are durable.
pub(super) fn sync_dir(dir: &Path) {
    // Makes the renames durable where folders can be opened (not on Windows); best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
