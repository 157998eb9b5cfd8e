//! cargo-afl driver for `tidegate::fuzz::client_ip`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::client_ip(data));
}
