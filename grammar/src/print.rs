//! The syntax tree printed back as canonical `.net` source: one statement per line, two-space
//! indents, minimal parentheses. Parsing the printed text gives the same tree (spans aside),
//! which makes the printed form a faithful snapshot of what the parser understood.

use crate::ast::*;
use std::fmt::Write;

pub fn print_module(module: &Module) -> String {
    let mut out = String::new();
    for (i, def) in module.definitions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        write!(out, "{} {}", def.kind.keyword(), def.name.name).unwrap();
        if !def.params.is_empty() {
            let params: Vec<String> = def
                .params
                .iter()
                .map(|p| match &p.default {
                    Some(d) => format!("{} = {}", p.name.name, print_expr(d)),
                    None => p.name.name.clone(),
                })
                .collect();
            write!(out, "({})", params.join(", ")).unwrap();
        }
        out.push(' ');
        print_body(&def.body, 0, &mut out);
        out.push('\n');
    }
    out
}

fn indent(level: usize, out: &mut String) {
    out.push_str(&"  ".repeat(level));
}

fn print_body(body: &Body, level: usize, out: &mut String) {
    out.push_str("{\n");
    for stmt in &body.stmts {
        indent(level + 1, out);
        print_stmt(stmt, level + 1, out);
        out.push('\n');
    }
    indent(level, out);
    out.push('}');
}

fn print_branches(keyword: &str, branches: &[Body], level: usize, out: &mut String) {
    out.push_str(keyword);
    out.push_str(" {\n");
    for branch in branches {
        indent(level + 1, out);
        print_body(branch, level + 1, out);
        out.push('\n');
    }
    indent(level, out);
    out.push('}');
}

fn print_stmt(stmt: &Stmt, level: usize, out: &mut String) {
    match &stmt.kind {
        StmtKind::Layer { callee, args } => {
            out.push_str(&callee.name);
            for arg in args {
                out.push(' ');
                if let Some(name) = &arg.name {
                    write!(out, "{}=", name.name).unwrap();
                }
                out.push_str(&print_arg_value(&arg.value));
            }
        }
        StmtKind::Concat { branches } => print_branches("concat", branches, level, out),
        StmtKind::Add { branches } => print_branches("add", branches, level, out),
        StmtKind::Residual { body, shortcut } => {
            out.push_str("residual ");
            print_body(body, level, out);
            if let Some(shortcut) = shortcut {
                out.push_str(" shortcut ");
                print_body(shortcut, level, out);
            }
        }
        StmtKind::Scale { body } => {
            out.push_str("scale ");
            print_body(body, level, out);
        }
        StmtKind::Repeat { count, body } => {
            write!(out, "repeat {} ", print_expr(count)).unwrap();
            print_body(body, level, out);
        }
    }
    if let Some(alias) = &stmt.alias {
        write!(out, " as {}", alias.name).unwrap();
    }
}

/// Space-separated arguments end at the first space, so compound expressions are parenthesised.
fn print_arg_value(expr: &Expr) -> String {
    match &expr.kind {
        ExprKind::Binary(..) | ExprKind::Neg(_) => format!("({})", print_expr(expr)),
        _ => print_expr(expr),
    }
}

pub fn print_expr(expr: &Expr) -> String {
    print_expr_in(expr, 0)
}

fn print_expr_in(expr: &Expr, outer_precedence: u8) -> String {
    match &expr.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Bool(v) => v.to_string(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Dims(dims) => dims
            .iter()
            .map(|d| match d.kind {
                ExprKind::Int(_) | ExprKind::Name(_) => print_expr(d),
                _ => format!("({})", print_expr(d)),
            })
            .collect::<Vec<_>>()
            .join("x"),
        ExprKind::Neg(inner) => format!("-{}", print_expr_in(inner, 3)),
        ExprKind::Binary(op, lhs, rhs) => {
            let p = op.precedence();
            // Left-associative: the right operand needs parentheses at equal precedence.
            let text = format!(
                "{} {} {}",
                print_expr_in(lhs, p),
                op.symbol(),
                print_expr_in(rhs, p + 1)
            );
            if p < outer_precedence {
                format!("({text})")
            } else {
                text
            }
        }
    }
}
