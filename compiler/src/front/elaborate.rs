//! Elaboration: the checked syntax tree becomes a tree of layers with every value evaluated,
//! every block call expanded, every `repeat` unrolled, every layer named, and every output
//! shape, parameter count and multiply-accumulate count known.
//!
//! Errors are collected, not thrown: a failed statement ends its own sequence (what follows has
//! no input shape), while parallel branches and other checks go on, so one run reports as much
//! as it can. An error inside a block points at the block's line and at the call that led there.

use super::args::{match_args, BoundArgs};
use super::layers::{build, Cost, Layer, LayerKind};
use super::resolve::{block_signature, Resolved};
use super::shape::Shape;
use super::value::{eval, Scope, Value};
use netc_grammar::ast::*;
use netc_grammar::diagnostic::{nearest, Diagnostic};
use std::collections::{HashMap, HashSet};

/// Layers one network may expand to; more is certainly a runaway `repeat`.
pub const MAX_LAYERS: usize = 100_000;

/// A network with everything known before anything runs.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    /// The network's parameters with the values used.
    pub params: Vec<(String, Value)>,
    /// Top-level nodes: `input` first, `loss` last.
    pub nodes: Vec<Node>,
}

impl Network {
    pub fn cost(&self) -> Cost {
        self.nodes
            .iter()
            .fold(Cost::default(), |acc, n| acc + n.cost)
    }

