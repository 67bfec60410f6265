//! Losses computed as single ops, fused with what makes them stable: softmax with cross-entropy
//! (log-sum-exp), binary cross-entropy with PyTorch's clamping of the logs. Mean squared and
//! mean absolute error need no op of their own: they are built from elementwise ops.
//!
//! In generated code a loss is two kernels: partial sums (one per row of logits, or per chunk
//! of predictions) computed in parallel into a workspace, then their mean in one task, in
//! order, so the result does not depend on the number of threads. Their gradients are
//! element-wise or row-wise and fully parallel. Softmax cross-entropy and its gradient, which
//! launch grouping pairs, share one pass over the rows of logits.

use super::layout::{reduce_range, Reduce, Units};
use super::softmax::for_each_line;
use super::{arity, softmax, OpKind};
use crate::codegen::emit::{Emitter, Libcall, Slot, F32, I64};
use crate::codegen::strided::{for_each_element, Strided};
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

pub fn softmax_cross_entropy_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    match (inputs[0].as_slice(), inputs[1].as_slice()) {
        (&[n, k], &[m]) if n == m && k >= 1 => Ok(vec![]),
        _ => Err(format!(
            "expected logits [N,K] and labels [N], found {:?} and {:?}",
            inputs[0], inputs[1]
        )),
    }
}

pub fn softmax_cross_entropy_grad_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 3)?;
    softmax_cross_entropy_shape(&inputs[..2])?;
    if !inputs[2].is_empty() {
        return Err("dloss must be a scalar".into());
    }
    Ok(inputs[0].clone())
}

pub fn binary_cross_entropy_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    if inputs[0] != inputs[1] {
        return Err(format!(
            "prediction {:?} and target {:?} differ",
            inputs[0], inputs[1]
        ));
    }
    Ok(vec![])
}

pub fn binary_cross_entropy_grad_shape(inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 3)?;
    binary_cross_entropy_shape(&inputs[..2])?;
    if !inputs[2].is_empty() {
        return Err("dloss must be a scalar".into());
    }
    Ok(inputs[0].clone())
}

/// The class `labels[n]` holds, which must be an index below `classes`.
fn label(labels: &Tensor, n: usize, classes: usize) -> usize {
    let l = labels.data[n];
    assert!(
        l >= 0.0 && l < classes as f64 && l.fract() == 0.0,
        "label {l} is not a class index below {classes}"
    );
    l as usize
}

