//! Helpers shared by the fuzz targets: a framing that splits one fuzz input into several
//! named files, and a scratch directory to write them to.
//!
//! # Framing
//!
//! A multi-file input is a sequence of records, each `id: u8`, `len: u32` (little-endian),
//! then `len` bytes (fewer if the input ends first). `id` picks a name from the target's
//! table (modulo its length). Trailing bytes too short for a record header are ignored.
//! `fuzz/make_seeds.py` writes seeds in this framing.

use std::path::Path;

/// One record of a framed input: the index of its name in the target's table, and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Index into the target's name table.
    pub id: usize,
    /// The file's bytes.
    pub bytes: &'a [u8],
}

/// Splits `data` into records (see the module docs); ids are reduced modulo `names`.
pub fn records(mut data: &[u8], names: usize) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    while data.len() >= 5 {
        let id = usize::from(data[0]) % names.max(1);
        let len = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let rest = &data[5..];
        let len = len.min(rest.len());
        out.push(Record {
            id,
            bytes: &rest[..len],
        });
        data = &rest[len..];
    }
    out
}

/// The bytes of the last record with id `id`, if any.
pub fn last<'a>(records: &[Record<'a>], id: usize) -> Option<&'a [u8]> {
    records.iter().rev().find(|r| r.id == id).map(|r| r.bytes)
}

/// A fresh scratch directory, in `/dev/shm` when there is one (writes and fsyncs cost nothing
/// there), else in the system temporary directory. Removed when dropped.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new().prefix("ff-fuzz-").tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("ff-fuzz-").tempdir()
    };
    dir.expect("cannot create a scratch directory for the fuzz input")
}

/// Writes `bytes` to `dir/name`.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("cannot write the fuzz input to the scratch dir");
}

/// With `FUZZ_VERBOSE` set in the environment, prints the error a loader gave (to see how
/// far a seed or a crashing input gets); silent otherwise, as fuzzing runs millions of inputs.
pub fn report<T, E: std::fmt::Display>(what: &str, result: &Result<T, E>) {
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        match result {
            Ok(_) => eprintln!("{what}: ok"),
            Err(e) => eprintln!("{what}: error: {e}"),
        }
    }
}
