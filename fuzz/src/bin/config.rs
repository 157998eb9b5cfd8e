//! cargo-afl driver for `tidegate::fuzz::config`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::config(data));
}
