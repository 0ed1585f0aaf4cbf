//! The help text of `sim --help`: the one-line description, the long description and the
//! text after the options (trace formats, examples, exit codes).

pub(super) const ABOUT: &str =
    "Cache simulator of warp_cache: replays a trace of keys through the production SIEVE and \
reference policies and reports their miss ratios.";

pub(super) const LONG_ABOUT: &str = "\
Cache simulator of warp_cache.

Hit-rate report (default): replays a trace (a sequence of keys, every object of size 1, cold \
start) through several cache policies at several cache sizes and prints the miss ratio of each:

  sieve        production SIEVE (warp_cache_core::mem::MemStore, the memory backend's engine)
  shm-sieve    production SIEVE of the shared backend (warp_cache_core::shm::ShmStore, one process)
  model-sieve  reference SIEVE written like the paper's pseudocode; the three SIEVEs must agree exactly
  lru          least recently used
  fifo         first in, first out
  optimal      Belady's optimal (knows the future; a lower bound for every policy)

Without --trace it runs a demo on a small generated trace built into the binary. \
`sim gen` writes synthetic traces (Zipf, scans, loops, shifting working sets).

Multi-process replay (--workers K): starts K worker processes (this binary again) that open one \
real shared-memory cache (files in a fresh directory under /dev/shm, removed at the end) and \
replay the trace between them: every request is a get and, on a miss, an insert of a value that \
names its key, writer and request and carries a checksum. The seed alone decides the schedule \
(which worker runs which requests, in which step, where faults hit); the same seed and binary \
give the same schedule and the same deterministic report (its first line is seed=N; figures \
that depend on timing are printed last, under their own header). The parent checks every \
result: a get may miss, but it must never return a torn value, another key's value, a value \
that was never stored or one already overwritten; with --serial and no --faults every result \
must equal the reference SIEVE's. The store is validated at checkpoints; a watchdog turns a \
hang into a failure.

With --faults, workers are killed (SIGKILL) at failpoints inside the write path (after taking \
the writer lock, in the middle of writing a value, before unlocking) or at random points, \
stalled with SIGSTOP and resumed with SIGCONT, and restarted; after every kill the next write \
must succeed within --recovery-ms (lock takeover and repair). --seeds N runs N seeds and prints \
the exact command that replays each failing one. --write-fraction makes some requests updates of \
present keys, so that writers and readers meet on hot keys (with long --batch-max batches this \
exercises the seqlock's read validation). --pid-ns runs every worker in a PID namespace of its own (one cache directory shared, as between containers); more lock takeovers than killed workers then mean a live writer's lock was taken over.";

pub(super) const AFTER_HELP: &str = "\
Trace formats (--format, otherwise detected from the path and the first bytes; gzip/xz by magic bytes):
  txt             one decimal key per line (blank lines and lines starting with '*' are skipped)
  be32 / be64     raw big-endian 32-/64-bit keys
  addr            text lines '<op> 0x<hex address> <n>', the key is the address
  oracle-general  libCacheSim binary: 24-byte records {u32 time, u64 id, u32 size, i64 next}

Examples (from a checkout, run `cargo run --release -p sim -- <options>` in place of `sim <options>`):
  sim                                                   demo on the embedded trace
  sim --trace ../shared/traces/caffeine/lirs/sprite.trace.gz
  sim --trace web07.trace.xz --format be32 --capacity 100,1000,10000 --json out.json --plot out.svg
  sim --trace t.txt --policies sieve,lru,optimal --capacity 0.5%,1%,2%,5%,10%
  sim gen --kind zipf --alpha 0.8 --seed 1 --out zipf.txt.gz
  sim --trace corpora/traces/zipf-1.0.txt.gz --workers 4 --seed 7 --faults --ops 20000
  sim --trace corpora/traces/zipf-1.0.txt.gz --workers 4 --faults --seeds 20 --ops 5000
  sim --trace corpora/traces/loop.txt.gz --workers 3 --serial --seed 1 --ops 5000
  sim --trace corpora/traces/zipf-1.0.txt.gz --workers 2 --batch-max 2000 --write-fraction 0.5 --seeds 5
  sim --trace corpora/traces/zipf-1.0.txt.gz --workers 4 --faults --pid-ns --seeds 5 --ops 6000

Exit codes:
  0  success (every check passed)
  1  the job could not run: unreadable trace, unwritable output, workers could not start
  2  bad arguments
  3  correctness: SIEVE implementations disagree; a replay read a wrong value, failed
     validation, took the writer lock over more often than workers were killed (a live
     writer's lock taken), or (with --serial, no --faults) differed from the reference SIEVE
  4  crash: a replay worker died without a planned fault, panicked or broke the protocol
  5  liveness: a replay worker made no progress within --watchdog-ms, or no write succeeded
     within --recovery-ms after a crash
With --seeds, the exit code is the first failing seed's.";
