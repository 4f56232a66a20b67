//! `pidring run`.
use std::process::ExitCode;

pub const EXIT_PIDRING_FAILED: u8 = 125;

#[derive(Debug, clap::Args)]
pub struct RunArgs {}

pub fn run(_args: RunArgs) -> ExitCode {
    ExitCode::from(EXIT_PIDRING_FAILED)
}
