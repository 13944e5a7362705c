//! End-to-end and interop tests across the Icebreaker crates and binaries live in `tests/`.
