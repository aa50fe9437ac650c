use std::process::ExitCode;

use clap::Parser;
use regmirror::cli::{self, Cli};
use regmirror::progress;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let view = cli.wants_progress().then(progress::for_terminal).flatten();
    regmirror::logging::init(cli.log_format, cli.verbosity(), view.clone());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(cli::execute(cli, view)) as u8)
}
