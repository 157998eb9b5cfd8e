//! cargo-afl driver for `tidegate::fuzz::connection`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::connection(data));
}
