//! The `ice-probe` command.

fn main() {}
