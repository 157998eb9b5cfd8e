//! cargo-afl driver for `tidegate::fuzz::accept_encoding`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::accept_encoding(data));
}
