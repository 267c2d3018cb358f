//! Rebuild when the console's files change: they are embedded in the binary, and a file
//! added to `console/` would otherwise go unnoticed until something else changed.
fn main() {
    println!("cargo:rerun-if-changed=console");
    println!("cargo:rerun-if-changed=build.rs");
}
