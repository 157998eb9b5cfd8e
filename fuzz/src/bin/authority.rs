//! cargo-afl driver for `tidegate::fuzz::authority`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::authority(data));
}
