//! Text to syntax tree: runs the pest grammar (`netc.pest`), builds the AST with spans, and turns
//! pest's errors into diagnostics.
//!
//! pest stops at the first error. To report several in one run, the parser blanks out the line
//! that failed (keeping its braces, so nesting stays balanced) and parses again, until the text
//! parses or the next error would only be an echo of an earlier one.

use crate::ast::*;
use crate::diagnostic::{nearest, Diagnostic, SourceFile};
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;
use pest_derive::Parser;
use std::sync::OnceLock;

#[derive(Parser)]
#[grammar = "../netc.pest"]
struct NetcParser;

/// Nesting deeper than this is refused before pest sees it: the grammar is recursive, and a
/// file of ten thousand `(` must be an error, not a stack overflow.
pub const MAX_NESTING: usize = 64;

/// Syntax errors reported in one run at most; later ones are usually echoes.
const MAX_SYNTAX_ERRORS: usize = 10;

/// Parses a whole file, or returns every syntax error found.
pub fn parse(file: &SourceFile) -> Result<Module, Vec<Diagnostic>> {
    if let Some(error) = check_nesting(&file.text) {
        return Err(vec![error]);
    }
    let mut text = file.text.clone();
    let mut errors = Vec::new();
    let mut blanked_lines: Vec<usize> = Vec::new();
    loop {
        match NetcParser::parse(Rule::file, &text) {
            Ok(mut pairs) if errors.is_empty() => {
                let file_pair = pairs.next().expect("the file rule always yields one pair");
                return build_module(file_pair).map_err(|e| vec![e]);
            }
            Ok(_) => return Err(errors),
            Err(error) => {
                let (diagnostic, offset) = syntax_error(&error, &text);
                let line = line_of(&text, offset);
                if blanked_lines.contains(&line) {
                    return Err(errors);
                }
                // Past an unclosed `(` every line is read as more arguments: all later errors
                // would be echoes of this one.
                let unclosed_call = diagnostic.message == UNCLOSED_PAREN;
                errors.push(diagnostic);
                if unclosed_call || errors.len() == MAX_SYNTAX_ERRORS {
                    return Err(errors);
                }
                blanked_lines.push(line);
                if !blank_line(&mut text, offset) {
                    return Err(errors);
                }
            }
        }
    }
}

