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
        // A lone `x` between two numbers would read as extents: `3 (x) 4`, not `3 x 4`.
        ExprKind::Name(name) if name == "x" => "(x)".to_string(),
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
        ExprKind::Dims(dims) => {
            let literal = dims.iter().all(|d| matches!(d.kind, ExprKind::Int(_)));
            // `3x3` reads best, but `cxhxw` would be one name: spaces once any extent is not a
            // literal.
            let separator = if literal { "x" } else { " x " };
            dims.iter()
                .map(|d| match d.kind {
                    ExprKind::Int(_) | ExprKind::Name(_) => print_expr(d),
                    _ => format!("({})", print_expr(d)),
                })
                .collect::<Vec<_>>()
                .join(separator)
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, SourceFile};

    /// The printed form, after checking that it parses and prints to itself.
    fn print_checked(source: &str) -> (String, Module) {
        let module = parse(&SourceFile::new("t.net", source)).expect("source parses");
        let printed = print_module(&module);
        let reparsed =
            parse(&SourceFile::new("printed.net", printed.as_str())).expect("print parses");
        assert_eq!(print_module(&reparsed), printed);
        (printed, reparsed)
    }

    /// How many arguments each statement of the first definition has.
    fn arg_counts(module: &Module) -> Vec<usize> {
        module.definitions[0]
            .body
            .stmts
            .iter()
            .map(|s| match &s.kind {
                StmtKind::Layer { args, .. } => args.len(),
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn extents_with_names_print_spaced() {
        let (printed, reparsed) =
            print_checked("network n(c = 1, h = 2) { input c x h x h; conv (h)x(h) 4 }");
        assert!(printed.contains("input c x h x h"), "{printed}");
        assert!(printed.contains("conv h x h 4"), "{printed}");
        assert_eq!(arg_counts(&reparsed), [1, 2]);
    }

    #[test]
    fn arguments_that_could_merge_stay_apart() {
        let (printed, reparsed) =
            print_checked("network n { f(64, x3); g(3, x, 4); h(-1, 2 - (1 - 1)) }");
        assert!(printed.contains("f 64 x3"), "{printed}");
        assert!(printed.contains("g 3 (x) 4"), "{printed}");
        assert!(printed.contains("h (-1) (2 - (1 - 1))"), "{printed}");
        assert_eq!(arg_counts(&reparsed), [2, 3, 2]);
    }
}
