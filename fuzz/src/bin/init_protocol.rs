//! AFL++ harness for [`corral_fuzz::init_protocol`]; build and run it with `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| corral_fuzz::init_protocol::run(data));
}
