//! Golden tests: every `testdata/<name>.yaml` is parsed, indexed and translated, and the parse
//! problems and the output are compared with `testdata/<name>.golden.yaml`.
//!
//! A file may start with a line such as
//! `# options: only_class=internal combine_classes=true platform_namespace=ops replicas=3`
//! (`platform_namespace=` alone unsets it). Run with `UPDATE_GOLDEN=1` to rewrite the goldens,
//! then read the diff: the goldens are the reviewed statement of what the translator does.
//! `GOLDEN_ONLY=<prefix>` limits a run (checking or updating) to the files whose names start
//! with the prefix, e.g. `GOLDEN_ONLY=ingress-`.

use std::fs;
use std::path::{Path, PathBuf};

use portico_translate::{Index, Options, Output, ParseProblem, parse_manifests, translate};
use serde::Serialize;

const GOLDEN_SUFFIX: &str = ".golden.yaml";

#[derive(Serialize)]
struct Golden<'a> {
    problems: &'a [ParseProblem],
    output: &'a Output,
}

fn read_options(text: &str) -> Result<Options, String> {
    let mut options = Options::default();
    let Some(header) = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# options:"))
    else {
        return Ok(options);
    };
    for setting in header.split_whitespace() {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("option {setting:?} is not key=value"))?;
        match key {
            "only_class" => options.only_class = Some(value.to_owned()),
            "combine_classes" => {
                options.combine_classes =
                    value.parse().map_err(|e| format!("combine_classes: {e}"))?;
            }
            "platform_namespace" => {
                options.platform_namespace = (!value.is_empty()).then(|| value.to_owned());
            }
            "replicas" => {
                options.replicas = value.parse().map_err(|e| format!("replicas: {e}"))?;
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(options)
}

/// The golden text for one input.
fn render(text: &str) -> Result<String, String> {
    let options = read_options(text)?;
    let parsed = parse_manifests(text, "default");
    let index = Index::from_objects(parsed.objects);
    let output = translate(&index, &options);
    serde_yaml_ng::to_string(&Golden {
        problems: &parsed.problems,
        output: &output,
    })
    .map_err(|e| format!("cannot serialise the output: {e}"))
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

#[test]
fn golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let only = std::env::var("GOLDEN_ONLY").unwrap_or_default();
    let mut names: Vec<String> = fs::read_dir(testdata())
        .expect("testdata directory")
        .map(|entry| entry.expect("testdata entry").file_name())
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name.starts_with(&only))
        .collect();
    names.sort();

    let mut failures = Vec::new();
    let mut checked = 0;
    for name in &names {
        if let Some(input) = name.strip_suffix(GOLDEN_SUFFIX) {
            if !names.contains(&format!("{input}.yaml")) {
                if update {
                    fs::remove_file(testdata().join(name)).expect("remove stale golden");
                    eprintln!("removed {name}: its input {input}.yaml is gone");
                } else {
                    failures.push(format!("{name}: no input {input}.yaml"));
                }
            }
            continue;
        }
        let stem = name.strip_suffix(".yaml").expect("a .yaml name");
        let golden_name = format!("{stem}{GOLDEN_SUFFIX}");
        let golden_path = testdata().join(&golden_name);
        let text = fs::read_to_string(testdata().join(name)).expect("read input");
        let actual = match render(&text) {
            Ok(actual) => actual,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        checked += 1;
        if update {
            if fs::read_to_string(&golden_path).ok().as_deref() != Some(actual.as_str()) {
                fs::write(&golden_path, &actual).expect("write golden");
                eprintln!("updated {golden_name}");
            }
            continue;
        }
        let Ok(expected) = fs::read_to_string(&golden_path) else {
            failures.push(format!(
                "{name}: no {golden_name}; run with UPDATE_GOLDEN=1 to create it"
            ));
            continue;
        };
        if expected != actual {
            let diff = similar::TextDiff::from_lines(&expected, &actual);
            failures.push(format!(
                "{golden_name} differs from the output (- golden, + actual):\n{}",
                diff.unified_diff()
                    .context_radius(3)
                    .header(&golden_name, "actual")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden files failed; if the new output is right, run \
         `UPDATE_GOLDEN=1 cargo test -p portico-translate --test golden` and review the diff\n\n{}",
        failures.len(),
        names.len(),
        failures.join("\n\n")
    );
    assert!(checked > 0, "no testdata/*.yaml inputs found");
}

#[test]
fn options_header() {
    let options = read_options(
        "# options: only_class=a combine_classes=true platform_namespace= replicas=3\nkind: x\n",
    )
    .unwrap();
    assert_eq!(
        options,
        Options {
            only_class: Some("a".to_owned()),
            combine_classes: true,
            platform_namespace: None,
            replicas: 3,
            ..Options::default()
        }
    );
    assert_eq!(read_options("kind: x\n").unwrap(), Options::default());
    assert!(read_options("# options: nope=1\n").is_err());
}
