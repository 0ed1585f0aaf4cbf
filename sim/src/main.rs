//! The `sim` binary; see `sim --help` and [`sim::cli`].

fn main() -> std::process::ExitCode {
    sim::cli::main()
}
