//! The `pidring helper` test program, built inside this crate so that the integration tests
//! always run the helper of the current checkout (`CARGO_BIN_EXE_pidring-helper`).
//! Its steps are documented in `harness/src/helper.rs`, which this binary compiles as is.

#[allow(dead_code)]
#[path = "../../../harness/src/helper.rs"]
mod helper;

fn main() {
    // Accept both `pidring-helper STEPS` and `pidring-helper helper STEPS` (the form the
    // helper's own `spawn=` step uses when it re-executes itself).
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "helper") {
        args.remove(0);
    }
    helper::main(args)
}
