//! AFL++ harness for [`corral_fuzz::permission_rules`]; build and run it with `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| corral_fuzz::permission_rules::run(data));
}
