//! cargo-afl driver for `tidegate::fuzz::byte_range`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::byte_range(data));
}
