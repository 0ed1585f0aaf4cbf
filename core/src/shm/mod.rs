//! Shared-memory store: a cross-process SIEVE cache in two memory-mapped files.
//!
//! | module      | what                                                                 |
//! |-------------|----------------------------------------------------------------------|
//! | `layout`    | `repr(C)` structures of both files, word indexes via `offset_of!`, size asserts, [`layout::Geometry`] |
//! | `region`    | the only code that opens, creates, maps files (security rules, space reservation) |
//! | `seqlock`   | seqlock + crash-safe writer lock, generic over its words (loom-tested) |
//! | `slot_seq`  | the per-slot sequence a lock-free reader validates (loom-tested)      |
//! | `table`     | open-addressing hash table, linear probing, backward-shift deletion   |
//! | `arena`     | fixed-size slots, allocator, the SIEVE slots view for [`crate::policy`] |
//! | `store`     | [`ShmStore`]: open/get/insert/clear/info/validate                     |
//! | `raw`       | the few unsafe OS primitives that are not about files                 |
//! | `inspect`   | read-only inspection of a cache directory (copies, never locks or writes) |
//! | `stale`     | removing the pairs no live process maps (`remove --stale`)            |
//! | `failpoint` | test-only crash points (feature `failpoints`)                         |
//! | `fuzz`      | byte-driven property bodies over heap-backed stores (feature `testkit`) |
//!
//! Invariants (docs/ARCHITECTURE.md): INV-7 (hostile mapping: every index and length read
//! from shared memory is checked; hot paths use only the process's own geometry), INV-8
//! (crash-safe writers), INV-9 (new parameters, new file; never truncate a mapped file), and
//! the shared-store specifics:
//! * INV-S1: only `region` opens, creates and maps files;
//! * INV-S2: a data file is used only with the lock file whose nonce its header records;
//! * INV-S3: seqlock protocol: readers accept a copy of a slot only if the slot's sequence
//!   was even and unchanged across it (Acquire load, relaxed copies, Acquire fence, reload),
//!   and a miss only if a second walk of the probe run reads the same buckets;
//! * INV-S4: a write section that starts on an odd sequence (a writer died inside one), or
//!   corruption found under the lock, resets the table and arena before the section ends;
//! * INV-S5: linear-probe runs stay contiguous (backward-shift deletion, no tombstones);
//! * INV-S6: a mapping whose file was truncated under it (a foreign process broke INV-9) is
//!   patched with private zero pages by the SIGBUS safety net (`region.rs`) and flagged; a
//!   read from a flagged mapping is never served, and the store moves to fresh files.

pub mod arena;
pub mod heap;
pub mod layout;
/// Portable (no OS calls): the arena's slot sequences use its [`seqlock::Word`].
pub mod seqlock;
pub mod slot_seq;
pub mod table;

#[cfg(unix)]
pub mod failpoint;
#[cfg(unix)]
pub mod files;
pub mod flight;
#[cfg(unix)]
pub mod futex;
#[cfg(all(unix, any(test, fuzzing, feature = "testkit")))]
pub mod fuzz;
#[cfg(unix)]
/// The generations (file pairs) of a store and the one in use.
pub mod generations;
#[cfg(unix)]
pub mod header;
#[cfg(unix)]
pub mod inspect;
#[cfg(unix)]
pub mod liveness;
#[cfg(unix)]
pub mod raw;
#[cfg(unix)]
pub mod region;
#[cfg(unix)]
pub mod stale;
#[cfg(unix)]
pub mod store;

pub use crate::hash::{hash_algo_id, key_hash};
#[cfg(unix)]
pub use store::{
    FlightClaim, FlightMark, FlightWait, InsertOutcome, ShmConfig, ShmInfo, ShmPaths, ShmStore,
    SkipReason,
};