/// Parses a lone value (`10`, `3x32x32`, `same`), as given on the command line.
pub fn parse_value(file: &SourceFile) -> Result<Expr, Diagnostic> {
    match NetcParser::parse(Rule::value_text, &file.text) {
        Ok(mut pairs) => {
            let text = pairs.next().expect("value_text yields one pair");
            build_expr(text.into_inner().next().expect("a value"))
        }
        Err(error) => Err(syntax_error(&error, &file.text).0),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count()
}

/// Replaces the line holding `offset` with spaces, keeping `{` and `}`, and byte for byte, so
/// offsets in the rest of the text stay those of the file. Returns false when the line has
/// unbalanced parentheses: blanking it would make the next error an echo of this one.
fn blank_line(text: &mut String, offset: usize) -> bool {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[start..end];
    if line.matches('(').count() != line.matches(')').count() {
        return false;
    }
    let code_end = line.find('#').unwrap_or(line.len());
    let blanked: String = line
        .char_indices()
        .map(|(i, c)| {
            if i < code_end && (c == '{' || c == '}') {
                c.to_string()
            } else {
                " ".repeat(c.len_utf8())
            }
        })
        .collect();
    text.replace_range(start..end, &blanked);
    true
}

fn check_nesting(text: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    let mut in_comment = false;
    for (i, c) in text.char_indices() {
        match c {
            '\n' => in_comment = false,
            '#' => in_comment = true,
            '{' | '(' if !in_comment => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(
                        Diagnostic::error(
                            format!("nesting deeper than {MAX_NESTING} levels"),
                            Span::new(i, i + 1),
                            "too deep",
                        )
                        .with_help("flatten the structure, or move parts of it into blocks"),
                    );
                }
            }
            '}' | ')' if !in_comment => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The message of the error for a call whose `(` is never closed.
const UNCLOSED_PAREN: &str = "unclosed `(`";

/// A pest error as a diagnostic, and the byte offset it points at.
fn syntax_error(error: &pest::error::Error<Rule>, text: &str) -> (Diagnostic, usize) {
    let (start, end) = match error.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    let found = describe_found(text, start);
    let end = if end > start { end } else { start + found.1 };
    let here = Span::new(start, end.min(text.len()));
    let parens = unmatched(text, '(', ')');
    // A `(` before the error that is never closed is the error: where pest gave up, after
    // reading what followed as arguments, says nothing more.
    if let Some(&open) = parens.unclosed.iter().rev().find(|&&o| o < start) {
        let mut diagnostic =
            Diagnostic::error(UNCLOSED_PAREN, Span::new(open, open + 1), "never closed")
                .with_help("end the arguments with `)`");
        if line_of(text, open) != line_of(text, start) {
            diagnostic = diagnostic.with_note(
                "inside parentheses a newline does not end the statement, so the lines after \
                 the `(` were read as more arguments",
            );
        }
        return (diagnostic, start);
    }
    if found.1 == 0 && start >= text.len() {
        if let Some(&open) = unmatched(text, '{', '}').unclosed.first() {
            let diagnostic =
                Diagnostic::error("unclosed `{`", Span::new(open, open + 1), "never closed")
                    .with_secondary(Span::new(text.len(), text.len()), "the file ends here")
                    .with_help("add the missing `}`");
            return (diagnostic, start);
        }
    }
    let expected = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => describe_expected(positives),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let mut diagnostic = Diagnostic::error(
        format!("expected {expected}, found {}", found.0),
        here,
        format!("expected {expected}"),
    );
    let positives = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.as_slice(),
        ErrorVariant::CustomError { .. } => &[],
    };
    if let Some(help) = syntax_hint(text, start, positives, &parens) {
        diagnostic = diagnostic.with_help(help);
    }
    (diagnostic, start)
}

/// Brackets of one kind without a partner, outside comments, by byte offset.
struct Unmatched {
    /// Openers that no closer closes.
    unclosed: Vec<usize>,
    /// Closers that close no opener.
    stray: Vec<usize>,
}

fn unmatched(text: &str, open: char, close: char) -> Unmatched {
    let mut result = Unmatched {
        unclosed: Vec::new(),
        stray: Vec::new(),
    };
    let mut in_comment = false;
    for (i, c) in text.char_indices() {
        match c {
            '\n' => in_comment = false,
            '#' => in_comment = true,
            _ if in_comment => {}
            c if c == open => result.unclosed.push(i),
            c if c == close => {
                let opener = result.unclosed.pop();
                if opener.is_none() {
                    result.stray.push(i);
                }
            }
            _ => {}
        }
    }
    result
}

/// What stands at `offset`, for "found ...", and its length in bytes.
fn describe_found(text: &str, offset: usize) -> (String, usize) {
    let rest = &text[offset.min(text.len())..];
    match rest.chars().next() {
        None => ("the end of the file".into(), 0),
        Some('\n') | Some('\r') => ("the end of the line".into(), 0),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            (format!("`{word}`"), word.len())
        }
        Some(c) => (format!("`{c}`"), c.len_utf8()),
    }
}

/// Whether `word` is one of the grammar's keywords.
fn is_keyword(word: &str) -> bool {
    NetcParser::parse(Rule::keyword, word).is_ok_and(|pairs| pairs.as_str() == word)
}

