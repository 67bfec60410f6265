//! Checks that need no values, over every definition (called or not): names are defined once,
//! every statement calls a known layer or block with arguments it takes, `input` opens and
//! `loss` closes the network, and no block calls itself.

use super::args::{match_args, Signature, SignatureParam};
use super::layers::{LayerKind, FOREIGN_NAMES};
use netc_grammar::ast::*;
use netc_grammar::diagnostic::{nearest, Diagnostic};
use std::collections::HashMap;

/// The module's definitions by name, once checked.
pub struct Resolved<'m> {
    pub network: &'m Definition,
    pub blocks: HashMap<&'m str, &'m Definition>,
}

pub fn block_signature(block: &Definition) -> Signature<'_> {
    Signature {
        callee: format!("block `{}`", block.name.name),
        params: block
            .params
            .iter()
            .map(|p| SignatureParam {
                name: &p.name.name,
                positional: true,
                required: p.default.is_none(),
            })
            .collect(),
    }
}

pub fn resolve(module: &Module) -> Result<Resolved<'_>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut blocks: HashMap<&str, &Definition> = HashMap::new();
    let mut networks: Vec<&Definition> = Vec::new();
    for def in &module.definitions {
        let name = def.name.name.as_str();
        if let Some(earlier) = blocks
            .get(name)
            .copied()
            .or_else(|| networks.iter().copied().find(|n| n.name.name == name))
        {
            errors.push(
                Diagnostic::error(
                    format!("`{name}` is defined twice"),
                    def.name.span,
                    "defined again here",
                )
                .with_secondary(earlier.name.span, "first defined here"),
            );
            continue;
        }
        match def.kind {
            DefinitionKind::Block => {
                if LayerKind::from_name(name).is_some() {
                    errors.push(
                        Diagnostic::error(
                            format!("block `{name}` has the name of a built-in layer"),
                            def.name.span,
                            "shadows the layer",
                        )
                        .with_note(format!(
                            "`{name}` always means the layer, so this block can never be called"
                        ))
                        .with_help("choose another name for the block"),
                    );
                }
                blocks.insert(name, def);
            }
            DefinitionKind::Network => {
                if let Some(first) = networks.first() {
                    errors.push(
                        Diagnostic::error(
                            "a file holds one network",
                            def.name.span,
                            "second network",
                        )
                        .with_secondary(first.name.span, "first network")
                        .with_help(
                            "put each network in its own file; share blocks by copying them",
                        ),
                    );
                }
                networks.push(def);
            }
        }
    }
    for def in &module.definitions {
        check_definition(def, &blocks, &mut errors);
    }
    check_recursion(&blocks, module, &mut errors);
    match networks.first() {
        None => errors.push(
            Diagnostic::error(
                "no network in this file",
                Span::new(0, 0),
                "expected a network",
            )
            .with_help("add `network NAME { input 1x28x28; ...; loss softmax_cross_entropy }`"),
        ),
        Some(network) if errors.is_empty() => return Ok(Resolved { network, blocks }),
        Some(_) => {}
    }
    Err(errors)
}

fn check_definition(
    def: &Definition,
    blocks: &HashMap<&str, &Definition>,
    errors: &mut Vec<Diagnostic>,
) {
    for (i, param) in def.params.iter().enumerate() {
        if let Some(earlier) = def.params[..i]
            .iter()
            .find(|p| p.name.name == param.name.name)
        {
            errors.push(
                Diagnostic::error(
                    format!("parameter `{}` is declared twice", param.name.name),
                    param.name.span,
                    "declared again",
                )
                .with_secondary(earlier.name.span, "first declared here"),
            );
        }
        if def.kind == DefinitionKind::Network && param.default.is_none() {
            errors.push(
                Diagnostic::error(
                    format!(
                        "network parameter `{}` needs a default value",
                        param.name.name
                    ),
                    param.name.span,
                    "no default",
                )
                .with_help(format!("write `{} = VALUE`", param.name.name)),
            );
        }
    }
    check_body(&def.body, blocks, errors);
    if def.kind == DefinitionKind::Network {
        check_network_ends(def, errors);
    }
    // `input` and `loss` inside a block, or nested inside a network's combinators.
    visit_stmts(&def.body, &mut |stmt, depth| {
        if def.kind == DefinitionKind::Network && depth == 0 {
            return;
        }
        for kind in [LayerKind::Input, LayerKind::Loss] {
            if !is_layer(stmt, kind) {
                continue;
            }
            let (place, help) = match (kind, def.kind) {
                (LayerKind::Input, DefinitionKind::Block) => (
                    "first",
                    "remove it: a block's input is what comes before its call",
                ),
                (_, DefinitionKind::Block) => (
                    "last",
                    "remove it: the network that calls the block ends with its loss",
                ),
                (LayerKind::Input, _) => ("first", "move it to the top of the network"),
                _ => ("last", "move it to the end of the network"),
            };
            errors.push(
                Diagnostic::error(
                    format!(
                        "`{}` can only be the {place} statement of a network",
                        kind.name()
                    ),
                    stmt.span,
                    "misplaced",
                )
                .with_note("a network has one input and one loss; blocks have neither")
                .with_help(help),
            );
        }
    });
}

