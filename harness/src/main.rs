//! PROVISIONAL: the `pidring` command (run, bench, helper).
mod bench;

fn main() {
    let _ = bench::BenchArgs::default();
}
