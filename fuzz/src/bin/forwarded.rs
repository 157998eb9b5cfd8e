//! cargo-afl driver for `tidegate::fuzz::forwarded`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::forwarded(data));
}
