//! The syntax tree of a `.net` file, exactly as written: names are not resolved, expressions are
//! not evaluated, and every node keeps the byte span it came from so later stages can point at it.

use std::fmt;

/// A byte range `start..end` in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A name as written, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole file: block definitions and networks, in source order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Module {
    pub definitions: Vec<Definition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefinitionKind {
    /// `block name(params) { ... }`: a reusable, parameterised sequence of layers.
    Block,
    /// `network name(params) { ... }`: what gets compiled; opens with `input`, ends with `loss`.
    Network,
}

impl DefinitionKind {
    pub fn keyword(self) -> &'static str {
        match self {
            DefinitionKind::Block => "block",
            DefinitionKind::Network => "network",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    pub kind: DefinitionKind,
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Body,
    pub span: Span,
}

/// A parameter of a block or network, with its default value if it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

/// A braced sequence of statements; each statement feeds the next.
#[derive(Clone, Debug, PartialEq)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    /// `as name`: the name later stages use for freezing, checkpoints and summaries.
    pub alias: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// A layer or a block call: `conv 3x3 64 stride=2`, `inception(64, 96, 128, 16, 32, 32)`.
    Layer { callee: Ident, args: Vec<Arg> },
    /// Every branch sees the same input; outputs are joined along channels.
    Concat { branches: Vec<Body> },
    /// Every branch sees the same input; outputs are summed.
    Add { branches: Vec<Body> },
    /// `body(x) + x`, or `body(x) + shortcut(x)` with a projection shortcut.
    Residual { body: Body, shortcut: Option<Body> },
    /// `x * body(x)`, the body giving one factor per channel (squeeze-and-excitation).
    Scale { body: Body },
    /// The body, `count` times in sequence.
    Repeat { count: Expr, body: Body },
}

/// A positional argument (`64`) or an option (`stride=2`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A parameter reference, or a word such as `same` that the layer gives meaning to.
    Name(String),
    /// Extents per axis: `3x224x224`.
    Dims(Vec<Expr>),
    Neg(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// `/`: exact on integers when the division is exact, otherwise a float.
    Div,
    /// `//`: floor division.
    FloorDiv,
    Rem,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::FloorDiv => "//",
            BinaryOp::Rem => "%",
        }
    }

    /// Binding strength: `*` binds tighter than `+`.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Add | BinaryOp::Sub => 1,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::FloorDiv | BinaryOp::Rem => 2,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}