fn is_layer(stmt: &Stmt, kind: LayerKind) -> bool {
    matches!(&stmt.kind, StmtKind::Layer { callee, .. } if callee.name == kind.name())
}

/// A network's own body opens with its one `input` and closes with its one `loss`.
fn check_network_ends(def: &Definition, errors: &mut Vec<Diagnostic>) {
    let network = &def.name.name;
    let stmts = &def.body.stmts;
    if stmts.is_empty() {
        errors.push(
            Diagnostic::error(
                format!("network `{network}` is empty"),
                def.name.span,
                "no layers",
            )
            .with_help("a network needs at least `input SHAPE` and `loss KIND`"),
        );
        return;
    }
    for kind in [LayerKind::Input, LayerKind::Loss] {
        let opens = kind == LayerKind::Input;
        let name = kind.name();
        let proper = if opens { stmts.first() } else { stmts.last() };
        let found: Vec<&Stmt> = stmts.iter().filter(|s| is_layer(s, kind)).collect();
        let proper = proper.filter(|s| is_layer(s, kind));
        if found.is_empty() {
            errors.push(if opens {
                Diagnostic::error(
                    format!("network `{network}` does not start with `input`"),
                    stmts[0].span,
                    "expected `input` before this",
                )
                .with_help("open the network with the shape of one example, e.g. `input 1x28x28`")
            } else {
                Diagnostic::error(
                    format!("network `{network}` has no loss"),
                    Span::new(def.body.span.end.saturating_sub(1), def.body.span.end),
                    "expected `loss` before the end",
                )
                .with_help("end the network with its objective, e.g. `loss softmax_cross_entropy`")
            });
            continue;
        }
        for stmt in found {
            let diagnostic = match proper {
                Some(proper) if std::ptr::eq(proper, stmt) => continue,
                Some(proper) => Diagnostic::error(
                    format!("network `{network}` has more than one `{name}`"),
                    stmt.span,
                    format!("an extra `{name}`"),
                )
                .with_secondary(proper.span, format!("the network's `{name}`"))
                .with_note("a network has one input and one loss"),
                None if opens => Diagnostic::error(
                    format!("`input` is not the first statement of network `{network}`"),
                    stmt.span,
                    "must come first",
                )
                .with_secondary(stmts[0].span, "comes before `input`")
                .with_help("move `input` to the top of the network"),
                None => Diagnostic::error(
                    format!("`loss` is not the last statement of network `{network}`"),
                    stmt.span,
                    "must come last",
                )
                .with_secondary(stmts[stmts.len() - 1].span, "comes after `loss`")
                .with_help("move `loss` to the end of the network: the loss is its output"),
            };
            errors.push(diagnostic);
        }
    }
}

/// Calls `f` on every statement, with its nesting depth (0 for the definition's own body).
fn visit_stmts<'a>(body: &'a Body, f: &mut dyn FnMut(&'a Stmt, usize)) {
    fn go<'a>(body: &'a Body, depth: usize, f: &mut dyn FnMut(&'a Stmt, usize)) {
        for stmt in &body.stmts {
            f(stmt, depth);
            for inner in inner_bodies(stmt) {
                go(inner, depth + 1, f);
            }
        }
    }
    go(body, 0, f)
}

pub fn inner_bodies(stmt: &Stmt) -> Vec<&Body> {
    match &stmt.kind {
        StmtKind::Layer { .. } => Vec::new(),
        StmtKind::Concat { branches } | StmtKind::Add { branches } => branches.iter().collect(),
        StmtKind::Residual { body, shortcut } => std::iter::once(body).chain(shortcut).collect(),
        StmtKind::Scale { body } | StmtKind::Repeat { body, .. } => vec![body],
    }
}

