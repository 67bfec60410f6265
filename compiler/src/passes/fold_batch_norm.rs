//! `fold_batch_norm`: in inference, batch norm after a convolution is a per-channel affine map
//! of the convolution's output, so it folds into the convolution: the weights scaled per output
//! channel and one per-channel shift, `conv(x, w * s) + (beta + (bias - mean) * s)` with
//! `s = gamma / sqrt(var + eps)`. The per-channel and weight-sized arithmetic stays in the graph
//! (it runs on the current weights, so training and checkpoints are untouched), and the four
//! full-size elementwise ops of batch norm become one addition.
//!
//! The pattern is what lowering builds for inference: `add(mul(mul(sub(z, mean), inv_std),
//! gamma), beta)` with `z` a convolution, or a convolution plus a bias, read by nothing else, and
//! `mean`, `inv_std`, `gamma` and `beta` per-channel values that do not depend on the input. In
//! training the statistics come from the batch, so nothing matches.

use super::{rewrite, Rewrite, Uses};
use crate::ir::ops::MapFn;
use crate::ir::{Definition, Graph, Op, OpKind, ValueId};
use std::collections::{HashMap, HashSet};

/// One batch norm to fold, by value.
struct Fold {
    /// The ops the fold replaces (the convolution, the bias addition, batch norm's four).
    replaced: Vec<usize>,
    x: ValueId,
    weight: ValueId,
    bias: Option<ValueId>,
    mean: ValueId,
    inv_std: ValueId,
    gamma: ValueId,
    beta: ValueId,
}

pub fn run(graph: &Graph) -> Graph {
    let uses = Uses::of(graph);
    let depends_on_data = depends_on_data(graph);
    // The op defining `value` if it is of this kind and only `reader` reads the value.
    let single = |value: ValueId, reader: usize| -> Option<(usize, &Op)> {
        let op = graph.producer(value)?;
        uses.only(value, reader).then_some((op, &graph.ops[op]))
    };
    let per_channel = |value: ValueId, channels: usize| {
        let shape = graph.shape(value);
        shape.len() == 4
            && shape[1] == channels
            && shape.iter().product::<usize>() == channels
            && !depends_on_data[value.0]
    };
    let mut folds: HashMap<usize, Fold> = HashMap::new();
    for (root, add) in graph.ops.iter().enumerate() {
        let matched = (|| {
            if add.kind != OpKind::Add {
                return None;
            }
            let [scaled, beta] = add.inputs[..] else {
                return None;
            };
            let (scale_op, scale) = single(scaled, root)?;
            let [normalised, gamma] = scale.inputs[..] else {
                return None;
            };
            (scale.kind == OpKind::Mul).then_some(())?;
            let (norm_op, norm) = single(normalised, scale_op)?;
            let [centred, inv_std] = norm.inputs[..] else {
                return None;
            };
            (norm.kind == OpKind::Mul).then_some(())?;
            let (sub_op, sub) = single(centred, norm_op)?;
            let [z, mean] = sub.inputs[..] else {
                return None;
            };
            (sub.kind == OpKind::Sub).then_some(())?;
            let (mut conv_op, mut conv) = single(z, sub_op)?;
            let mut replaced = vec![sub_op, norm_op, scale_op, root];
            let mut bias = None;
            if conv.kind == OpKind::Add {
                let [convolved, b] = conv.inputs[..] else {
                    return None;
                };
                bias = Some(b);
                replaced.push(conv_op);
                (conv_op, conv) = single(convolved, conv_op)?;
            }
            let OpKind::Conv2d(_) = conv.kind else {
                return None;
            };
            replaced.push(conv_op);
            let channels = graph.shape(conv.output)[1];
            let constants = [Some(mean), Some(inv_std), Some(gamma), Some(beta), bias];
            constants
                .iter()
                .flatten()
                .all(|&v| per_channel(v, channels))
                .then_some(())?;
            Some(Fold {
                replaced,
                x: conv.inputs[0],
                weight: conv.inputs[1],
                bias,
                mean,
                inv_std,
                gamma,
                beta,
            })
        })();
        if let Some(fold) = matched {
            folds.insert(root, fold);
        }
    }
    let replaced: HashSet<usize> = folds.values().flat_map(|f| f.replaced.clone()).collect();

    rewrite(graph, |folded, index, renumber| {
        let Some(fold) = folds.get(&index) else {
            return if replaced.contains(&index) {
                Rewrite::Drop
            } else {
                Rewrite::Keep
            };
        };
        let conv_op = *fold.replaced.last().expect("the convolution");
        let OpKind::Conv2d(attrs) = graph.ops[conv_op].kind else {
            unreachable!("matched a convolution")
        };
        let layer = graph.ops[conv_op].layer.as_deref();
        let bn_layer = graph.ops[index].layer.as_deref();
        let v = |value: ValueId| renumber[&value];
        let scale = folded.op(OpKind::Mul, &[v(fold.inv_std), v(fold.gamma)], bn_layer);
        let out_channels = graph.shape(fold.weight)[0];
        let per_filter = folded.op(
            OpKind::Reshape(vec![out_channels, 1, 1, 1]),
            &[scale],
            layer,
        );
        let weight = folded.op(OpKind::Mul, &[v(fold.weight), per_filter], layer);
        let convolved = folded.op(OpKind::Conv2d(attrs), &[v(fold.x), weight], layer);
        let offset = match fold.bias {
            Some(bias) => folded.op(OpKind::Sub, &[v(bias), v(fold.mean)], bn_layer),
            None => folded.op(OpKind::Map(MapFn::Neg), &[v(fold.mean)], bn_layer),
        };
        let scaled_offset = folded.op(OpKind::Mul, &[offset, scale], bn_layer);
        let shift = folded.op(OpKind::Add, &[scaled_offset, v(fold.beta)], bn_layer);
        Rewrite::Replace(folded.op(OpKind::Add, &[convolved, shift], bn_layer))
    })
}

/// Whether each value depends on the data or targets (rather than only on parameters, state
/// and scalars).
fn depends_on_data(graph: &Graph) -> Vec<bool> {
    use crate::ir::InputKind;
    let mut depends: Vec<bool> = graph
        .values
        .iter()
        .map(|v| {
            matches!(&v.definition, Definition::Input(i) if matches!(i.kind, InputKind::Data | InputKind::Target))
        })
        .collect();
    for op in &graph.ops {
        depends[op.output.0] = op.inputs.iter().any(|v| depends[v.0]);
    }
    depends
}
