//! cargo-afl driver for `tidegate::fuzz::nginx_conf`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::nginx_conf(data));
}
