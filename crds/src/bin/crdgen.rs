//! Writes the generated files under `config/`: the CRDs (`config/crd/*.yaml`) from the Rust
//! types and the install bundle `config/install.yaml`.
//!
//! `crdgen` writes the files; `crdgen --check` exits 1 when a checked-in file differs.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    // CARGO_MANIFEST_DIR is crds/; the files live under the workspace root.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = match portico_crds::generated_files(&root) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("cannot assemble {}: {e}", portico_crds::INSTALL_PATH);
            return ExitCode::FAILURE;
        }
    };
    let mut status = ExitCode::SUCCESS;
    for (relative, want) in files {
        let path = root.join(relative);
        if check {
            match std::fs::read_to_string(&path) {
                Ok(have) if have == want => {}
                Ok(_) => {
                    eprintln!("{} is stale: run `make manifests`", path.display());
                    status = ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("cannot read {}: {e}; run `make manifests`", path.display());
                    status = ExitCode::FAILURE;
                }
            }
            continue;
        }
        if let Err(e) = std::fs::write(&path, want) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {relative}");
    }
    status
}
