//! No input makes netc panic: random token soup and random mutations of the zoo's models go
//! through the whole front end, the summary and the printer. A panic fails the test with the
//! (shrunk) input. `PROPTEST_CASES` sets how many inputs each property tries (CI bounds it).
//!
//! What parses must also print to text that parses to the same tree.

use crate::golden::{files, root};
use netc::{front, summary};
use netc_grammar::{parse, print::print_module, SourceFile};
use proptest::prelude::*;

/// Tokens of the language and near-misses of them.
const TOKENS: &[&str] = &[
    "network",
    "block",
    "input",
    "conv",
    "depthwise",
    "dense",
    "maxpool",
    "avgpool",
    "global",
    "batchnorm",
    "dropout",
    "relu",
    "softmax",
    "loss",
    "softmax_cross_entropy",
    "concat",
    "add",
    "residual",
    "shortcut",
    "scale",
    "repeat",
    "as",
    "true",
    "false",
    "same",
    "valid",
    "stride",
    "pad",
    "groups",
    "dilation",
    "ceil",
    "bias",
    "x",
    "n",
    "c",
    "{",
    "}",
    "(",
    ")",
    "=",
    ",",
    ";",
    "\n",
    " ",
    "#",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "0",
    "1",
    "3",
    "3x3",
    "1x28x28",
    "64",
    "0.5",
    "1e-5",
    "99999999999999999999",
    "1e400",
    "é",
    "\t",
    "\r\n",
];

fn exercise(text: &str) {
    let file = SourceFile::new("fuzz.net", text);
    if let Ok(module) = parse(&file) {
        let printed = print_module(&module);
        let reparsed = parse(&SourceFile::new("printed.net", printed.clone()))
            .unwrap_or_else(|e| panic!("printed form does not parse: {e:?}\n{printed}"));
        assert_eq!(print_module(&reparsed), printed);
    }
    match front::run(&file, &[]) {
        Ok(network) => {
            summary::table(&network, true);
            summary::json(&network, true);
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty());
            netc_grammar::diagnostic::render(&diagnostics, &file);
        }
    }
}

fn zoo() -> Vec<String> {
    files("../models", "net")
        .iter()
        .map(|p| std::fs::read_to_string(root().join(p)).expect("model readable"))
        .collect()
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Duplicate(usize, usize),
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n % 40).min(bytes.len());
                bytes.drain(at.min(bytes.len())..end);
            }
            Edit::Insert(at, token) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, token.bytes());
            }
            Edit::Duplicate(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n % 80).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
    }
    // Cutting a multi-byte character in half makes text no reader would hand the front end.
    String::from_utf8_lossy(&bytes).into_owned()
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(a, t)| Edit::Insert(a, t)),
        (any::<usize>(), 0usize..80).prop_map(|(a, n)| Edit::Duplicate(a, n)),
    ]
}

proptest! {
    // Failures are shrunk and printed; the cases worth keeping become unit tests.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..120)) {
        exercise(&tokens.concat());
    }

    #[test]
    fn mutated_models_never_panic(model in any::<prop::sample::Index>(), edits in prop::collection::vec(edit(), 1..6)) {
        let models = zoo();
        let text = &models[model.index(models.len())];
        exercise(&apply(text, &edits));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        exercise(&text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for open in ["(", "{", "concat { {"] {
        let text = format!("network n {{ input 3\n dense {} }}", open.repeat(20_000));
        exercise(&text);
        assert!(front::run(&SourceFile::new("deep.net", text), &[]).is_err());
    }
}

#[test]
fn runaway_repetition_is_an_error() {
    let text = "block b(n) { repeat n { relu } }\nnetwork n { input 4\n repeat 1000 { b(1000) }\n dense 2\n loss softmax_cross_entropy }";
    let errors = front::run(&SourceFile::new("big.net", text), &[]).expect_err("too many layers");
    assert!(
        errors[0].message.contains("more than 100000 layers"),
        "{:?}",
        errors[0]
    );
}
