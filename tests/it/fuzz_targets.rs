//! Every fuzz target (`tidegate::fuzz`, driven by cargo-afl in `fuzz/`)
//! on its seed corpus, then on random mutations of it for a short while:
//! a quick run on every `cargo test`, without coverage guidance. A failure
//! prints the input (and the seed that made it) to reproduce it. The
//! seed is fixed unless `TIDEGATE_FUZZ_SEED` says otherwise.

use std::time::{Duration, Instant};

/// How long each target runs on mutations.
const BUDGET: Duration = Duration::from_secs(2);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit of `input`: bytes flipped, set to interesting values,
/// inserted, removed, or spliced from another seed.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const SPECIAL: &[u8] = b"\0\r\n\t :,;@%[]./_-=\"{}$\xff\x80";
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        let last = input.len().saturating_sub(1);
        match rng.below(6) {
            0 if !input.is_empty() => input[at.min(last)] ^= 1 << rng.below(8),
            1 if !input.is_empty() => input[at.min(last)] = SPECIAL[rng.below(SPECIAL.len())],
            2 => input.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
            3 if !input.is_empty() => {
                let end = (at + rng.below(8)).min(input.len());
                input.drain(at.min(end)..end);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let end = (from + 1 + rng.below(16)).min(other.len());
                    input.splice(at..at, other[from..end].iter().copied());
                }
            }
            _ => input.push(rng.next() as u8),
        }
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("entry").path()).expect("seed"))
        .collect();
    out.push(Vec::new());
    out
}

fn run(target: &str, f: fn(&[u8]), input: &[u8], seed: u64) {
    let caught = std::panic::catch_unwind(|| f(input));
    if caught.is_err() {
        panic!(
            "fuzz target `{target}` failed on {:?} (seed {seed}); add it to fuzz/corpus/{target}/",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_fuzz_target_holds_on_its_corpus_and_mutations() {
    // A fixed seed by default, so that a run (CI's among them) is
    // repeatable; `TIDEGATE_FUZZ_SEED=<n>` picks another, `=random` one
    // from the clock, to explore further by hand.
    let seed = match std::env::var("TIDEGATE_FUZZ_SEED").as_deref() {
        Ok("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        Ok(n) => n.parse().expect("TIDEGATE_FUZZ_SEED: a number or `random`"),
        Err(_) => 0x7469_6465_6761_7465,
    } | 1;
    for &(name, f) in tidegate::fuzz::TARGETS {
        let seeds = seeds(name);
        for s in &seeds {
            run(name, f, s, seed);
        }
        let mut rng = Rng(seed);
        let end = Instant::now() + BUDGET;
        let mut runs = 0u64;
        while Instant::now() < end {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(8) {
                mutate(&mut rng, &mut input, &seeds);
            }
            run(name, f, &input, seed);
            runs += 1;
        }
        eprintln!("{name}: {} seeds, {runs} mutations", seeds.len());
    }
}
