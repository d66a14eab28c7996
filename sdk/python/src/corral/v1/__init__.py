"""Generated protobuf and gRPC modules for the `corral.v1` API (see scripts/gen_protos.sh)."""
