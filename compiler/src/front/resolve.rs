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
    let stmts = &def.body.stmts;
    let is_layer = |stmt: &Stmt, kind: LayerKind| matches!(&stmt.kind, StmtKind::Layer { callee, .. } if callee.name == kind.name());
    if def.kind == DefinitionKind::Network {
        match stmts.first() {
            Some(first) if is_layer(first, LayerKind::Input) => {}
            first => errors.push(
                Diagnostic::error(
                    format!("network `{}` does not start with `input`", def.name.name),
                    first.map_or(def.body.span, |s| s.span),
                    "expected `input` before this",
                )
                .with_help("open the network with the shape of one example, e.g. `input 1x28x28`"),
            ),
        }
        match stmts.last() {
            Some(last) if is_layer(last, LayerKind::Loss) => {}
            _ => errors.push(
                Diagnostic::error(
                    format!("network `{}` has no loss", def.name.name),
                    Span::new(def.body.span.end.saturating_sub(1), def.body.span.end),
                    "expected `loss` before the end",
                )
                .with_help("end the network with its objective, e.g. `loss softmax_cross_entropy`"),
            ),
        }
    }
    // `input` and `loss` anywhere but first and last statement of the network body.
    let mut misplaced = Vec::new();
    visit_stmts(&def.body, &mut |stmt, depth| {
        for (kind, place) in [(LayerKind::Input, "first"), (LayerKind::Loss, "last")] {
            if !is_layer(stmt, kind) {
                continue;
            }
            let allowed = def.kind == DefinitionKind::Network
                && depth == 0
                && std::ptr::eq(
                    stmt,
                    if kind == LayerKind::Input {
                        &stmts[0]
                    } else {
                        &stmts[stmts.len() - 1]
                    },
                );
            if !allowed {
                misplaced.push(
                    Diagnostic::error(
                        format!(
                            "`{}` can only be the {place} statement of a network",
                            kind.name()
                        ),
                        stmt.span,
                        "misplaced",
                    )
                    .with_note("a network has one input and one loss; blocks have neither"),
                );
            }
        }
    });
    errors.extend(misplaced);
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
    if let Some((_, ours)) = FOREIGN_NAMES.iter().find(|(theirs, _)| *theirs == lowered) {
        return diagnostic.with_help(format!("netc calls this `{ours}`"));
    }
    let candidates = LayerKind::ALL
        .iter()
        .map(|k| k.name())
        .chain(blocks.keys().copied());
    match nearest(name, candidates) {
        Some(close) => diagnostic.with_help(format!("did you mean `{close}`?")),
        None => diagnostic.with_help("`netc layers` lists the built-in layers"),
    }
}

/// Reports each cycle in the block call graph once, at a call that closes it.
/// The block calls in a definition's body, in source order.
fn calls_of<'m>(def: &'m Definition, blocks: &HashMap<&str, &'m Definition>) -> Vec<&'m Ident> {
    let mut calls: Vec<&Ident> = Vec::new();
    visit_stmts(&def.body, &mut |stmt, _| {
        if let StmtKind::Layer { callee, .. } = &stmt.kind {
            if blocks.contains_key(callee.name.as_str()) {
                calls.push(callee);
            }
        }
    });
    calls
}

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
                    errors.push(
                        Diagnostic::error(
                            format!("block `{}` calls itself", callee.name.name),
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
