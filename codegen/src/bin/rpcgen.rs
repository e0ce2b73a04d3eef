//! `rpcgen`: the IDL compiler on the command line.
//!
//! ```text
//! rpcgen check FILE...          report every error (exit 1 if any)
//! rpcgen proto FILE... -o DIR   write one .proto per .idl into DIR
//! rpcgen rust FILE...           print the generated Rust
//! ```
//!
//! Exit codes: 0 success, 1 errors in the input, 2 wrong usage or an output
//! that cannot be written.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage:
  rpcgen check FILE...          check .idl files, report every error
  rpcgen proto FILE... -o DIR   write one .proto per .idl file into DIR
  rpcgen rust FILE...           print the generated Rust";

fn usage(problem: &str) -> ExitCode {
    eprintln!("error: {problem}\n\n{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        return usage("no command given");
    };
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let mut out_dir: Option<PathBuf> = None;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        if arg == "-o" || arg == "--out" {
            match it.next() {
                Some(dir) => out_dir = Some(PathBuf::from(dir)),
                None => return usage("`-o` needs a directory"),
            }
        } else if let Some(dir) = arg.strip_prefix("--out=") {
            out_dir = Some(PathBuf::from(dir));
        } else if arg.starts_with('-') && arg.len() > 1 {
            return usage(&format!("unknown option `{arg}`"));
        } else {
            files.push(PathBuf::from(arg));
        }
    }
    if files.is_empty() {
        return usage("no input file given");
    }
    if command != "proto" && out_dir.is_some() {
        return usage(&format!(
            "`-o` is only for `rpcgen proto`, not `rpcgen {command}`"
        ));
    }
    let roots: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    match command.as_str() {
        "check" | "proto" | "rust" => {}
        other => return usage(&format!("unknown command `{other}`")),
    }
    let model = match rpc_codegen::load_many(&roots) {
        Ok(model) => model,
        Err(diagnostics) => {
            eprint!("{}", diagnostics.render());
            return ExitCode::from(1);
        }
    };
    match command.as_str() {
        "check" => {
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
            ExitCode::SUCCESS
        }
        "proto" => {
            let Some(dir) = out_dir else {
                return usage("`rpcgen proto` needs `-o DIR`");
            };
            for file in rpc_codegen::proto::generate(&model) {
                let path = dir.join(&file.name);
                let written = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&path, &file.contents));
                if let Err(e) = written {
                    eprintln!("error: cannot write `{}`: {e}", path.display());
                    return ExitCode::from(2);
                }
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        _ => {
            print!("{}", rpc_codegen::rust::generate(&model));
            ExitCode::SUCCESS
        }
    }
}
