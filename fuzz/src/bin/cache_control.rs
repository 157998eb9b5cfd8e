//! cargo-afl driver for `tidegate::fuzz::cache_control`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::cache_control(data));
}
