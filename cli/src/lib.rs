//! The parts of the `corral` binary that are plain functions, as a library so they can be tested
//! and fuzzed (`fuzz/`) without running the binary.
//!
//! - [`batch_items`]: a batch's JSON Lines item → `JobSpec`, checked (`corral batch run`);
//! - [`batch_source`]: the items file read as a stream: checked whole, then read again part by
//!   part while uploading.

pub mod batch_items;
pub mod batch_source;
