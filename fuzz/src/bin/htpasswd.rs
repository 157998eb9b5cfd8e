//! cargo-afl driver for `tidegate::fuzz::htpasswd`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::htpasswd(data));
}
