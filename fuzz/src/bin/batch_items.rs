//! AFL++ harness for [`corral_fuzz::batch_items`]; build and run it with `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| corral_fuzz::batch_items::run(data));
}
