//! The few options the hand-written benchmark mains take (`--rounds N`, `--json`,
//! `--help`), beside cargo's own (`--bench` under `cargo bench`, none under `cargo test`).

/// What a benchmark main was asked for.
pub struct Options {
    pub rounds: usize,
    pub json: bool,
    /// Run by `cargo bench` (not the smoke pass under `cargo test`).
    pub benching: bool,
}

/// Reads the arguments: `--help` prints `usage` and exits; `--rounds` must be a positive
/// whole number (else `name` says so and exits 2); without it, `bench_rounds` under
/// `cargo bench` and `test_rounds` under `cargo test`.
pub fn options(name: &str, usage: &str, bench_rounds: usize, test_rounds: usize) -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        std::process::exit(0);
    }
    let benching = args.iter().any(|a| a == "--bench");
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("{name}: --rounds takes a positive whole number");
                std::process::exit(2);
            }
        },
        None if benching => bench_rounds,
        None => test_rounds,
    };
    Options {
        rounds,
        json: args.iter().any(|a| a == "--json"),
        benching,
    }
}
