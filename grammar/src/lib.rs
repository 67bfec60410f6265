//! The netc language: the pest grammar (`netc.pest`), the syntax tree with spans, the parser,
//! a printer back to canonical source, and the diagnostics every later stage reports with.

pub mod ast;
pub mod diagnostic;
pub mod parse;
pub mod print;

pub use diagnostic::{Diagnostic, SourceFile};
pub use parse::{parse, parse_value};
