//! The `xborder` binary: parse the command line and hand over to `cli`.
fn main() -> std::process::ExitCode {
    xborder::cli::main()
}
