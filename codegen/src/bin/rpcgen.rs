//! `rpcgen`: the IDL compiler on the command line.
//!
//! ```text
//! rpcgen check FILE...          report every error (exit 1 if any)
//! rpcgen proto FILE... -o DIR   write one .proto per .idl into DIR
//! rpcgen rust FILE...           print the generated Rust
//! ```
//!
//! The arguments are parsed by `clap`, which also gives `--help` (and
//! `help <command>`) and `--version`. Exit codes: 0 success; 1 errors in
//! the input (every diagnostic on stderr) or an output that cannot be
//! written; 2 wrong usage (the error and a usage line on stderr).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use clap::{Args, Parser, Subcommand};
use rpc_codegen::model::Model;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The IDL compiler: checks .idl files and generates Rust and .proto files
/// from them.
#[derive(Debug, Parser)]
#[command(name = "rpcgen", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check .idl files and report every error
    Check(Inputs),
    /// Write one .proto per .idl file (imports included) into DIR
    Proto {
        #[command(flatten)]
        inputs: Inputs,
        /// Directory to write the .proto files into (created if missing)
        #[arg(short, long = "out", value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the Rust generated for .idl files (imports included)
    Rust(Inputs),
}

/// The files a command reads.
#[derive(Debug, Args)]
struct Inputs {
    /// The .idl files; the files they import are read too
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

impl Inputs {
    /// The files and everything they import, checked; on errors, every
    /// diagnostic is printed to stderr.
    fn load(&self) -> Result<Model, ExitCode> {
        let roots: Vec<&Path> = self.files.iter().map(PathBuf::as_path).collect();
        rpc_codegen::load_many(&roots).map_err(|diagnostics| {
            eprint!("{}", diagnostics.render());
            ExitCode::FAILURE
        })
    }
}

fn main() -> ExitCode {
    // Bad usage: clap prints the error and a usage line to stderr and exits
    // with 2; `--help` and `--version` print to stdout and exit with 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check(inputs) => inputs.load().map(|model| check(&model)),
        Command::Proto { inputs, out } => inputs.load().and_then(|model| proto(&model, out)),
        Command::Rust(inputs) => inputs
            .load()
            .map(|model| print!("{}", rpc_codegen::rust::generate(&model))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Prints what the checked files declare.
fn check(model: &Model) {
    let messages: usize = model.files.iter().map(|f| f.messages.len()).sum();
    let enums: usize = model.files.iter().map(|f| f.enums.len()).sum();
    let services: usize = model.files.iter().map(|f| f.services.len()).sum();
    let methods: usize = model
        .files
        .iter()
        .flat_map(|f| &f.services)
        .map(|s| s.methods.len())
        .sum();
    println!(
        "ok: {} file(s), {messages} message(s), {enums} enum(s), {services} service(s), {methods} method(s)",
        model.files.len()
    );
}

/// Writes the .proto files under `dir`, printing each path written.
fn proto(model: &Model, dir: &Path) -> Result<(), ExitCode> {
    for file in rpc_codegen::proto::generate(model) {
        let path = dir.join(&file.name);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &file.contents));
        if let Err(e) = written {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return Err(ExitCode::FAILURE);
        }
        println!("{}", path.display());
    }
    Ok(())
}
