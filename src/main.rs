//! The `mcphop` binary: parses the command line, sets up logging to stderr,
//! and runs the event loop.

use std::process::ExitCode;

use mcphop::config::{self, Invocation};

fn main() -> ExitCode {
    let config = match config::parse_args(std::env::args().skip(1)) {
        Ok(Invocation::Run(config)) => config,
        Ok(Invocation::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("mcphop {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::CheckConfig(Ok(servers))) => {
            println!("config ok: {servers} server(s)");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::CheckConfig(Err(errors))) => {
            for error in errors {
                eprintln!("mcphop: {error}");
            }
            return ExitCode::FAILURE;
        }
        Err(message) => {
            eprintln!("mcphop: {message}");
            return ExitCode::from(2);
        }
    };
    let log_config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    // Logging is best effort: without it mcphop still serves.
    let _ = simplelog::WriteLogger::init(config.log_level, log_config, std::io::stderr());
    match mcphop::reactor::run(*config) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            log::error!("mcphop stopped: {error}");
            eprintln!("mcphop: {error}");
            ExitCode::FAILURE
        }
    }
}
