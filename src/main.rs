//! The `shoal` command line: a thin clap front end over the workspace crates.
fn main() {}