/// ln(sum of e^x), shifted by the maximum so exp cannot overflow.
fn log_sum_exp(row: &[f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// `x`, or `floor` where `x` is below it. Unlike `f64::max`, lets NaN through, as PyTorch's
/// clamping does.
fn at_least(x: f64, floor: f64) -> f64 {
    if x < floor {
        floor
    } else {
        x
    }
}

pub fn eval_softmax_cross_entropy(inputs: &[&Tensor]) -> Tensor {
    let (logits, labels) = (inputs[0], inputs[1]);
    let (n, k) = (logits.shape[0], logits.shape[1]);
    // -log softmax(x)[l] = logsumexp(x) - x[l], which stays finite where softmax underflows.
    let total: f64 = (0..n)
        .map(|b| {
            let row = &logits.data[b * k..(b + 1) * k];
            log_sum_exp(row) - row[label(labels, b, k)]
        })
        .sum();
    Tensor::scalar(total / n as f64)
}

pub fn eval_softmax_cross_entropy_grad(inputs: &[&Tensor]) -> Tensor {
    let (logits, labels, dloss) = (inputs[0], inputs[1], inputs[2]);
    let (n, k) = (logits.shape[0], logits.shape[1]);
    let mut dx = softmax::eval(&[logits]);
    for b in 0..n {
        dx.data[b * k + label(labels, b, k)] -= 1.0;
    }
    let scale = dloss.data[0] / n as f64;
    for v in &mut dx.data {
        *v *= scale;
    }
    dx
}

pub fn eval_binary_cross_entropy(inputs: &[&Tensor]) -> Tensor {
    let (p, t) = (inputs[0], inputs[1]);
    // PyTorch clamps the logs at -100, so a confident wrong answer costs 100, not infinity.
    let total: f64 = p
        .data
        .iter()
        .zip(&t.data)
        .map(|(&p, &t)| {
            -(t * at_least(p.ln(), -100.0) + (1.0 - t) * at_least((1.0 - p).ln(), -100.0))
        })
        .sum();
    Tensor::scalar(total / p.len() as f64)
}

pub fn eval_binary_cross_entropy_grad(inputs: &[&Tensor]) -> Tensor {
    let (p, t, dloss) = (inputs[0], inputs[1], inputs[2]);
    let scale = dloss.data[0] / p.len() as f64;
    // PyTorch's: the unclamped derivative, with its denominator kept off zero so p = 0 or 1
    // gives a large finite gradient.
    let data = p
        .data
        .iter()
        .zip(&t.data)
        .map(|(&p, &t)| scale * (p - t) / at_least(p * (1.0 - p), 1e-12))
        .collect();
    Tensor::new(p.shape.clone(), data)
}

/// The gradient of a loss `(prediction, target) -> []` with respect to its prediction, by the
/// backward op `grad_kind`; targets get none.
fn vjp_loss(grad_kind: OpKind, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let inputs = [op.inputs[0], op.inputs[1], grad];
    vec![
        Some(graph.op(grad_kind, &inputs, op.layer.as_deref())),
        None,
    ]
}

pub fn vjp_softmax_cross_entropy(
    op: &Op,
    graph: &mut Graph,
    grad: ValueId,
) -> Vec<Option<ValueId>> {
    vjp_loss(OpKind::SoftmaxCrossEntropyGrad, op, graph, grad)
}

pub fn vjp_binary_cross_entropy(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    vjp_loss(OpKind::BinaryCrossEntropyGrad, op, graph, grad)
}

/// Predictions per partial sum of a binary cross-entropy.
const CHUNK: usize = 4096;
/// Where PyTorch clamps the logs of binary cross-entropy.
const LOG_FLOOR: f32 = -100.0;
/// What keeps the denominator of binary cross-entropy's gradient off zero.
const DENOMINATOR_FLOOR: f32 = 1e-12;

/// A label read by generated code: the class index it holds, and whether it holds one below
/// the number of classes. The interpreter rejects other labels; generated code must not read
/// out of bounds, so it reads class 0 instead and makes what the label touches NaN.
struct Class {
    index: Value,
    valid: Value,
}

impl Class {
    fn read(e: &mut Emitter, labels: Value, row: Value, classes: usize) -> Class {
        let label = e.load(F32, Emitter::frozen(), labels, row, 0);
        let index = e.b.ins().fcvt_to_sint_sat(I64, label);
        let back = e.b.ins().fcvt_from_sint(F32, index);
        let whole = e.b.ins().fcmp(FloatCC::Equal, back, label);
        let below =
            e.b.ins()
                .icmp_imm_u(IntCC::UnsignedLessThan, index, classes as i64);
        let valid = e.b.ins().band(whole, below);
        let zero = e.int(0);
        let index = e.b.ins().select(valid, index, zero);
        Class { index, valid }
    }

    /// `value` where the label is valid, else NaN.
    fn or_nan(&self, e: &mut Emitter, value: Value) -> Value {
        let nan = e.float(f32::NAN);
        e.b.ins().select(self.valid, value, nan)
    }
}

/// A kernel of one task: `output = (sum of the count partial sums in order) / divisor`.
fn emit_mean(
    sink: &mut KernelSink,
    partials: Slot,
    count: usize,
    divisor: usize,
    output: &Operand,
) {
    sink.kernel(1, 0, |e| {
        let (partials, out) = (e.buffer(partials), e.buffer(output.slot));
        let zero = e.float(0.0);
        let total = e.variable(F32, zero);
        e.for_range(0, count as i64, |e, i| {
            let v = e.load(F32, Emitter::frozen(), partials, i, 0);
            let old = e.get(total);
            let new = e.b.ins().fadd(old, v);
            e.set(total, new);
        });
        let total = e.get(total);
        let divisor = e.float(divisor as f32);
        let mean = e.b.ins().fdiv(total, divisor);
        let zero = e.int(0);
        e.store(Emitter::mutable(), mean, out, zero, 0);
    });
}

/// Each row's `logsumexp(x) - x[label]` into a workspace, in parallel; then their mean.
pub fn emit_softmax_cross_entropy(sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    emit_softmax_cross_entropy_rows(sink, &inputs[..2], Some(output), None);
}

/// Row by row: the exponentials stored, then `(exp / sum - onehot) * dloss / N`, the one-hot
/// term applied at the label alone.
pub fn emit_softmax_cross_entropy_grad(
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
) {
    emit_softmax_cross_entropy_rows(sink, &inputs[..2], None, Some([&inputs[2], output]));
}

/// The loss and its gradient from the same logits and labels in one pass over the rows, which
/// shares each row's maximum and exponentials; then the mean of the rows' losses. Launch
/// grouping (`passes::group_launches`) pairs the two ops.
pub fn emit_softmax_cross_entropy_with_grad(
    sink: &mut KernelSink,
    loss: (&[Operand], &Operand),
    gradient: (&[Operand], &Operand),
) {
    let (dloss, dx) = (&gradient.0[2], gradient.1);
    emit_softmax_cross_entropy_rows(sink, &loss.0[..2], Some(loss.1), Some([dloss, dx]));
}

/// Softmax cross-entropy over the rows of `[logits, labels]`: with `loss`, each row's
/// `logsumexp(x) - x[label]` into a workspace and then their mean into `loss`; with `gradient`
/// (`[dloss, dx]`), the exponentials stored in `dx` and scaled to
/// `(exp / sum - onehot) * dloss / N`, the one-hot term applied at the label alone.
fn emit_softmax_cross_entropy_rows(
    sink: &mut KernelSink,
    inputs: &[Operand],
    loss: Option<&Operand>,
    gradient: Option<[&Operand; 2]>,
) {
    let (logits, labels) = (&inputs[0], &inputs[1]);
    let (rows, classes) = (logits.shape[0], logits.shape[1]);
    let losses = loss.map(|_| sink.workspace(rows));
    // The kernel's buffers, and where the losses' and the gradient's (`dloss`, `dx`) are.
    let mut slots = vec![logits.slot, labels.slot];
    let losses_at = losses.map(|slot| {
        slots.push(slot);
        slots.len() - 1
    });
    let gradient_at = gradient.map(|[dloss, dx]| {
        slots.extend([dloss.slot, dx.slot]);
        slots.len() - 2
    });
    for_each_line(sink, &logits.shape, &slots, |e, bases, row| {
        let (x, labels) = (bases[0], bases[1]);
        let dx = gradient_at.map(|at| bases[at + 1]);
        let max = row.max(e, x);
        let sum = row.exponentials(e, x, max, dx);
        let class = Class::read(e, labels, row.number, classes);
        if let Some(at) = losses_at {
            let log = e.libcall(Libcall::Log, sum);
            let log_sum_exp = e.b.ins().fadd(max, log);
            let at_label = e.b.ins().iadd(row.start, class.index);
            let picked = e.load(F32, Emitter::frozen(), x, at_label, 0);
            let loss = e.b.ins().fsub(log_sum_exp, picked);
            let loss = class.or_nan(e, loss);
            e.store(Emitter::mutable(), loss, bases[at], row.number, 0);
        }
        if let (Some(at), Some(dx)) = (gradient_at, dx) {
            let zero = e.int(0);
            let dloss = e.load(F32, Emitter::frozen(), bases[at], zero, 0);
            let rows = e.float(rows as f32);
            let scale = e.b.ins().fdiv(dloss, rows);
            let scale = class.or_nan(e, scale);
            let at_label = e.b.ins().iadd(row.start, class.index);
            let exp_at_label = e.load(F32, Emitter::mutable(), dx, at_label, 0);
            let factor = e.b.ins().fdiv(scale, sum);
            row.scale(e, dx, factor);
            let one = e.float(1.0);
            let p = e.b.ins().fdiv(exp_at_label, sum);
            let p_minus_one = e.b.ins().fsub(p, one);
            let d = e.b.ins().fmul(p_minus_one, scale);
            e.store(Emitter::mutable(), d, dx, at_label, 0);
        }
    });
    if let (Some(losses), Some(loss)) = (losses, loss) {
        emit_mean(sink, losses, rows, rows, loss);
    }
}

/// `x`, or `floor` where `x` is below it; NaN passes, as in `at_least`.
fn emit_at_least(e: &mut Emitter, x: Value, floor: f32, ty: Type) -> Value {
    let floor = e.constant(ty, floor);
    e.select_cmp(FloatCC::LessThan, x, floor, floor, x)
}

/// Partial sums of `-(t log p + (1 - t) log(1 - p))` over chunks of `CHUNK` predictions, in
/// parallel; then their mean.
pub fn emit_binary_cross_entropy(sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let (p, t) = (&inputs[0], &inputs[1]);
    let len = p.len();
    let chunks = len.div_ceil(CHUNK);
    let partials = sink.workspace(chunks);
    let units = Units::new(chunks, len.min(CHUNK));
    sink.kernel(units.tasks(), 0, |e| {
        let (p, t, out) = (e.buffer(p.slot), e.buffer(t.slot), e.buffer(partials));
        units.for_each(e, |e, chunk| {
            let lo = e.b.ins().imul_imm_s(chunk, CHUNK as i64);
            let hi = e.b.ins().iadd_imm_s(lo, CHUNK as i64);
            let limit = e.int(len as i64);
            let hi = e.b.ins().smin(hi, limit);
            let sum = reduce_range(e, lo, hi, Reduce::Sum, |e, i, ty| {
                let p = e.load(ty, Emitter::frozen(), p, i, 0);
                let t = e.load(ty, Emitter::frozen(), t, i, 0);
                let one = e.constant(ty, 1.0);
                let log_p = e.libcall(Libcall::Log, p);
                let log_p = emit_at_least(e, log_p, LOG_FLOOR, ty);
                let q = e.b.ins().fsub(one, p);
                let log_q = e.libcall(Libcall::Log, q);
                let log_q = emit_at_least(e, log_q, LOG_FLOOR, ty);
                let u = e.b.ins().fsub(one, t);
                let hit = e.b.ins().fmul(t, log_p);
                let miss = e.b.ins().fmul(u, log_q);
                let both = e.b.ins().fadd(hit, miss);
                e.b.ins().fneg(both)
            });
            e.store(Emitter::mutable(), sum, out, chunk, 0);
        });
    });
    emit_mean(sink, partials, chunks, len, output);
}

/// `dloss / len * (p - t) / max(p (1 - p), 1e-12)`, element by element.
pub fn emit_binary_cross_entropy_grad(sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let (p, t, dloss) = (&inputs[0], &inputs[1], &inputs[2]);
    let shape = &output.shape;
    let operands = [
        Strided::dense(p.slot, shape),
        Strided::dense(t.slot, shape),
        Strided::broadcast(dloss.slot, &dloss.shape, shape),
    ];
    let len = output.len() as f32;
    for_each_element(
        sink,
        shape,
        &operands,
        &Strided::dense(output.slot, shape),
        |e, v, ty| {
            let (p, t, dloss) = (v[0], v[1], v[2]);
            let len = e.constant(ty, len);
            let scale = e.b.ins().fdiv(dloss, len);
            let one = e.constant(ty, 1.0);
            let q = e.b.ins().fsub(one, p);
            let pq = e.b.ins().fmul(p, q);
            let denominator = emit_at_least(e, pq, DENOMINATOR_FLOOR, ty);
            let difference = e.b.ins().fsub(p, t);
            let numerator = e.b.ins().fmul(scale, difference);
            e.b.ins().fdiv(numerator, denominator)
        },
    );
}