    pub fn input_shape(&self) -> &Shape {
        &self.nodes[0].output
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    /// Dotted path, unique in the network: `i3a.concat1.0.conv1`. Explicit names come from
    /// `as`; others are the layer's or block's name numbered within its sequence.
    pub name: String,
    /// The statement with its values: `conv 3x3 64 stride=2`, `inception(64, 96, ...)`.
    pub description: String,
    pub span: Span,
    pub input: Shape,
    pub output: Shape,
    /// Of the node and everything inside it.
    pub cost: Cost,
    pub kind: NodeKind,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    Layer(Layer),
    Block(Vec<Node>),
    Concat(Vec<Vec<Node>>),
    Add(Vec<Vec<Node>>),
    Residual {
        body: Vec<Node>,
        shortcut: Option<Vec<Node>>,
    },
    Scale(Vec<Node>),
    Repeat(Vec<Vec<Node>>),
}

impl Node {
    /// The nodes directly inside this one, in order.
    pub fn children(&self) -> Vec<&Node> {
        match &self.kind {
            NodeKind::Layer(_) => Vec::new(),
            NodeKind::Block(body) | NodeKind::Scale(body) => body.iter().collect(),
            NodeKind::Concat(branches) | NodeKind::Add(branches) | NodeKind::Repeat(branches) => {
                branches.iter().flatten().collect()
            }
            NodeKind::Residual { body, shortcut } => {
                body.iter().chain(shortcut.iter().flatten()).collect()
            }
        }
    }
}

/// Elaborates the network; `overrides` replace the defaults of its parameters (`--set`).
pub fn elaborate(
    resolved: &Resolved,
    overrides: &[(String, Value)],
) -> Result<Network, Vec<Diagnostic>> {
    let mut elaborator = Elaborator {
        blocks: &resolved.blocks,
        diagnostics: Vec::new(),
        seen: HashSet::new(),
        calls: Vec::new(),
        layers: 0,
        out_of_budget: false,
    };
    let network = resolved.network;
    let declared = || network.params.iter().map(|p| p.name.name.as_str());
    for (name, _) in overrides {
        if declared().all(|p| p != name) {
            let mut diagnostic = Diagnostic::error(
                format!(
                    "network `{}` has no parameter `{name}` to set",
                    network.name.name
                ),
                network.name.span,
                "parameters are declared here",
            );
            diagnostic = match nearest(name, declared()) {
                Some(close) => diagnostic.with_help(format!("did you mean `--set {close}=...`?")),
                None if network.params.is_empty() => {
                    diagnostic.with_note("this network declares no parameters")
                }
                None => diagnostic.with_note(format!(
                    "its parameters: {}",
                    declared().collect::<Vec<_>>().join(", ")
                )),
            };
            elaborator.report(diagnostic);
        }
    }
    let mut scope = Scope::default();
    let mut params = Vec::new();
    for param in &network.params {
        let default = param
            .default
            .as_ref()
            .expect("resolve requires network defaults");
        let value = match overrides.iter().rev().find(|(n, _)| *n == param.name.name) {
            Some((_, value)) => Ok(value.clone()),
            None => eval(default, &scope),
        };
        match value {
            Ok(value) => {
                scope.insert(&param.name.name, value.clone());
                params.push((param.name.name.clone(), value));
            }
            Err(e) => elaborator.report(e),
        }
    }
    let nodes = if elaborator.diagnostics.is_empty() {
        elaborator.sequence(&network.body, &scope, "", None)
    } else {
        None
    };
    match nodes {
        Some((nodes, _)) if elaborator.diagnostics.is_empty() => Ok(Network {
            name: network.name.name.clone(),
            params,
            nodes,
        }),
        _ => Err(elaborator.diagnostics),
    }
}

struct Elaborator<'r, 'm> {
    blocks: &'r HashMap<&'m str, &'m Definition>,
    diagnostics: Vec<Diagnostic>,
    /// Where errors were reported: one error per place in the source, so a block called nine
    /// times (under nine names, with nine sets of arguments) reports once.
    seen: HashSet<Span>,
    /// The block calls being expanded, innermost last: (block, call site).
    calls: Vec<(String, Span)>,
    layers: usize,
    out_of_budget: bool,
}

/// Names for a sequence's statements: the `as` name, or the callee's name numbered.
fn statement_names(body: &Body) -> Vec<String> {
    let taken: HashSet<&str> = body
        .stmts
        .iter()
        .filter_map(|s| s.alias.as_ref().map(|a| a.name.as_str()))
        .collect();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    body.stmts
        .iter()
        .map(|stmt| {
            if let Some(alias) = &stmt.alias {
                return alias.name.clone();
            }
            let base = match &stmt.kind {
                StmtKind::Layer { callee, .. } => callee.name.as_str(),
                StmtKind::Concat { .. } => "concat",
                StmtKind::Add { .. } => "add",
                StmtKind::Residual { .. } => "residual",
                StmtKind::Scale { .. } => "scale",
                StmtKind::Repeat { .. } => "repeat",
            };
            loop {
                let n = counters.entry(base).or_insert(0);
                *n += 1;
                let name = format!("{base}{n}");
                if !taken.contains(name.as_str()) {
                    return name;
                }
            }
        })
        .collect()
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl Elaborator<'_, '_> {
    /// Records an error once, with the block calls that led to it.
    fn report(&mut self, mut diagnostic: Diagnostic) {
        if !self.seen.insert(diagnostic.primary.span) {
            return;
        }
        for (block, call) in self.calls.iter().rev().take(3) {
            diagnostic = diagnostic.with_secondary(*call, format!("in this call of `{block}`"));
        }
        self.diagnostics.push(diagnostic);
    }

    /// Elaborates a sequence; `None` when it failed (and the failure was reported).
    fn sequence(
        &mut self,
        body: &Body,
        scope: &Scope,
        prefix: &str,
        input: Option<Shape>,
    ) -> Option<(Vec<Node>, Shape)> {
        let mut nodes = Vec::new();
        let mut current = input;
        for (stmt, name) in body.stmts.iter().zip(statement_names(body)) {
            let node = self.statement(stmt, scope, join(prefix, &name), current.as_ref())?;
            current = Some(node.output.clone());
            nodes.push(node);
        }
        // Blocks and branches only get here with an input, networks open with `input`.
        let output = current.expect("resolve rejects empty networks");
        Some((nodes, output))
    }

    fn statement(
        &mut self,
        stmt: &Stmt,
        scope: &Scope,
        name: String,
        input: Option<&Shape>,
    ) -> Option<Node> {
        if self.out_of_budget {
            return None;
        }
        self.layers += 1;
        if self.layers > MAX_LAYERS {
            self.out_of_budget = true;
            self.report(
                Diagnostic::error(
                    format!("the network expands to more than {MAX_LAYERS} layers"),
                    stmt.span,
                    "the limit was reached here",
                )
                .with_help("check the counts of `repeat` and of nested block calls"),
            );
            return None;
        }
        // Combinators span many lines; their errors point at the keyword.
        let head = Span::new(stmt.span.start, stmt.span.start + keyword_len(stmt));
        let (kind, description, output, cost) = match &stmt.kind {
            StmtKind::Layer { callee, args } => {
                if let Some(kind) = LayerKind::from_name(&callee.name) {
                    return self.layer(kind, stmt, args, scope, name, input);
                }
                return self.call(callee, args, stmt, scope, name, input?);
            }
            StmtKind::Concat { branches } | StmtKind::Add { branches } => {
                let input = input?;
                let is_concat = matches!(stmt.kind, StmtKind::Concat { .. });
                let keyword = if is_concat { "concat" } else { "add" };
                if branches.is_empty() {
                    self.report(Diagnostic::error(
                        format!("`{keyword}` has no branches"),
                        head,
                        "expected `{ ... }` branches inside",
                    ));
                    return None;
                }
                // Every branch is elaborated, even after one fails: they are independent, and
                // each may have its own errors to report.
                let elaborated: Vec<_> = branches
                    .iter()
                    .enumerate()
                    .map(|(i, branch)| {
                        let prefix = join(&name, &i.to_string());
                        self.sequence_or_identity(branch, scope, &prefix, input)
                    })
                    .collect();
                let mut outputs = Vec::new();
                let mut all = Vec::new();
                for (branch, result) in branches.iter().zip(elaborated) {
                    let (nodes, output) = result?;
                    outputs.push((output, branch.span));
                    all.push(nodes);
                }
                let output = if is_concat {
                    self.concat_shape(&name, &outputs)?
                } else {
                    self.same_shapes(&name, &outputs)?
                };
                let cost = all
                    .iter()
                    .flatten()
                    .fold(Cost::default(), |acc, n| acc + n.cost);
                let kind = if is_concat {
                    NodeKind::Concat(all)
                } else {
                    NodeKind::Add(all)
                };
                (kind, keyword.to_string(), output, cost)
            }
            StmtKind::Residual { body, shortcut } => {
                let input = input?;
                // The shortcut is elaborated even when the body fails, to report its errors too.
                let body_result = self.sequence_or_identity(body, scope, &name, input);
                let shortcut_result = match shortcut {
                    Some(s) => self
                        .sequence_or_identity(s, scope, &join(&name, "shortcut"), input)
                        .map(|(nodes, out)| (Some(nodes), out)),
                    None => Some((None, input.clone())),
                };
                let ((body_nodes, body_out), (shortcut_nodes, shortcut_out)) =
                    (body_result?, shortcut_result?);
                if body_out != shortcut_out {
                    let mut diagnostic = Diagnostic::error(
                        format!(
                            "residual sum `{name}` of different shapes: the body gives {body_out}, the {} gives {shortcut_out}",
                            if shortcut.is_some() { "shortcut" } else { "identity shortcut" }
                        ),
                        head,
                        format!("{body_out} + {shortcut_out}"),
                    );
                    if shortcut.is_some() {
                        diagnostic = diagnostic.with_help(format!(
                            "the shortcut must give what the body gives, {body_out}"
                        ));
                    }
                    if let Some(help) = projection_hint(input, &body_out) {
                        diagnostic = diagnostic.with_help(help);
                    }
                    self.report(diagnostic);
                    return None;
                }
                let cost = body_nodes
                    .iter()
                    .chain(shortcut_nodes.iter().flatten())
                    .fold(Cost::default(), |acc, n| acc + n.cost);
                let description = if shortcut.is_some() {
                    "residual (projection)"
                } else {
                    "residual"
                };
                (
                    NodeKind::Residual {
                        body: body_nodes,
                        shortcut: shortcut_nodes,
                    },
                    description.to_string(),
                    body_out,
                    cost,
                )
            }
            StmtKind::Scale { body } => {
                let input = input?;
                let (nodes, factors) = self.sequence_or_identity(body, scope, &name, input)?;
                let fits = match (input.channels(), factors.0.as_slice()) {
                    (Some(c), [k] | [k, 1, 1]) => *k == c,
                    _ => false,
                };
                if !fits {
                    let channels = input
                        .channels()
                        .map_or("CHANNELS".to_string(), |c| c.to_string());
                    self.report(
                        Diagnostic::error(
                            format!("`{name}` needs one factor per channel of its input {input}, but its body gives {factors}"),
                            head,
                            format!("{factors} cannot scale {input}"),
                        )
                        .with_help(format!("squeeze-and-excitation starts its body with `avgpool global` and ends it with `conv 1x1 {channels}; sigmoid`")),
                    );
                    return None;
                }
                let cost = nodes.iter().fold(Cost::default(), |acc, n| acc + n.cost);
                (
                    NodeKind::Scale(nodes),
                    "scale".to_string(),
                    input.clone(),
                    cost,
                )
            }
            StmtKind::Repeat { count, body } => {
                let input = input?;
                let count = match eval(count, scope) {
                    Ok(v) => match v.as_int() {
                        Some(n) if (0..=MAX_LAYERS as i64).contains(&n) => n as usize,
                        _ => {
                            self.report(Diagnostic::error(
                                format!(
                                    "`repeat` needs a count from 0 to {MAX_LAYERS}, found {}",
                                    v.describe()
                                ),
                                count.span,
                                "bad count",
                            ));
                            return None;
                        }
                    },
                    Err(e) => {
                        self.report(e);
                        return None;
                    }
                };
                let mut rounds = Vec::new();
                let mut current = input.clone();
                for i in 0..count {
                    let (nodes, output) = self.sequence_or_identity(
                        body,
                        scope,
                        &join(&name, &i.to_string()),
                        &current,
                    )?;
                    current = output;
                    rounds.push(nodes);
                }
                let cost = rounds
                    .iter()
                    .flatten()
                    .fold(Cost::default(), |acc, n| acc + n.cost);
                (
                    NodeKind::Repeat(rounds),
                    format!("repeat {count}"),
                    current,
                    cost,
                )
            }
        };
        Some(Node {
            name,
            description,
            span: stmt.span,
            input: input
                .expect("combinators return early without input")
                .clone(),
            output,
            cost,
            kind,
        })
    }

    /// A branch body; an empty one is the identity (a concat branch that passes its input on).
    fn sequence_or_identity(
        &mut self,
        body: &Body,
        scope: &Scope,
        prefix: &str,
        input: &Shape,
    ) -> Option<(Vec<Node>, Shape)> {
        if body.stmts.is_empty() {
            return Some((Vec::new(), input.clone()));
        }
        self.sequence(body, scope, prefix, Some(input.clone()))
    }

    fn layer(
        &mut self,
        kind: LayerKind,
        stmt: &Stmt,
        args: &[Arg],
        scope: &Scope,
        name: String,
        input: Option<&Shape>,
    ) -> Option<Node> {
        let slots = match match_args(&kind.signature(), args, stmt.span) {
            Ok(slots) => slots,
            Err(errors) => {
                errors.into_iter().for_each(|e| self.report(e));
                return None;
            }
        };
        let callee = format!("`{name}` ({})", kind.name());
        let built = BoundArgs::evaluate(callee, &kind.param_names(), &slots, scope, stmt.span)
            .and_then(|bound| {
                Ok((
                    build(kind, &bound, input)?,
                    bound.describe(kind.name(), &kind.positional_names()),
                ))
            });
        match built {
            Ok((built, description)) => Some(Node {
                name,
                description,
                span: stmt.span,
                input: input.unwrap_or(&built.output).clone(),
                output: built.output,
                cost: built.cost,
                kind: NodeKind::Layer(built.layer),
            }),
            Err(e) => {
                self.report(e);
                None
            }
        }
    }

    fn call(
        &mut self,
        callee: &Ident,
        args: &[Arg],
        stmt: &Stmt,
        scope: &Scope,
        name: String,
        input: &Shape,
    ) -> Option<Node> {
        let block = *self
            .blocks
            .get(callee.name.as_str())
            .expect("resolve checked every callee");
        let slots = match match_args(&block_signature(block), args, stmt.span) {
            Ok(slots) => slots,
            Err(errors) => {
                errors.into_iter().for_each(|e| self.report(e));
                return None;
            }
        };
        let mut inner = Scope::default();
        let mut shown = Vec::new();
        for (param, slot) in block.params.iter().zip(&slots) {
            // Arguments are evaluated where the call stands; defaults inside the block, where
            // earlier parameters are visible.
            let value = match (slot, &param.default) {
                (Some(arg), _) => eval(&arg.value, scope),
                (None, Some(default)) => eval(default, &inner),
                (None, None) => unreachable!("match_args checked required parameters"),
            };
            match value {
                Ok(v) => {
                    shown.push(v.to_string());
                    inner.insert(&param.name.name, v);
                }
                Err(e) => {
                    self.report(e);
                    return None;
                }
            }
        }
        self.calls.push((callee.name.clone(), stmt.span));
        let result = self.sequence_or_identity(&block.body, &inner, &name, input);
        self.calls.pop();
        let (nodes, output) = result?;
        Some(Node {
            name,
            description: format!("{}({})", callee.name, shown.join(", ")),
            span: stmt.span,
            input: input.clone(),
            output,
            cost: nodes.iter().fold(Cost::default(), |acc, n| acc + n.cost),
            kind: NodeKind::Block(nodes),
        })
    }

    fn concat_shape(&mut self, name: &str, outputs: &[(Shape, Span)]) -> Option<Shape> {
        let (first, first_span) = &outputs[0];
        for (i, (shape, span)) in outputs.iter().enumerate().skip(1) {
            let compatible = shape.0.len() == first.0.len() && shape.0.get(1..) == first.0.get(1..);
            if !compatible {
                let what = if shape.0.len() == first.0.len() {
                    "spatial sizes"
                } else {
                    "ranks"
                };
                self.report(
                    Diagnostic::error(
                        format!("`{name}` concatenates different {what}: branch 0 gives {first}, branch {i} gives {shape}"),
                        *span,
                        format!("gives {shape}"),
                    )
                    .with_secondary(*first_span, format!("gives {first}"))
                    .with_help("branches are joined along channels, so their other extents must agree (use `pad=same`)"),
                );
                return None;
            }
        }
        let mut joined = first.clone();
        joined.0[0] = outputs.iter().map(|(s, _)| s.0[0]).sum();
        Some(joined)
    }

    fn same_shapes(&mut self, name: &str, outputs: &[(Shape, Span)]) -> Option<Shape> {
        let (first, first_span) = &outputs[0];
        if let Some((i, (shape, span))) = outputs.iter().enumerate().find(|(_, (s, _))| s != first)
        {
            self.report(
                Diagnostic::error(
                    format!("`{name}` adds different shapes: branch 0 gives {first}, branch {i} gives {shape}"),
                    *span,
                    format!("gives {shape}"),
                )
                .with_secondary(*first_span, format!("gives {first}")),
            );
            return None;
        }
        Some(first.clone())
    }
}

/// Length of a combinator's keyword; a layer statement is short enough to underline whole.
fn keyword_len(stmt: &Stmt) -> usize {
    match &stmt.kind {
        StmtKind::Layer { .. } => stmt.span.end - stmt.span.start,
        StmtKind::Concat { .. } => "concat".len(),
        StmtKind::Add { .. } => "add".len(),
        StmtKind::Residual { .. } => "residual".len(),
        StmtKind::Scale { .. } => "scale".len(),
        StmtKind::Repeat { .. } => "repeat".len(),
    }
}

/// The shortcut that would make a residual sum fit, when a 1x1 convolution can.
fn projection_hint(input: &Shape, body: &Shape) -> Option<String> {
    let ((_, h, w), (c, oh, ow)) = (input.image()?, body.image()?);
    let stride = h.div_ceil(oh);
    if h.div_ceil(stride) != oh || w.div_ceil(stride) != ow {
        return None;
    }
    let stride = if stride > 1 {
        format!(" stride={stride}")
    } else {
        String::new()
    };
    Some(format!(
        "project the shortcut: `residual {{ ... }} shortcut {{ conv 1x1 {c}{stride} bias=false; batchnorm }}`"
    ))
}
