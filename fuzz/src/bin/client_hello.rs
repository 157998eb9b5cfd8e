//! cargo-afl driver for `tidegate::fuzz::client_hello`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::client_hello(data));
}
