//! AFL++ harness for [`corral_fuzz::proto_convert`]; build and run it with `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| corral_fuzz::proto_convert::run(data));
}
