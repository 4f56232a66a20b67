//! PROVISIONAL: `pidring bench`.
#[derive(Debug, Default, clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