fn syntax_hint(
    text: &str,
    offset: usize,
    positives: &[Rule],
    parens: &Unmatched,
) -> Option<String> {
    let offset = offset.min(text.len());
    let rest = &text[offset..];
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_before = &text[line_start..offset];
    let is_word_char = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    let word: String = rest.chars().take_while(is_word_char).collect();
    // The number-like token the error falls in, e.g. `0.5a` failing at its `.`.
    let token_start = line_before
        .trim_end_matches(|c: char| is_word_char(&c) || c == '.')
        .len();
    let token: String = line_before[token_start..]
        .chars()
        .chain(rest.chars().take_while(|c| is_word_char(c) || *c == '.'))
        .collect();
    let is_value = NetcParser::parse(Rule::arg, &token).is_ok_and(|p| p.as_str() == token);
    if token.starts_with(|c: char| c.is_ascii_digit()) && !is_value {
        if token.ends_with('x') && line_before.ends_with('x') {
            return Some("extents need a number after each `x`, as in `3x3`".into());
        }
        if token.contains(|c: char| c.is_ascii_alphabetic()) {
            return Some(format!(
                "`{token}` is not a number: put a space between a number and a word"
            ));
        }
    }
    let expects_definition = positives.iter().any(|r| {
        matches!(
            r,
            Rule::file | Rule::definition | Rule::def_keyword | Rule::kw_block | Rule::kw_network
        )
    });
    let hint = match rest.chars().next()? {
        ',' if !line_before.contains('(') => {
            "arguments of a layer are separated by spaces; commas go inside `name(...)` calls"
        }
        ':' => "options are written `name=value`",
        ')' if parens.stray.contains(&offset) => "this `)` closes no `(`: remove it",
        '}' if unmatched(text, '{', '}').stray.contains(&offset) => {
            "this `}` closes no `{`: remove it, or look for a missing `{` above"
        }
        '×' => "write extents with the letter `x`, as in `3x3`",
        '"' | '\'' | '“' | '”' | '‘' | '’' => {
            "netc has no strings: write words bare, as in `pad=same`"
        }
        c if !c.is_ascii() => "outside comments, netc source is ASCII",
        _ if positives.contains(&Rule::name) && is_keyword(&word) => {
            return Some(format!("`{word}` is a keyword; choose another name"))
        }
        _ if expects_definition => {
            if let Some(keyword) = nearest(&word, ["block", "network"]) {
                return Some(format!("did you mean `{keyword}`?"));
            }
            if text[..offset].contains('}') {
                "only `block` and `network` definitions stand outside braces: is a `}` above \
                 closing a definition too early?"
            } else {
                "a file holds definitions: `block NAME(PARAMS) { ... }` and \
                 `network NAME { ... }`"
            }
        }
        _ if line_before.trim_end().ends_with('=') => {
            "an option's value is a number, a word like `same`, or extents like `3x3`"
        }
        c if c.is_ascii_digit() && line_before.trim().is_empty() => {
            "a statement starts with a layer name, e.g. `conv 3x3 64`"
        }
        _ => return None,
    };
    Some(hint.to_string())
}

fn describe_expected(positives: &[Rule]) -> String {
    let mut words: Vec<&str> = positives
        .iter()
        .filter_map(|r| rule_description(*r))
        .collect();
    words.sort_unstable();
    words.dedup();
    match words.as_slice() {
        [] => "something else".into(),
        [one] => (*one).into(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn rule_description(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::file | Rule::definition | Rule::def_keyword | Rule::kw_block | Rule::kw_network => {
            "a `block` or `network` definition"
        }
        Rule::EOI => "the end of the file",
        Rule::name => "a name",
        Rule::param_list => "a parameter list",
        Rule::param => "a parameter",
        Rule::body | Rule::branches => "`{`",
        Rule::stmt | Rule::layer_stmt | Rule::call => "a statement",
        Rule::alias | Rule::kw_as => "`as`",
        Rule::arg | Rule::option => "an argument",
        Rule::call_args => "`(`",
        Rule::expr | Rule::float | Rule::int | Rule::boolean | Rule::dim_int => "a value",
        Rule::dims | Rule::dims_compact | Rule::dims_spaced | Rule::paren_dim => {
            "extents like `3x3`"
        }
        Rule::neg | Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::floor_div | Rule::rem => {
            "an operator"
        }
        Rule::kw_shortcut => "`shortcut`",
        Rule::kw_concat | Rule::kw_add | Rule::kw_residual | Rule::kw_scale | Rule::kw_repeat => {
            "a statement"
        }
        _ => return None,
    })
}

/// A pair's span without the spaces and comment that pest's implicit whitespace lets it end
/// with, so underlines stop at the last character written.
fn span_of(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    let mut text = s.as_str();
    loop {
        text = text.trim_end_matches([' ', '\t', '\r']);
        // `#` only ever starts a comment: the language has no strings.
        let last_line = text.rfind('\n').map_or(0, |i| i + 1);
        match text[last_line..].find('#') {
            Some(hash) => text = &text[..last_line + hash],
            None => break,
        }
    }
    Span::new(s.start(), s.start() + text.len())
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span_of(&pair),
    }
}

