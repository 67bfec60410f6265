//! Matching a call's arguments to what the callee takes — for built-in layers and user blocks
//! alike — and reading the evaluated values back with the types each parameter needs.
//!
//! Matching needs no values, so it runs once over every definition before anything is
//! evaluated: unknown options and missing arguments are reported even in blocks never called.

use super::value::{eval, Scope, Value};
use netc_grammar::ast::{Arg, Span};
use netc_grammar::diagnostic::{nearest, Diagnostic};

/// What a callee takes, in order.
pub struct Signature<'a> {
    /// "layer `conv`" or "block `inception`", for messages.
    pub callee: String,
    pub params: Vec<SignatureParam<'a>>,
}

pub struct SignatureParam<'a> {
    pub name: &'a str,
    /// May be given without its name, in order.
    pub positional: bool,
    pub required: bool,
}

/// For each parameter of the signature, the argument that sets it, if any.
pub fn match_args<'a>(
    signature: &Signature,
    args: &'a [Arg],
    call_span: Span,
) -> Result<Vec<Option<&'a Arg>>, Vec<Diagnostic>> {
    let mut slots: Vec<Option<&Arg>> = vec![None; signature.params.len()];
    let mut errors = Vec::new();
    let positional: Vec<usize> = (0..signature.params.len())
        .filter(|&i| signature.params[i].positional)
        .collect();
    let mut next_positional = 0;
    for arg in args {
        let index = match &arg.name {
            None => {
                // Positional arguments skip the slots already set by name.
                while next_positional < positional.len()
                    && slots[positional[next_positional]].is_some()
                {
                    next_positional += 1;
                }
                match positional.get(next_positional) {
                    Some(&i) => i,
                    None => {
                        errors.push(too_many_positionals(signature, arg));
                        continue;
                    }
                }
            }
            Some(name) => match signature.params.iter().position(|p| p.name == name.name) {
                Some(i) => i,
                None => {
                    errors.push(unknown_option(signature, &name.name, name.span));
                    continue;
                }
            },
        };
        if let Some(earlier) = slots[index] {
            errors.push(
                Diagnostic::error(
                    format!(
                        "`{}` is given twice to {}",
                        signature.params[index].name, signature.callee
                    ),
                    arg.span,
                    "given again here",
                )
                .with_secondary(earlier.span, "first given here"),
            );
            continue;
        }
        slots[index] = Some(arg);
    }
    for (param, slot) in signature.params.iter().zip(&slots) {
        if param.required && slot.is_none() {
            errors.push(
                Diagnostic::error(
                    format!("{} needs `{}`", signature.callee, param.name),
                    call_span,
                    format!("`{}` missing", param.name),
                )
                .with_help(usage(signature)),
            );
        }
    }
    if errors.is_empty() {
        Ok(slots)
    } else {
        Err(errors)
    }
}

/// `usage: conv KERNEL CHANNELS [stride=..] ...`
pub fn usage(signature: &Signature) -> String {
    let parts: Vec<String> = signature
        .params
        .iter()
        .map(|p| match (p.positional, p.required) {
            (true, true) => p.name.to_uppercase(),
            (true, false) => format!("[{}]", p.name.to_uppercase()),
            (false, _) => format!("[{}=..]", p.name),
        })
        .collect();
    let name = signature
        .callee
        .split('`')
        .nth(1)
        .unwrap_or(&signature.callee);
    std::iter::once(format!("usage: {name}"))
        .chain(parts)
        .collect::<Vec<_>>()
        .join(" ")
}

fn too_many_positionals(signature: &Signature, arg: &Arg) -> Diagnostic {
    let names: Vec<&str> = signature
        .params
        .iter()
        .filter(|p| p.positional)
        .map(|p| p.name)
        .collect();
    let takes = match names.len() {
        0 if signature.params.is_empty() => "no arguments".to_string(),
        0 => "no arguments without a name".to_string(),
        1 => format!("one argument without a name ({})", names[0]),
        n => format!("{n} arguments without a name ({})", names.join(", ")),
    };
    Diagnostic::error(
        format!("too many arguments for {}", signature.callee),
        arg.span,
        "unexpected argument",
    )
    .with_note(format!("{} takes {takes}", signature.callee))
    .with_help(usage(signature))
}

fn unknown_option(signature: &Signature, name: &str, span: Span) -> Diagnostic {
    let diagnostic = Diagnostic::error(
        format!("{} has no option `{name}`", signature.callee),
        span,
        "unknown option",
    );
    match nearest(name, signature.params.iter().map(|p| p.name)) {
        Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
        None => diagnostic.with_help(usage(signature)),
    }
}

