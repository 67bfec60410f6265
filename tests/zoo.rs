//! The model zoo: every `models/*.net` checks, its summary (table, expanded, JSON) and its
//! canonical parsed form match snapshots, its counts equal PyTorch's (`pytorch/reference.json`),
//! and printing its syntax tree and parsing the print gives the same tree.

use crate::golden::{files, netc, root, Golden};
use netc_grammar::{parse, print::print_module, SourceFile};

fn models() -> Vec<(String, String)> {
    files("../models", "net")
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (stem, p.to_string_lossy().into_owned())
        })
        .collect()
}

#[test]
fn summaries_and_parsed_forms_match_snapshots() {
    let mut golden = Golden::default();
    for (stem, path) in models() {
        for (suffix, extra) in [
            ("summary.txt", None),
            ("expanded.txt", Some("--expand")),
            ("summary.json", Some("--json")),
        ] {
            let mut args = vec!["summary", path.as_str()];
            args.extend(extra);
            let (status, stdout, stderr) = netc(&args);
            if status != 0 {
                golden.fail(format!("netc {} failed:\n{stderr}", args.join(" ")));
            }
            golden.check(format!("snapshots/{stem}.{suffix}").as_ref(), &stdout);
        }
        let (_, parsed, _) = netc(&["fmt", path.as_str()]);
        golden.check(format!("snapshots/{stem}.parsed.net").as_ref(), &parsed);
    }
    golden.finish();
}

#[test]
fn printing_then_parsing_gives_the_same_tree() {
    for (_, path) in models() {
        let text = std::fs::read_to_string(root().join(&path)).expect("model readable");
        let module = parse(&SourceFile::new(&path, text)).expect("model parses");
        let printed = print_module(&module);
        let reparsed =
            parse(&SourceFile::new("printed", printed.clone())).expect("printed form parses");
        assert_eq!(print_module(&reparsed), printed, "{path}");
    }
}

#[test]
fn counts_equal_pytorch() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("pytorch/reference.json")).expect("reference.json"),
    )
    .expect("reference.json is JSON");
    let mut golden = Golden::default();
    for (stem, path) in models() {
        let Some(expected) = reference.get(&stem) else {
            golden.fail(format!("pytorch/reference.json has no entry for {stem}"));
            continue;
        };
        let (_, stdout, _) = netc(&["summary", path.as_str(), "--json"]);
        let ours: serde_json::Value = serde_json::from_str(&stdout).expect("summary JSON");
        for key in ["params", "macs"] {
            if ours["totals"][key] != expected[key] {
                golden.fail(format!(
                    "{stem}: {key} {} but PyTorch has {}",
                    ours["totals"][key], expected[key]
                ));
            }
        }
    }
    golden.finish();
}

#[test]
fn googlenet_inception_3a_holds_the_papers_weights() {
    let (_, stdout, _) = netc(&["summary", "../models/googlenet.net", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("summary JSON");
    let i3a = summary["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["name"] == "i3a")
        .expect("a layer named i3a");
    // The paper's table: 159K parameters (in units of 1024, without biases) and 128M ops.
    assert_eq!(i3a["weights"], 163_328);
    assert_eq!(i3a["params"], 163_328 + 64 + 96 + 128 + 16 + 32 + 32);
    assert_eq!(i3a["macs"], 128_049_152);
}

#[test]
fn readme_zoo_table_lists_every_model_with_its_counts() {
    let readme = std::fs::read_to_string(root().join("../README.md")).expect("README.md");
    let mut golden = Golden::default();
    for (stem, path) in models() {
        let (_, stdout, _) = netc(&["summary", path.as_str(), "--json"]);
        let summary: serde_json::Value = serde_json::from_str(&stdout).expect("summary JSON");
        let count =
            |key: &str| netc::summary::thousands(summary["totals"][key].as_u64().expect("a count"));
        let input: Vec<String> = summary["input"]
            .as_array()
            .expect("input shape")
            .iter()
            .map(|e| e.to_string())
            .collect();
        let row = format!(
            "| `{stem}` | {} | {} | {} |",
            input.join("x"),
            count("params"),
            count("macs")
        );
        if !readme.contains(&row) {
            golden.fail(format!(
                "README.md's model table lacks the row starting `{row}`"
            ));
        }
    }
    golden.finish();
}