fn build_module(pair: Pair<Rule>) -> Result<Module, Diagnostic> {
    let mut module = Module::default();
    for p in pair.into_inner() {
        if p.as_rule() == Rule::definition {
            module.definitions.push(build_definition(p)?);
        }
    }
    Ok(module)
}

fn build_definition(pair: Pair<Rule>) -> Result<Definition, Diagnostic> {
    let span = span_of(&pair);
    let mut inner = pair.into_inner();
    let keyword = inner.next().expect("definition starts with a keyword");
    let kind = match keyword.as_str() {
        "block" => DefinitionKind::Block,
        _ => DefinitionKind::Network,
    };
    let name = ident(inner.next().expect("definition has a name"));
    let mut params = Vec::new();
    let mut body = None;
    for p in inner {
        match p.as_rule() {
            Rule::param_list => {
                for param in p.into_inner() {
                    let mut parts = param.into_inner();
                    let name = ident(parts.next().expect("param has a name"));
                    let default = parts.next().map(build_expr).transpose()?;
                    params.push(Param { name, default });
                }
            }
            Rule::body => body = Some(build_body(p)?),
            _ => unreachable!("grammar: unexpected {:?} in definition", p.as_rule()),
        }
    }
    Ok(Definition {
        kind,
        name,
        params,
        body: body.expect("definition has a body"),
        span,
    })
}

fn build_body(pair: Pair<Rule>) -> Result<Body, Diagnostic> {
    let span = span_of(&pair);
    let stmts = pair
        .into_inner()
        .map(build_stmt)
        .collect::<Result<_, _>>()?;
    Ok(Body { stmts, span })
}

fn build_bodies(pair: Pair<Rule>) -> Result<Vec<Body>, Diagnostic> {
    pair.into_inner().map(build_body).collect()
}

fn build_stmt(pair: Pair<Rule>) -> Result<Stmt, Diagnostic> {
    let span = span_of(&pair);
    let mut inner = pair.into_inner();
    let main = inner.next().expect("statement has a kind");
    let alias = inner
        .next()
        .map(|a| ident(a.into_inner().nth(1).expect("alias has a name")));
    let rule = main.as_rule();
    let kind = if rule == Rule::layer_stmt {
        build_layer(main)?
    } else {
        // Every other statement opens with its keyword.
        let mut parts = main.into_inner().skip(1);
        let mut next = || {
            parts
                .next()
                .expect("grammar guarantees the statement's parts")
        };
        match rule {
            Rule::concat_stmt => StmtKind::Concat {
                branches: build_bodies(next())?,
            },
            Rule::add_stmt => StmtKind::Add {
                branches: build_bodies(next())?,
            },
            Rule::residual_stmt => {
                let body = build_body(next())?;
                let shortcut = parts.nth(1).map(build_body).transpose()?;
                StmtKind::Residual { body, shortcut }
            }
            Rule::scale_stmt => StmtKind::Scale {
                body: build_body(next())?,
            },
            Rule::repeat_stmt => StmtKind::Repeat {
                count: build_expr(next())?,
                body: build_body(next())?,
            },
            other => unreachable!("grammar: unexpected statement rule {other:?}"),
        }
    };
    Ok(Stmt { kind, alias, span })
}

