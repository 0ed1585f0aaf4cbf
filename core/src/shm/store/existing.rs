//! Opening a cache that already exists, by its file-name stem, with the parameters its header
//! declares: for the command line (`python -m warp_cache clear`), which knows a cache only by
//! its files. Nothing is created or replaced; the store is used through the normal paths (the
//! writer lock, the mapper table).

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use super::super::files::{open_generation, Files};
use super::super::layout::Geometry;
use super::super::{liveness, raw};
use super::ShmStore;
use crate::error::{Error, ErrorKind, Result};

impl ShmStore {
    /// Opens the pair `<stem>.data` / `<stem>.lock` in `dir_path`, which must both exist and
    /// match these parameters (else [`ErrorKind::InvalidArgument`] or
    /// [`ErrorKind::Corrupt`]; the files are left alone).
    pub fn open_existing(
        dir_path: PathBuf,
        stem: &str,
        capacity: u32,
        key_bytes_max: u32,
        value_bytes_max: u32,
        max_bytes: u64,
    ) -> Result<ShmStore> {
        let plain = !stem.is_empty()
            && !stem.starts_with('.')
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err(Error::invalid_argument(format!(
                "{stem:?} is not the file-name stem of a shared cache"
            )));
        }
        let geometry = Geometry::new(capacity, key_bytes_max, value_bytes_max, Some(max_bytes))?;
        if std::fs::symlink_metadata(&dir_path).is_err() {
            return Err(Error::invalid_argument(format!(
                "no cache directory {}",
                dir_path.display()
            )));
        }
        let files = Files {
            data_name: format!("{stem}.data"),
            lock_name: format!("{stem}.lock"),
            stem: stem.to_owned(),
            family_prefix: None,
            dir_path,
        };
        let dir = files.open_dir()?;
        for name in [&files.lock_name, &files.data_name] {
            if dir.open_file(name)?.is_none() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("no file {} in {}", name, dir.path().display()),
                ));
            }
        }
        let me = liveness::owner_word(&dir)?;
        let generation = open_generation(&files, &dir, &geometry, false, me)?;
        let store = Self::with_generation(geometry, None, Some(files), generation);
        store.me.store(me, Relaxed);
        store
            .me_fork_generation
            .store(raw::fork_generation() + 1, Relaxed);
        Ok(store)
    }
}
