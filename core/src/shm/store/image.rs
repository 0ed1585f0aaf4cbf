//! Stores built from and dumped to byte images of the two files: for the fuzz targets and
//! tests (compiled only for them: feature `testkit`, `cfg(fuzzing)` or `cfg(test)`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::super::header::{check_header, lock_nonce_of, lock_words_valid};
use super::super::layout::{word, DataHeader, Geometry, HEADER_WORDS, LOCK_FILE_WORDS, WORD_BYTES};
use super::{ShmConfig, ShmStore};
use crate::error::{Error, ErrorKind, Result};

impl ShmStore {
    /// A heap store whose memory starts as the given images (as if mapped from hostile files):
    /// for fuzzing the open checks and every operation on garbage. A header that does not
    /// match `config` (or a short image) is an [`ErrorKind::Corrupt`] error, as `open` would
    /// replace such a file.
    pub fn from_image(config: ShmConfig, data: &[u8], lock: &[u8]) -> Result<ShmStore> {
        let geometry = Geometry::new(
            config.capacity,
            config.key_bytes_max,
            config.value_bytes_max,
            config.max_bytes,
        )?;
        let to_words = |bytes: &[u8], count: usize| -> Option<Box<[AtomicU64]>> {
            (bytes.len() >= count * WORD_BYTES).then(|| {
                bytes
                    .chunks_exact(WORD_BYTES)
                    .take(count)
                    .map(|c| AtomicU64::new(u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))))
                    .collect()
            })
        };
        let corrupt =
            |what: &str| Error::new(ErrorKind::Corrupt, format!("image rejected: {what}"));
        let lock =
            to_words(lock, LOCK_FILE_WORDS).ok_or_else(|| corrupt("lock image too short"))?;
        if !lock_words_valid(&lock) {
            return Err(corrupt("lock header mismatch"));
        }
        // A file holds its fixed part and the heap made real so far; the rest reads as zeros.
        // (The header is checked first: a mismatched budget never sizes an allocation.)
        if (data.len() as u64) < geometry.fixed_bytes {
            return Err(corrupt("data image too short"));
        }
        let header: Vec<u64> = data[..HEADER_WORDS * WORD_BYTES]
            .chunks_exact(WORD_BYTES)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        check_header(&header, &geometry, Some(lock_nonce_of(&lock)))
            .map_err(|e| corrupt(&e.to_string()))?;
        // Shorter than what the writers made real: truncated (a mapping would fault there).
        let committed = header[word!(DataHeader, heap_committed)]
            .min(geometry.region_bytes - geometry.fixed_bytes);
        if (data.len() as u64) < geometry.fixed_bytes + committed {
            return Err(corrupt("data image shorter than its committed heap"));
        }
        let mut padded = data
            .get(..geometry.region_bytes as usize)
            .unwrap_or(data)
            .to_vec();
        padded.resize(geometry.region_words() * WORD_BYTES, 0);
        let data = to_words(&padded, geometry.region_words())
            .ok_or_else(|| corrupt("data image too short"))?;
        let header: Vec<u64> = data[..HEADER_WORDS]
            .iter()
            .map(|w| w.load(Relaxed))
            .collect();
        check_header(&header, &geometry, Some(lock_nonce_of(&lock)))
            .map_err(|e| corrupt(&e.to_string()))?;
        Ok(Self::over_heap(geometry, config.ttl_ns, data, lock))
    }

    /// The current data and lock images (tests and fuzzing).
    pub fn image(&self) -> (Vec<u8>, Vec<u8>) {
        let generation = self.generation();
        let bytes = |words: &[AtomicU64]| {
            words
                .iter()
                .flat_map(|w| w.load(Relaxed).to_ne_bytes())
                .collect::<Vec<u8>>()
        };
        (
            bytes(generation.data.words()),
            bytes(generation.lock.words()),
        )
    }
}