fn build_layer(pair: Pair<Rule>) -> Result<StmtKind, Diagnostic> {
    let mut inner = pair.into_inner();
    let head = inner.next().expect("layer statement has a name");
    let mut args = Vec::new();
    let callee = if head.as_rule() == Rule::call {
        let mut call = head.into_inner();
        let callee = ident(call.next().expect("call has a name"));
        for arg in call.next().expect("call has arguments").into_inner() {
            args.push(build_arg(arg)?);
        }
        callee
    } else {
        ident(head)
    };
    for arg in inner {
        args.push(build_arg(arg)?);
    }
    Ok(StmtKind::Layer { callee, args })
}

fn build_arg(pair: Pair<Rule>) -> Result<Arg, Diagnostic> {
    let span = span_of(&pair);
    let inner = pair.into_inner().next().expect("argument has content");
    if inner.as_rule() == Rule::option {
        let mut parts = inner.into_inner();
        let name = ident(parts.next().expect("option has a name"));
        let value = build_expr(parts.next().expect("option has a value"))?;
        Ok(Arg {
            name: Some(name),
            value,
            span,
        })
    } else {
        Ok(Arg {
            name: None,
            value: build_expr(inner)?,
            span,
        })
    }
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::floor_div, Assoc::Left)
                | Op::infix(Rule::rem, Assoc::Left))
            .op(Op::prefix(Rule::neg))
    })
}

/// Builds an expression from an `expr`, `dims` or primary pair.
fn build_expr(pair: Pair<Rule>) -> Result<Expr, Diagnostic> {
    let span = span_of(&pair);
    let kind = match pair.as_rule() {
        Rule::expr => {
            return pratt()
                .map_primary(build_expr)
                .map_prefix(|op, operand| {
                    let operand = operand?;
                    Ok(Expr {
                        span: span_of(&op).to(operand.span),
                        kind: ExprKind::Neg(Box::new(operand)),
                    })
                })
                .map_infix(|lhs, op, rhs| {
                    let (lhs, rhs) = (lhs?, rhs?);
                    let op = match op.as_rule() {
                        Rule::add => BinaryOp::Add,
                        Rule::sub => BinaryOp::Sub,
                        Rule::mul => BinaryOp::Mul,
                        Rule::div => BinaryOp::Div,
                        Rule::floor_div => BinaryOp::FloorDiv,
                        Rule::rem => BinaryOp::Rem,
                        other => unreachable!("grammar: unexpected operator {other:?}"),
                    };
                    Ok(Expr {
                        span: lhs.span.to(rhs.span),
                        kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                    })
                })
                .parse(pair.into_inner())
        }
        Rule::dims => {
            let form = pair
                .into_inner()
                .next()
                .expect("dims are compact or spaced");
            ExprKind::Dims(
                form.into_inner()
                    .filter(|p| p.as_rule() != Rule::x_word)
                    .map(build_expr)
                    .collect::<Result<_, _>>()?,
            )
        }
        Rule::paren_dim => {
            return build_expr(pair.into_inner().next().expect("parenthesised extent"));
        }
        Rule::int | Rule::dim_int => match pair.as_str().parse::<i64>() {
            Ok(v) => ExprKind::Int(v),
            Err(_) => {
                return Err(Diagnostic::error(
                    "integer literal too large",
                    span,
                    format!("larger than {}", i64::MAX),
                ))
            }
        },
        Rule::float => match pair.as_str().parse::<f64>() {
            Ok(v) if v.is_finite() => ExprKind::Float(v),
            _ => {
                return Err(Diagnostic::error(
                    "number out of range",
                    span,
                    "not a finite number",
                ))
            }
        },
        Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
        Rule::name => ExprKind::Name(pair.as_str().to_string()),
        other => unreachable!("grammar: unexpected expression rule {other:?}"),
    };
    Ok(Expr { kind, span })
}