fn check_body(body: &Body, blocks: &HashMap<&str, &Definition>, errors: &mut Vec<Diagnostic>) {
    let mut aliases: HashMap<&str, Span> = HashMap::new();
    for stmt in &body.stmts {
        if let Some(alias) = &stmt.alias {
            if let Some(first) = aliases.insert(&alias.name, alias.span) {
                errors.push(
                    Diagnostic::error(
                        format!("the name `{}` is used twice in one sequence", alias.name),
                        alias.span,
                        "used again here",
                    )
                    .with_secondary(first, "first used here"),
                );
            }
        }
        if let StmtKind::Layer { callee, args } = &stmt.kind {
            let signature = if let Some(kind) = LayerKind::from_name(&callee.name) {
                kind.signature()
            } else if let Some(block) = blocks.get(callee.name.as_str()) {
                block_signature(block)
            } else {
                errors.push(unknown_callee(callee, blocks));
                continue;
            };
            if let Err(e) = match_args(&signature, args, stmt.span) {
                errors.extend(e);
            }
        }
        for inner in inner_bodies(stmt) {
            check_body(inner, blocks, errors);
        }
    }
}

fn unknown_callee(callee: &Ident, blocks: &HashMap<&str, &Definition>) -> Diagnostic {
    let name = callee.name.as_str();
    let diagnostic = Diagnostic::error(
        format!("unknown layer or block `{name}`"),
        callee.span,
        "not a layer, nor a block defined in this file",
    );
    let lowered = name.to_ascii_lowercase();
    let candidates = LayerKind::ALL
        .iter()
        .map(|k| k.name())
        .chain(blocks.keys().copied());
    if let Some(same) = candidates.clone().find(|c| c.eq_ignore_ascii_case(name)) {
        return diagnostic.with_help(format!("names are case-sensitive: did you mean `{same}`?"));
    }
    if let Some((_, ours)) = FOREIGN_NAMES.iter().find(|(theirs, _)| *theirs == lowered) {
        return diagnostic.with_help(format!("netc calls this `{ours}`"));
    }
    match nearest(name, candidates) {
        Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
        None => diagnostic.with_help("`netc layers` lists the built-in layers"),
    }
}

/// The block calls in a definition's body, in source order. A block named like a layer is
/// never called: the layer's name wins.
fn calls_of<'m>(def: &'m Definition, blocks: &HashMap<&str, &'m Definition>) -> Vec<&'m Ident> {
    let mut calls: Vec<&Ident> = Vec::new();
    visit_stmts(&def.body, &mut |stmt, _| {
        if let StmtKind::Layer { callee, .. } = &stmt.kind {
            if blocks.contains_key(callee.name.as_str())
                && LayerKind::from_name(&callee.name).is_none()
            {
                calls.push(callee);
            }
        }
    });
    calls
}

/// Reports each cycle in the block call graph once, at a call that closes it.
fn check_recursion(
    blocks: &HashMap<&str, &Definition>,
    module: &Module,
    errors: &mut Vec<Diagnostic>,
) {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Visiting,
        Done,
    }
    let mut state: HashMap<&str, State> = HashMap::new();
    // Iterative depth-first search in source order, so reports are deterministic.
    for root in module
        .definitions
        .iter()
        .filter(|d| d.kind == DefinitionKind::Block)
    {
        if state.contains_key(root.name.name.as_str()) {
            continue;
        }
        let mut stack: Vec<(&Definition, Vec<&Ident>, usize)> =
            vec![(root, calls_of(root, blocks), 0)];
        state.insert(&root.name.name, State::Visiting);
        while let Some((def, calls, next)) = stack.last_mut() {
            let Some(&call) = calls.get(*next) else {
                state.insert(&def.name.name, State::Done);
                stack.pop();
                continue;
            };
            *next += 1;
            let callee = blocks[call.name.as_str()];
            match state.get(callee.name.name.as_str()) {
                Some(State::Visiting) => {
                    let start = stack
                        .iter()
                        .position(|(d, _, _)| d.name.name == callee.name.name)
                        .expect("a visiting block is on the stack");
                    let mut chain: Vec<&str> = stack[start..]
                        .iter()
                        .map(|(d, _, _)| d.name.name.as_str())
                        .collect();
                    chain.push(&callee.name.name);
                    let through = if chain.len() > 2 {
                        format!(" through `{}`", chain[1..chain.len() - 1].join("`, `"))
                    } else {
                        String::new()
                    };
                    errors.push(
                        Diagnostic::error(
                            format!("block `{}` calls itself{through}", callee.name.name),
                            call.span,
                            "recursive call",
                        )
                        .with_secondary(callee.name.span, "defined here")
                        .with_note(format!("the cycle: {}", chain.join(" -> ")))
                        .with_help("a network is finite: use `repeat N { ... }` for repetition"),
                    );
                }
                Some(State::Done) => {}
                None => {
                    state.insert(&callee.name.name, State::Visiting);
                    stack.push((callee, calls_of(callee, blocks), 0));
                }
            }
        }
    }
}
