//! In-process store (issue 2).
