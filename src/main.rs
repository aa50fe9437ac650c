use std::process::ExitCode;

use clap::Parser;
use regmirror::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    regmirror::logging::init(cli.log_format, cli.verbosity());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(cli::execute(cli)) as u8)
}
