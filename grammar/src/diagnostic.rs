//! Errors meant for users: a message, spans in the source with labels, and hints, rendered the
//! way rustc renders them (`file:line:col`, the line, the span underlined, `= help: ...`).
//!
//! These are values, never panics: every stage returns them, and the command line prints them.

use crate::ast::Span;
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor, Chars, Config};

/// One source file: its name as the user gave it, and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// The byte offset of a 1-based line and column (in characters), clamped to the text: the
    /// inverse of `line_col`, for errors located by line and column (YAML's).
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let line_start = self
            .text
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum::<usize>();
        let rest = &self.text[line_start..];
        let line_text = rest.split('\n').next().unwrap_or("");
        line_start
            + line_text
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(line_text.len(), |(i, _)| i)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    /// Where the error is; underlined with `^`.
    pub primary: Label,
    /// Related places (the other side of a mismatch, a definition); underlined with `-`.
    pub secondary: Vec<Label>,
    /// Lines printed as `= help: ...` / `= note: ...`.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            primary: Label {
                span,
                message: label.into(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: label.into(),
        });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.notes.push(format!("help: {}", help.into()));
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(format!("note: {}", note.into()));
        self
    }

    fn to_codespan(&self, file: &SourceFile) -> CsDiagnostic<()> {
        let clamp = |span: Span| {
            let end = span.end.min(file.text.len());
            span.start.min(end)..end
        };
        let mut labels = vec![
            CsLabel::primary((), clamp(self.primary.span)).with_message(&self.primary.message)
        ];
        labels.extend(
            self.secondary
                .iter()
                .map(|l| CsLabel::secondary((), clamp(l.span)).with_message(&l.message)),
        );
        CsDiagnostic::error()
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(self.notes.clone())
    }
}

fn config() -> Config {
    Config {
        chars: Chars::ascii(),
        ..Config::default()
    }
}

/// Renders diagnostics as plain text, as tests compare them.
pub fn render(diagnostics: &[Diagnostic], file: &SourceFile) -> String {
    let mut out = termcolor::NoColor::new(Vec::new());
    emit(diagnostics, file, &mut out);
    String::from_utf8_lossy(&out.into_inner()).into_owned()
}

/// Writes diagnostics to a terminal-like stream (in colour where it supports colour).
pub fn emit(diagnostics: &[Diagnostic], file: &SourceFile, out: &mut dyn termcolor::WriteColor) {
    let files = SimpleFile::new(file.name.as_str(), file.text.as_str());
    for diagnostic in diagnostics {
        // Writing to a closed stream is the only failure; there is nobody left to tell.
        let _ = term::emit(out, &config(), &files, &diagnostic.to_codespan(file));
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo, or else
/// one that `word` starts with or that starts with `word` (`padding` for `pad`).
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    /// Shorter prefixes match too much to mean anything.
    const MIN_PREFIX: usize = 3;
    let limit = (word.chars().count() / 3).max(1) + 1;
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let typo = candidates
        .iter()
        .map(|&c| (strsim::osa_distance(word, c), c))
        .filter(|&(d, c)| d <= limit && d < c.chars().count())
        // Ties go to the alphabetically first, so callers may pass candidates in any order.
        .min_by_key(|&(d, c)| (d, c))
        .map(|(_, c)| c);
    typo.or_else(|| {
        candidates
            .into_iter()
            .filter(|c| {
                let (short, long) = if c.len() < word.len() {
                    (*c, word)
                } else {
                    (word, *c)
                };
                short.len() >= MIN_PREFIX && long.starts_with(short)
            })
            .min_by_key(|c| (c.len().abs_diff(word.len()), *c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_and_ignores_strangers() {
        let layers = ["conv", "dense", "relu", "maxpool", "avgpool"];
        assert_eq!(nearest("cnov", layers), Some("conv"));
        assert_eq!(nearest("maxpol", layers), Some("maxpool"));
        assert_eq!(nearest("transformer", layers), None);
        assert_eq!(nearest("padding", ["stride", "pad"]), Some("pad"));
        assert_eq!(nearest("kernel_size", ["kernel", "stride"]), Some("kernel"));
    }

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new("x", "ab\n  é c");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(3), (2, 1));
        assert_eq!(f.line_col(8), (2, 5));
    }
}
