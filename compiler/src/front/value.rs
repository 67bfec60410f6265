//! Values of the language's expressions, and their evaluation in a scope of parameters.
//!
//! Integers are exact (checked arithmetic); `/` stays an integer when the division is exact and
//! becomes a float otherwise, as in Python; `//` is floor division. A name that is not a
//! parameter in scope is a word (`same`, `global`), which only layers give meaning to.

use netc_grammar::ast::{BinaryOp, Expr, ExprKind, Span};
use netc_grammar::diagnostic::{nearest, Diagnostic};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Word(String),
    Dims(Vec<i64>),
}

impl Value {
    /// What kind of value this is, for messages: "an integer", "the word `same`".
    pub fn describe(&self) -> String {
        match self {
            Value::Int(v) => format!("the integer {v}"),
            Value::Float(v) => format!("the number {v:?}"),
            Value::Bool(v) => format!("`{v}`"),
            Value::Word(w) => format!("the word `{w}`"),
            Value::Dims(d) => format!("the extents {}", Value::Dims(d.clone())),
        }
    }

    /// An integer, also from a float with no fractional part (`64 / 2.0`).
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(v) => Some(v),
            Value::Float(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(v as i64),
            _ => None,
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match *self {
            Value::Int(v) => Some(v as f64),
            Value::Float(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Word(w) => write!(f, "{w}"),
            Value::Dims(d) => {
                let parts: Vec<String> = d.iter().map(i64::to_string).collect();
                write!(f, "{}", parts.join("x"))
            }
        }
    }
}

/// The parameters visible where an expression stands.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    values: BTreeMap<String, Value>,
}

impl Scope {
    pub fn insert(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_string(), value);
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The parameter a misspelt name most likely meant.
    pub fn nearest(&self, name: &str) -> Option<&str> {
        nearest(name, self.values.keys().map(String::as_str))
    }

    /// The diagnostic for a name that should have been a parameter.
    pub fn undefined(&self, name: &str, span: Span) -> Diagnostic {
        let diagnostic = Diagnostic::error(
            format!("`{name}` is not defined"),
            span,
            "no parameter of this name",
        );
        match self.nearest(name) {
            Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
            None if self.values.is_empty() => diagnostic
                .with_help("only parameters of the enclosing block or network can be used here"),
            None => {
                let names: Vec<&str> = self.values.keys().map(String::as_str).collect();
                diagnostic.with_help(format!("parameters in scope: {}", names.join(", ")))
            }
        }
    }
}

/// Evaluates an expression. Arithmetic on a name that is not in scope is an error here, since
/// words have no arithmetic; a bare word is returned as `Value::Word`.
pub fn eval(expr: &Expr, scope: &Scope) -> Result<Value, Diagnostic> {
    match &expr.kind {
        ExprKind::Int(v) => Ok(Value::Int(*v)),
        ExprKind::Float(v) => Ok(Value::Float(*v)),
        ExprKind::Bool(v) => Ok(Value::Bool(*v)),
        ExprKind::Name(n) => Ok(scope
            .get(n)
            .cloned()
            .unwrap_or_else(|| Value::Word(n.clone()))),
        ExprKind::Dims(parts) => parts
            .iter()
            .map(|p| {
                eval_number(p, scope)?
                    .as_int()
                    .ok_or_else(|| not_integer(p, scope))
            })
            .collect::<Result<_, _>>()
            .map(Value::Dims),
        ExprKind::Neg(inner) => match eval_number(inner, scope)? {
            Value::Int(v) => v
                .checked_neg()
                .map(Value::Int)
                .ok_or_else(|| overflow(expr.span, &format!("-({v})"))),
            Value::Float(v) => Ok(Value::Float(-v)),
            _ => unreachable!("eval_number returns numbers"),
        },
        ExprKind::Binary(op, lhs, rhs) => {
            let (a, b) = (eval_number(lhs, scope)?, eval_number(rhs, scope)?);
            binary(*op, &a, &b, expr.span, rhs.span)
        }
    }
}

/// Evaluates an operand of arithmetic: it must be a number.
fn eval_number(expr: &Expr, scope: &Scope) -> Result<Value, Diagnostic> {
    match eval(expr, scope)? {
        v @ (Value::Int(_) | Value::Float(_)) => Ok(v),
        Value::Word(w) => Err(scope.undefined(&w, expr.span)),
        other => Err(Diagnostic::error(
            format!("expected a number, found {}", other.describe()),
            expr.span,
            "not a number",
        )),
    }
}

fn not_integer(expr: &Expr, scope: &Scope) -> Diagnostic {
    let shown = eval(expr, scope).map(|v| v.to_string()).unwrap_or_default();
    Diagnostic::error(
        format!("an extent must be a whole number, found {shown}"),
        expr.span,
        "not a whole number",
    )
    .with_help("use `//` for floor division")
}

/// The error for arithmetic whose result is too large; `computed` shows the operation with
/// the operands' values, since they may come from parameters far away.
fn overflow(span: Span, computed: &str) -> Diagnostic {
    Diagnostic::error(
        "integer overflow",
        span,
        format!("`{computed}` does not fit in {} bits", i64::BITS),
    )
}

fn binary(op: BinaryOp, a: &Value, b: &Value, span: Span, rhs: Span) -> Result<Value, Diagnostic> {
    let division_by_zero = || Diagnostic::error("division by zero", rhs, "this is zero");
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        let (x, y) = (*x, *y);
        let result = match op {
            BinaryOp::Add => x.checked_add(y),
            BinaryOp::Sub => x.checked_sub(y),
            BinaryOp::Mul => x.checked_mul(y),
            BinaryOp::Div | BinaryOp::FloorDiv | BinaryOp::Rem if y == 0 => {
                return Err(division_by_zero())
            }
            BinaryOp::Div if x % y != 0 => return Ok(Value::Float(x as f64 / y as f64)),
            BinaryOp::Div => x.checked_div(y),
            BinaryOp::FloorDiv => x.checked_div_euclid(y).map(|q| {
                // Euclidean and floor division differ for a negative divisor with a remainder.
                if y < 0 && x.rem_euclid(y) != 0 {
                    q + 1
                } else {
                    q
                }
            }),
            BinaryOp::Rem => x.checked_rem_euclid(y),
        };
        return result
            .map(Value::Int)
            .ok_or_else(|| overflow(span, &format!("{x} {} {y}", op.symbol())));
    }
    let (x, y) = (
        a.as_float().expect("operands are numbers"),
        b.as_float().expect("operands are numbers"),
    );
    if y == 0.0 && matches!(op, BinaryOp::Div | BinaryOp::FloorDiv | BinaryOp::Rem) {
        return Err(division_by_zero());
    }
    let result = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::FloorDiv => (x / y).floor(),
        BinaryOp::Rem => x.rem_euclid(y),
    };
    if result.is_finite() {
        Ok(Value::Float(result))
    } else {
        Err(Diagnostic::error(
            "number out of range",
            span,
            format!("`{x:?} {} {y:?}` is not a finite number", op.symbol()),
        ))
    }
}
