//! Codec: Value <-> bytes (issue 3). Placeholder module until the codec lands.
#![forbid(unsafe_code)]