/// A layer's arguments, evaluated, with typed accessors that report bad values.
pub struct BoundArgs {
    /// `layer `conv``, for messages.
    pub callee: String,
    /// Parameter name, evaluated value and where it was written, for arguments given.
    pub given: Vec<(&'static str, Value, Span)>,
    /// The statement, where a missing argument's error points.
    pub span: Span,
    /// Parameter names in scope, so a misspelt one is recognised in a bad value.
    pub scope: Scope,
}

impl BoundArgs {
    pub fn evaluate(
        callee: String,
        names: &[&'static str],
        slots: &[Option<&Arg>],
        scope: &Scope,
        span: Span,
    ) -> Result<BoundArgs, Diagnostic> {
        let mut given = Vec::new();
        for (name, slot) in names.iter().zip(slots) {
            if let Some(arg) = slot {
                given.push((*name, eval(&arg.value, scope)?, arg.value.span));
            }
        }
        Ok(BoundArgs {
            callee,
            given,
            span,
            scope: scope.clone(),
        })
    }

    pub fn get(&self, name: &str) -> Option<(&Value, Span)> {
        self.given
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, s)| (v, *s))
    }

    /// The error for a value of the wrong kind; a stray word gets a "did you mean".
    pub fn wrong(&self, name: &str, expected: &str, value: &Value, span: Span) -> Diagnostic {
        if let Value::Word(word) = value {
            if self.scope.get(word).is_none() && self.scope.nearest(word).is_some() {
                return self.scope.undefined(word, span);
            }
        }
        Diagnostic::error(
            format!(
                "`{name}` of {} must be {expected}, found {}",
                self.callee,
                value.describe()
            ),
            span,
            format!("expected {expected}"),
        )
    }

    /// A whole number at least `min`; `default` when not given.
    pub fn int(&self, name: &str, default: u64, min: u64) -> Result<u64, Diagnostic> {
        let Some((value, span)) = self.get(name) else {
            return Ok(default);
        };
        self.int_value(name, value, span, min)
    }

    pub fn int_value(
        &self,
        name: &str,
        value: &Value,
        span: Span,
        min: u64,
    ) -> Result<u64, Diagnostic> {
        let expected = format!("a whole number of at least {min}");
        match value.as_int() {
            Some(v) if v >= 0 && v as u64 >= min => Ok(v as u64),
            Some(_) => Err(self.wrong(name, &expected, value, span)),
            None if matches!(value, Value::Float(_)) => Err(self
                .wrong(name, &expected, value, span)
                .with_help("use `//` for floor division")),
            None => Err(self.wrong(name, &expected, value, span)),
        }
    }

    /// A number in `range` (inclusive bounds as given by `lo_inclusive`/`hi_inclusive`).
    pub fn float(
        &self,
        name: &str,
        default: f64,
        (lo, lo_inclusive): (f64, bool),
        (hi, hi_inclusive): (f64, bool),
    ) -> Result<f64, Diagnostic> {
        let Some((value, span)) = self.get(name) else {
            return Ok(default);
        };
        let range = format!(
            "a number in {}{lo}, {hi}{}",
            if lo_inclusive { "[" } else { "(" },
            if hi_inclusive { "]" } else { ")" }
        );
        match value.as_float() {
            Some(v)
                if (v > lo || (lo_inclusive && v == lo))
                    && (v < hi || (hi_inclusive && v == hi)) =>
            {
                Ok(v)
            }
            _ => Err(self.wrong(name, &range, value, span)),
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, Diagnostic> {
        match self.get(name) {
            None => Ok(default),
            Some((Value::Bool(b), _)) => Ok(*b),
            Some((value, span)) => Err(self.wrong(name, "`true` or `false`", value, span)),
        }
    }

    /// Two extents (height, width): `3x3`, or one number for both.
    pub fn pair(&self, name: &str, default: [u64; 2], min: u64) -> Result<[u64; 2], Diagnostic> {
        match self.get(name) {
            None => Ok(default),
            Some((Value::Dims(d), span)) => match d.as_slice() {
                [h, w] if *h >= min as i64 && *w >= min as i64 => Ok([*h as u64, *w as u64]),
                _ => Err(self.wrong(
                    name,
                    &format!("one number or two (like `3x3`), each at least {min}"),
                    &Value::Dims(d.clone()),
                    span,
                )),
            },
            Some((value, span)) => {
                let v = self.int_value(name, value, span, min)?;
                Ok([v, v])
            }
        }
    }

    /// One of the given words; `None` when not given.
    pub fn word(
        &self,
        name: &str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, Diagnostic> {
        let Some((value, span)) = self.get(name) else {
            return Ok(None);
        };
        let choices = allowed
            .iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match value {
            Value::Word(w) => match allowed.iter().find(|a| **a == w.as_str()) {
                Some(a) => Ok(Some(a)),
                None => {
                    let diagnostic = self.wrong(name, &format!("one of {choices}"), value, span);
                    Err(match nearest(w, allowed.iter().copied()) {
                        Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
                        None => diagnostic,
                    })
                }
            },
            _ => Err(self.wrong(name, &format!("one of {choices}"), value, span)),
        }
    }

    /// The statement as written, with values substituted: `conv 3x3 64 stride=2`.
    pub fn describe(&self, name: &str, positional: &[&str]) -> String {
        let mut text = name.to_string();
        for (param, value, _) in &self.given {
            if positional.contains(param) {
                text.push_str(&format!(" {value}"));
            } else {
                text.push_str(&format!(" {param}={value}"));
            }
        }
        text
    }
}
