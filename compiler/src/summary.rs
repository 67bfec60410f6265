//! `netc summary`: one row per layer — the columns of the GoogLeNet paper's table — as text or
//! JSON. Blocks and combinators are one row unless expanded. With `--memory`, the memory plan
//! of the training step.

use crate::codegen::{compile_network, CodegenOptions};
use crate::front::{Network, Node};
use crate::ir::ValueId;
use crate::optim::{Optimizer, OptimizerKind};
use crate::passes::memory::{one_per_value, purposes, MemoryPlan, MemoryReport, Purpose};
use crate::pipeline::{self, TrainingOptions};
use serde_json::{json, Value as Json};

struct Row {
    depth: usize,
    name: String,
    kind: String,
    output: String,
    params: u64,
    macs: u64,
}

fn rows(nodes: &[&Node], parent: &str, depth: usize, expand: bool, out: &mut Vec<Row>) {
    for node in nodes {
        let name = node
            .name
            .strip_prefix(parent)
            .and_then(|n| n.strip_prefix('.'))
            .unwrap_or(&node.name);
        out.push(Row {
            depth,
            name: name.to_string(),
            kind: node.description.clone(),
            output: node.output.to_string(),
            params: node.cost.params,
            macs: node.cost.macs,
        });
        if expand {
            rows(&node.children(), &node.name, depth + 1, expand, out);
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn header(network: &Network) -> String {
    let params: Vec<String> = network
        .params
        .iter()
        .map(|(n, v)| format!("{n} = {v}"))
        .collect();
    if params.is_empty() {
        format!("network {}", network.name)
    } else {
        format!("network {}({})", network.name, params.join(", "))
    }
}

pub fn table(network: &Network, expand: bool) -> String {
    let mut body = Vec::new();
    rows(
        &network.nodes.iter().collect::<Vec<_>>(),
        "",
        0,
        expand,
        &mut body,
    );
    let total = network.cost();
    let cells: Vec<[String; 5]> = body
        .iter()
        .map(|r| {
            [
                format!("{}{}", "  ".repeat(r.depth), r.name),
                r.kind.clone(),
                r.output.clone(),
                thousands(r.params),
                thousands(r.macs),
            ]
        })
        .collect();
    let head = ["layer", "type", "output", "params", "MACs"].map(String::from);
    let foot = [
        "total".to_string(),
        String::new(),
        String::new(),
        thousands(total.params),
        thousands(total.macs),
    ];
    let mut widths = [0usize; 5];
    for row in std::iter::once(&head)
        .chain(&cells)
        .chain(std::iter::once(&foot))
    {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 5]| {
        let text = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        text.trim_end().to_string()
    };
    let rule = widths.map(|w| "-".repeat(w));
    let mut out = format!("{}\n\n", header(network));
    out.push_str(&line(&head));
    out.push('\n');
    out.push_str(&line(&rule));
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out.push_str(&line(&rule));
    out.push('\n');
    out.push_str(&line(&foot));
    out.push('\n');
    out.push_str(&format!(
        "\nparams: trainable, biases included ({} weights); MACs: multiply-accumulates of \
         convolutions and dense layers, per example\n",
        thousands(total.weights)
    ));
    out
}

fn node_json(node: &Node, expand: bool) -> Json {
    let mut value = json!({
        "name": node.name,
        "type": node.description,
        "output": node.output.0,
        "params": node.cost.params,
        "weights": node.cost.weights,
        "macs": node.cost.macs,
    });
    let children = node.children();
    if expand && !children.is_empty() {
        value["layers"] = Json::Array(children.iter().map(|c| node_json(c, expand)).collect());
    }
    value
}

pub fn json(network: &Network, expand: bool) -> Json {
    let total = network.cost();
    let params: serde_json::Map<String, Json> = network
        .params
        .iter()
        .map(|(n, v)| {
            let value = match v {
                crate::front::value::Value::Int(i) => json!(i),
                crate::front::value::Value::Float(f) => json!(f),
                crate::front::value::Value::Bool(b) => json!(b),
                other => json!(other.to_string()),
            };
            (n.clone(), value)
        })
        .collect();
    json!({
        "network": network.name,
        "params": params,
        "input": network.input_shape().0,
        "layers": network.nodes.iter().map(|n| node_json(n, expand)).collect::<Vec<_>>(),
        "totals": {
            "params": total.params,
            "weights": total.weights,
            "macs": total.macs,
        },
    })
}

/// The memory plan of the training step (SGD with momentum, as `netc bench`), from the code
/// generated for it, before anything runs: `netc summary --memory`.
pub fn memory(
    network: &Network,
    batch: usize,
    codegen: &CodegenOptions,
) -> Result<MemoryReport, String> {
    let training = pipeline::training(
        network,
        &TrainingOptions {
            batch,
            optimizer: Optimizer::new(OptimizerKind::Momentum { momentum: 0.9 }),
            frozen: Vec::new(),
        },
    )?;
    let program = compile_network(&training, codegen).map_err(|e| e.to_string())?;
    let graph = program.graph();
    let layout = program.layout();
    let bytes = |floats: usize| 4 * floats as u64;
    // Which buffer (slot) each value is in, and so what each slot is for.
    let mut inside = vec![None; layout.buffer_floats.len()];
    for view in &layout.views {
        inside[view.slot] = Some((view.of, view.offset));
    }
    let plan = MemoryPlan {
        buffer_of: (0..graph.values.len())
            .map(|v| program.slot_of(ValueId(v)))
            .collect(),
        buffer_floats: layout.buffer_floats.clone(),
        inside,
    };
    let slot_purposes = purposes(graph, &plan);
    let values_end = plan.buffer_of.iter().max().map_or(1, |m| m + 1);
    let mut by_purpose: Vec<(Purpose, u64)> = Purpose::ALL.iter().map(|&p| (p, 0)).collect();
    let mut add = |purpose: Purpose, bytes: i64| {
        let entry = by_purpose
            .iter_mut()
            .find(|(p, _)| *p == purpose)
            .expect("every purpose listed");
        entry.1 = entry.1.saturating_add_signed(bytes);
    };
    for (slot, (&purpose, &floats)) in slot_purposes
        .iter()
        .zip(&layout.buffer_floats)
        .enumerate()
        .take(values_end)
        .skip(1)
    {
        let bytes = bytes(floats) as i64;
        match plan.inside[slot] {
            None => add(purpose, bytes),
            // The arena counts as temporaries, but for the activations kept for backward in
            // it: all of them are live at once when backward begins, so they take that much
            // of it.
            Some((arena, _)) if purpose == Purpose::SavedActivations => {
                add(purpose, bytes);
                add(slot_purposes[arena], -bytes);
            }
            Some(_) => {}
        }
    }
    let workspace_bytes = layout.buffer_floats[values_end..]
        .iter()
        .map(|&f| bytes(f))
        .sum();
    let scratch_bytes = bytes(layout.scratch_floats) * program.threads() as u64;
    let total_bytes =
        by_purpose.iter().map(|(_, b)| b).sum::<u64>() + workspace_bytes + scratch_bytes;
    // Views that lie inside another buffer take no memory of their own.
    let unplanned = one_per_value(graph);
    let unplanned_bytes = unplanned
        .buffer_floats
        .iter()
        .zip(&unplanned.inside)
        .filter(|(_, inside)| inside.is_none())
        .map(|(&f, _)| bytes(f))
        .sum();
    Ok(MemoryReport {
        by_purpose,
        workspace_bytes,
        scratch_bytes,
        total_bytes,
        unplanned_bytes,
    })
}
