//! Writes `config/crd/portico.dev_ingresspolicies.yaml` from the Rust types.
//!
//! `crdgen` writes the file; `crdgen --check` exits 1 when the checked-in file differs.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    // CARGO_MANIFEST_DIR is crds/; the file lives at the workspace root.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(portico_crds::CRD_PATH);
    let want = portico_crds::crd_yaml();
    if check {
        return match std::fs::read_to_string(&path) {
            Ok(have) if have == want => ExitCode::SUCCESS,
            Ok(_) => {
                eprintln!("{} is stale: run `make crds`", path.display());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}; run `make crds`", path.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = std::fs::write(&path, want) {
        eprintln!("cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
