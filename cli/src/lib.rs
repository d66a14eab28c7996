//! The parts of the `corral` binary that are plain functions, as a library so they can be tested
//! and fuzzed (`fuzz/`) without running the binary.
//!
//! - [`batch_items`]: a batch's JSON Lines file → `JobSpec`s, checked line by line
//!   (`corral batch run`).

pub mod batch_items;
