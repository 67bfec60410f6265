//! The front end: `.net` text to a checked, elaborated network with every shape known.
//! The stages run in the order `run` lists them; each reports every error it can find.

pub mod args;
pub mod elaborate;
pub mod layers;
pub mod resolve;
pub mod shape;
pub mod value;

pub use elaborate::{Network, Node, NodeKind};

use netc_grammar::{Diagnostic, SourceFile};

/// Parses, checks and elaborates a file, with network parameters set by `overrides`.
pub fn run(
    file: &SourceFile,
    overrides: &[(String, value::Value)],
) -> Result<Network, Vec<Diagnostic>> {
    let module = netc_grammar::parse(file)?;
    let resolved = resolve::resolve(&module)?;
    elaborate::elaborate(&resolved, overrides)
}
