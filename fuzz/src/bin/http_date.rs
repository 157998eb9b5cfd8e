//! cargo-afl driver for `tidegate::fuzz::http_date`.
fn main() {
    afl::fuzz!(|data: &[u8]| tidegate::fuzz::http_date(data));
}
