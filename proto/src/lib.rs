//! Generated code for the `corral.v1` gRPC API (see `proto/corral/v1/*.proto`).
//!
//! Wire types stay at the edge: the coordinator converts them into domain types in its `api/` module.
#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("corral.v1");

    /// Encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("corral_descriptor");
}
