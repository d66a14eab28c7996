//! Jobs and fan-out batches (see docs/ARCHITECTURE.md "Jobs and batches").
//!
//! - [`table`]: every coordinator's index of jobs and batches, fed by the store's watch;
//! - [`place`]: pure placement of pending jobs on node slots (fair between tenants, capped per
//!   tenant and per batch), property-tested;
//! - [`schedule`]: the leader's loop: claims (fenced CAS, group-committed) and dispatch, and the
//!   sweeps for lost nodes, lost work items and batch deadlines;
//! - [`commit`]: the leader commits agents' reports, rejecting stale attempts;
//! - [`ops`]: submit (idempotent), get, wait, cancel, for jobs and batches.

pub mod commit;
pub mod ops;
pub mod place;
pub mod schedule;
pub mod table;

pub use table::JobTable;
