//! Python adapter (issue 2).
