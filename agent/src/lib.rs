//! The Corral agent.
//!
//! - [`runtime`]: the `Runtime` trait and the bubblewrap implementation.
pub mod runtime;
