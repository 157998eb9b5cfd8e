//! cargo-afl driver for `tidegate::fuzz::route`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::route(data));
}
