//! cargo-afl driver for `tidegate::fuzz::proxy_protocol`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::proxy_protocol(data));
}
