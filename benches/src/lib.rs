//! Benchmarks for the Icebreaker crates; see `benches/README.md`.
