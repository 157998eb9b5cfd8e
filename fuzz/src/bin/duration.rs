//! cargo-afl driver for `tidegate::fuzz::duration`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::duration(data));
}
