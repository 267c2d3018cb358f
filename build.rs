//! Release builds embed the console's files (`console/`): rebuild them when a file there
//! changes or is added. Debug builds read the same files from disk at run time (so editing
//! a page needs no recompile), and must not rebuild on every such edit.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("PROFILE").as_deref() == Ok("release") {
        println!("cargo:rerun-if-changed=console");
    }
}
