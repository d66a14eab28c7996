//! AFL++ harness for [`corral_fuzz::sandbox_paths`]; build and run it with `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| corral_fuzz::sandbox_paths::run(data));
}
