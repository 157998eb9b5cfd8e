//! cargo-afl driver for `tidegate::fuzz::static_path`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::static_path(data));
}
