//! Ops that move elements without arithmetic, and their adjoints: reshape, broadcast and its
//! adjoint `sum_to`, concatenation and slicing.
//!
//! In generated code broadcast, slice and concatenation are strided copies; `sum_to` is a
//! reduction with kernels for its two common shapes, bias gradients over `[N,C,H,W]` (summing
//! contiguous planes) and over `[N,F]` (summing rows, vectorised across columns), of which
//! every other pattern of summed axes is an instance.
//!
//! The pieces of generated reductions that other families share live here too: `Units`, which
//! deals a kernel's work out to tasks, and `Accumulators` with `reduce_range`, which reduce a
//! contiguous range in f32x4 registers in a fixed order.

use super::elementwise::{broadcast, broadcast_indices};
use super::fused::{arg_value, emit_each_step, Arg, Results};
use super::{arity, OpKind};
use crate::codegen::emit::{Emitter, Slot, F32, F32X4, LANES};
use crate::codegen::strided::{for_each_element, Strided};
use crate::codegen::{KernelSink, Operand};
use crate::interp::{strides, Tensor};
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use cranelift_frontend::Variable;

pub fn reshape_shape(shape: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if shape.iter().product::<usize>() != inputs[0].iter().product::<usize>() {
        return Err(format!("cannot reshape {:?} to {shape:?}", inputs[0]));
    }
    Ok(shape.clone())
}

pub fn sum_to_shape(shape: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if shape.len() > inputs[0].len() || broadcast(shape, inputs[0])? != *inputs[0] {
        return Err(format!("{:?} does not sum to {shape:?}", inputs[0]));
    }
    Ok(shape.clone())
}

pub fn broadcast_shape(shape: &Shape, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    if inputs[0].len() > shape.len() || broadcast(inputs[0], shape)? != *shape {
        return Err(format!("{:?} does not broadcast to {shape:?}", inputs[0]));
    }
    Ok(shape.clone())
}

pub fn concat_shape(axis: usize, inputs: &[&Shape]) -> Result<Shape, String> {
    let first = inputs.first().ok_or("concat needs inputs")?;
    if axis >= first.len() {
        return Err(format!("axis {axis} out of range for {first:?}"));
    }
    let mut out = (*first).clone();
    out[axis] = 0;
    for s in inputs {
        let same_elsewhere =
            s.len() == first.len() && (0..s.len()).all(|i| i == axis || s[i] == first[i]);
        if !same_elsewhere {
            return Err(format!(
                "cannot concatenate {first:?} and {s:?} along axis {axis}"
            ));
        }
        out[axis] += s[axis];
    }
    Ok(out)
}

pub fn slice_shape(
    axis: usize,
    start: usize,
    len: usize,
    inputs: &[&Shape],
) -> Result<Shape, String> {
    arity(inputs, 1)?;
    let s = inputs[0];
    if axis >= s.len() || start + len > s[axis] || len == 0 {
        return Err(format!(
            "slice {start}..{} of axis {axis} out of range for {s:?}",
            start + len
        ));
    }
    let mut out = s.clone();
    out[axis] = len;
    Ok(out)
}

pub fn eval_reshape(shape: &Shape, inputs: &[&Tensor]) -> Tensor {
    Tensor::new(shape.clone(), inputs[0].data.clone())
}

pub fn eval_sum_to(shape: &Shape, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let mut out = Tensor::full(shape.clone(), 0.0);
    for (&target, &v) in broadcast_indices(shape, &x.shape).iter().zip(&x.data) {
        out.data[target] += v;
    }
    out
}

pub fn eval_broadcast(shape: &Shape, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let data = broadcast_indices(&x.shape, shape)
        .iter()
        .map(|&i| x.data[i])
        .collect();
    Tensor::new(shape.clone(), data)
}

/// `(outer, inner)`: the products of the extents before `axis` and after it. A tensor is `outer`
/// contiguous blocks of `shape[axis]` runs of `inner` elements.
fn around(shape: &[usize], axis: usize) -> (usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis + 1..].iter().product(),
    )
}

pub fn eval_concat(axis: usize, inputs: &[&Tensor]) -> Tensor {
    let shapes: Vec<&Shape> = inputs.iter().map(|t| &t.shape).collect();
    let shape = concat_shape(axis, &shapes).expect("verified shapes concatenate");
    let (outer, inner) = around(&shape, axis);
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for t in inputs {
            let block = t.shape[axis] * inner;
            data.extend_from_slice(&t.data[o * block..(o + 1) * block]);
        }
    }
    Tensor::new(shape, data)
}

pub fn eval_slice(axis: usize, start: usize, len: usize, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let (outer, inner) = around(&x.shape, axis);
    let mut data = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let from = (o * x.shape[axis] + start) * inner;
        data.extend_from_slice(&x.data[from..from + len * inner]);
    }
    let mut shape = x.shape.clone();
    shape[axis] = len;
    Tensor::new(shape, data)
}

/// The one-input op `kind` applied to `grad`, in the layer of `op`.
fn unary(kind: OpKind, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    vec![Some(graph.op(kind, &[grad], op.layer.as_deref()))]
}

pub fn vjp_reshape(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let shape = graph.shape(op.inputs[0]).clone();
    unary(OpKind::Reshape(shape), op, graph, grad)
}

pub fn vjp_sum_to(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let shape = graph.shape(op.inputs[0]).clone();
    unary(OpKind::Broadcast(shape), op, graph, grad)
}

pub fn vjp_broadcast(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let shape = graph.shape(op.inputs[0]).clone();
    unary(OpKind::SumTo(shape), op, graph, grad)
}

pub fn vjp_concat(axis: usize, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let mut start = 0;
    op.inputs
        .iter()
        .map(|&input| {
            let len = graph.shape(input)[axis];
            let slice = OpKind::Slice { axis, start, len };
            start += len;
            Some(graph.op(slice, &[grad], op.layer.as_deref()))
        })
        .collect()
}

pub fn vjp_slice(op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let OpKind::Slice { axis, start, len } = op.kind else {
        unreachable!(
            "internal error: slice's rule called on `{}`",
            op.kind.name()
        )
    };
    let shape = graph.shape(op.inputs[0]).clone();
    // Zeros where the slice did not read, on either side of `grad`.
    let mut zeros = |extent: usize| {
        let mut shape = shape.clone();
        shape[axis] = extent;
        graph.op(OpKind::Fill { value: 0.0, shape }, &[], op.layer.as_deref())
    };
    let mut parts = Vec::new();
    if start > 0 {
        parts.push(zeros(start));
    }
    parts.push(grad);
    let after = shape[axis] - start - len;
    if after > 0 {
        parts.push(zeros(after));
    }
    if parts.len() == 1 {
        return vec![Some(grad)];
    }
    vec![Some(graph.op(
        OpKind::Concat { axis },
        &parts,
        op.layer.as_deref(),
    ))]
}

/// Work, in elements, below which a task is not worth splitting off: handing it to a thread
/// costs about as much as running it.
const MIN_TASK_WORK: usize = 8 * 1024;
/// f32x4 accumulators a reduction keeps, and vectors in a strip of columns.
const ACCUMULATORS: usize = 4;
/// Output columns a task of a column-wise `sum_to` covers (whole strips of accumulators).
const COLUMNS: usize = 64;

/// Independent pieces of a kernel's work (output elements, rows, column blocks) dealt out to
/// tasks in runs of whole pieces, each task doing at least `MIN_TASK_WORK` elements of work
/// where there is that much: a small op runs as one task on the calling thread, a large one
/// spreads over the pool.
pub(crate) struct Units {
    count: usize,
    per_task: usize,
}

impl Units {
    /// `count` pieces of about `work` elements each.
    pub(crate) fn new(count: usize, work: usize) -> Units {
        let per_task = MIN_TASK_WORK.div_ceil(work.max(1)).clamp(1, count.max(1));
        Units { count, per_task }
    }

    pub(crate) fn tasks(&self) -> usize {
        self.count.div_ceil(self.per_task)
    }

    /// The pieces `lo..hi` of this call's tasks.
    pub(crate) fn range(&self, e: &mut Emitter) -> (Value, Value) {
        let (begin, end) = (e.begin(), e.end());
        let lo = e.b.ins().imul_imm_s(begin, self.per_task as i64);
        let hi = e.b.ins().imul_imm_s(end, self.per_task as i64);
        let count = e.int(self.count as i64);
        (lo, e.b.ins().smin(hi, count))
    }

    /// Runs `body(piece)` over the pieces of this call's tasks.
    pub(crate) fn for_each(&self, e: &mut Emitter, body: impl FnOnce(&mut Emitter, Value)) {
        let (lo, hi) = self.range(e);
        e.for_loop(lo, hi, 1, body);
    }
}

/// Input axes merged for a reduction: `extent` positions `stride` elements apart in the input,
/// either `kept` (axes of the output too) or summed over.
#[derive(Clone, Copy, Debug)]
struct Group {
    extent: usize,
    stride: i64,
    kept: bool,
}

/// The axes of `input` as alternating kept and summed groups, outermost first, for summing it
/// to `target`. Axes of extent 1 are dropped and neighbours of the same kind merged (the input
/// is dense, so they are contiguous); the innermost group has stride 1.
fn reduction_groups(input: &[usize], target: &[usize]) -> Vec<Group> {
    let lead = input.len() - target.len();
    let input_strides = strides(input);
    let mut groups: Vec<Group> = Vec::new();
    for (axis, &extent) in input.iter().enumerate() {
        if extent == 1 {
            continue;
        }
        let kept = axis >= lead && target[axis - lead] != 1;
        let stride = input_strides[axis] as i64;
        match groups.last_mut() {
            Some(last) if last.kept == kept => {
                last.extent *= extent;
                last.stride = stride;
            }
            _ => groups.push(Group {
                extent,
                stride,
                kept,
            }),
        }
    }
    if groups.is_empty() {
        // A single element: it is its own sum.
        groups.push(Group {
            extent: 1,
            stride: 1,
            kept: true,
        });
    }
    groups
}

fn extent_product(groups: &[Group]) -> usize {
    groups.iter().map(|g| g.extent).product()
}

/// The input offset of position `index` (counted in row-major order) over `groups`.
fn offset_of(e: &mut Emitter, index: Value, groups: &[Group]) -> Value {
    let mut offset = e.int(0);
    let mut rest = index;
    for (k, group) in groups.iter().enumerate().rev() {
        let coordinate = if k == 0 {
            rest
        } else {
            let c = e.b.ins().urem_imm_s(rest, group.extent as i64);
            rest = e.b.ins().udiv_imm_s(rest, group.extent as i64);
            c
        };
        let step = e.b.ins().imul_imm_s(coordinate, group.stride);
        offset = e.b.ins().iadd(offset, step);
    }
    offset
}

/// Runs `body(base + offset)` for the offset of every position over `groups`, in row-major
/// order: the order a reduction adds its terms in.
fn for_each_position(
    e: &mut Emitter,
    groups: &[Group],
    base: Value,
    body: &mut dyn FnMut(&mut Emitter, Value),
) {
    let Some((group, inner)) = groups.split_first() else {
        return body(e, base);
    };
    e.for_range(0, group.extent as i64, |e, i| {
        let step = e.b.ins().imul_imm_s(i, group.stride);
        let offset = e.b.ins().iadd(base, step);
        for_each_position(e, inner, offset, body);
    });
}

/// The associative operations reductions combine terms with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reduce {
    /// Skips NaN terms, as the interpreter's `f64::max` does.
    Max,
    Sum,
}

impl Reduce {
    fn identity(self) -> f32 {
        match self {
            Reduce::Max => f32::NEG_INFINITY,
            Reduce::Sum => 0.0,
        }
    }

    /// `so_far` combined with `term` (F32 or F32X4, lane-wise).
    pub(crate) fn combine(self, e: &mut Emitter, so_far: Value, term: Value) -> Value {
        match self {
            // A compare and a blend: Cranelift's `fmax`, which orders zeros and NaNs, is a
            // long sequence, and would sit on the accumulator's dependency chain.
            Reduce::Max => e.select_cmp(FloatCC::GreaterThan, term, so_far, term, so_far),
            Reduce::Sum => e.b.ins().fadd(so_far, term),
        }
    }

    /// The identity in every lane of `ty`.
    pub(crate) fn start(self, e: &mut Emitter, ty: Type) -> Value {
        e.constant(ty, self.identity())
    }
}

/// A reduction in registers: `ACCUMULATORS` f32x4 accumulators that take the vectors of a
/// strip in turn (independent chains hide the latency of each step), and a scalar one for the
/// tail. They are combined in a fixed order, so the result depends on the code alone.
pub(crate) struct Accumulators {
    op: Reduce,
    vectors: [Variable; ACCUMULATORS],
    scalar: Variable,
}

impl Accumulators {
    pub(crate) fn new(e: &mut Emitter, op: Reduce) -> Accumulators {
        let vector = op.start(e, F32X4);
        let scalar = op.start(e, F32);
        Accumulators {
            op,
            vectors: std::array::from_fn(|_| e.variable(F32X4, vector)),
            scalar: e.variable(F32, scalar),
        }
    }

    /// Combines `term(index, ty)` over the elements `lo..hi` of contiguous memory: f32x4 strips
    /// of `ACCUMULATORS` vectors, single vectors, then single floats.
    pub(crate) fn fold(
        &self,
        e: &mut Emitter,
        lo: Value,
        hi: Value,
        mut term: impl FnMut(&mut Emitter, Value, Type) -> Value,
    ) {
        fold_together(std::slice::from_ref(self), e, lo, hi, |e, index, ty| {
            vec![term(e, index, ty)]
        });
    }

    /// The result: the vectors pairwise, their lanes in order, then the scalar.
    pub(crate) fn total(&self, e: &mut Emitter) -> Value {
        let v: Vec<Value> = self.vectors.iter().map(|&a| e.get(a)).collect();
        let low = self.op.combine(e, v[0], v[1]);
        let high = self.op.combine(e, v[2], v[3]);
        let vector = self.op.combine(e, low, high);
        let mut total = e.b.ins().extractlane(vector, 0);
        for lane in 1..LANES as u8 {
            let x = e.b.ins().extractlane(vector, lane);
            total = self.op.combine(e, total, x);
        }
        let scalar = e.get(self.scalar);
        self.op.combine(e, total, scalar)
    }
}

/// Combines the terms `terms(index, ty)` over the elements `lo..hi` of contiguous memory, the
/// k-th into `accumulators[k]`, as [`Accumulators::fold`] does each.
pub(crate) fn fold_together(
    accumulators: &[Accumulators],
    e: &mut Emitter,
    lo: Value,
    hi: Value,
    mut terms: impl FnMut(&mut Emitter, Value, Type) -> Vec<Value>,
) {
    for_each_strip(e, lo, hi, |e, j, ty, count| {
        for k in 0..count {
            let index = e.b.ins().iadd_imm_s(j, k as i64 * LANES);
            let values = terms(e, index, ty);
            for (accumulators, t) in accumulators.iter().zip(values) {
                let accumulator = if ty == F32 {
                    accumulators.scalar
                } else {
                    accumulators.vectors[k]
                };
                let so_far = e.get(accumulator);
                let new = accumulators.op.combine(e, so_far, t);
                e.set(accumulator, new);
            }
        }
    });
}

/// `term(index, ty)` reduced with `op` over the elements `lo..hi` of contiguous memory.
pub(crate) fn reduce_range(
    e: &mut Emitter,
    lo: Value,
    hi: Value,
    op: Reduce,
    term: impl FnMut(&mut Emitter, Value, Type) -> Value,
) -> Value {
    let accumulators = Accumulators::new(e, op);
    accumulators.fold(e, lo, hi, term);
    accumulators.total(e)
}

/// Runs `body(j, ty, count)` over columns `lo..hi` in strips: `ACCUMULATORS` f32x4 vectors at a
/// time, then single vectors, then single floats. `body` handles `count` vectors of `ty` from
/// column `j` on.
fn for_each_strip(
    e: &mut Emitter,
    lo: Value,
    hi: Value,
    mut body: impl FnMut(&mut Emitter, Value, Type, usize),
) {
    let wide = ACCUMULATORS as i64 * LANES;
    let count = e.b.ins().isub(hi, lo);
    let wide_count = e.b.ins().band_imm_s(count, !(wide - 1));
    let wide_end = e.b.ins().iadd(lo, wide_count);
    e.for_loop(lo, wide_end, wide, |e, j| body(e, j, F32X4, ACCUMULATORS));
    let rest = e.b.ins().isub(hi, wide_end);
    let vector_count = e.b.ins().band_imm_s(rest, !(LANES - 1));
    let vector_end = e.b.ins().iadd(wide_end, vector_count);
    e.for_loop(wide_end, vector_end, LANES, |e, j| body(e, j, F32X4, 1));
    e.for_loop(vector_end, hi, 1, |e, j| body(e, j, F32, 1));
}

/// `sum_to`: every output element is the sum, in row-major order, of the input elements that
/// broadcast from it. The input's axes, merged into alternating kept and summed groups, end in
/// a contiguous run of one kind or the other, which decides the kernel (`sum_runs` or
/// `sum_columns`); both add each output element's terms in one task, in a fixed order.
pub fn emit_sum_to(sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let pass = Results {
        summed: inputs[0].shape.clone(),
        target: output.shape.clone(),
        steps: &[],
        sums: vec![(Arg::Input(0), 0)],
        stores: Vec::new(),
    };
    emit_sum(sink, inputs, &pass, output);
}

/// The elements sums add up: one tensor's, or those of elementwise `steps` (a fused chain's)
/// over tensors of the summed shape and of the sums' own shape (`per_output`: constant over
/// what is summed into each output element, as a per-channel mean), computed as they are read;
/// and the steps' values written whole as they are computed (`stores`).
struct Terms<'a> {
    slots: Vec<Slot>,
    per_output: Vec<bool>,
    pass: &'a Results<'a>,
    output: Slot,
}

impl Terms<'_> {
    /// The terms' buffers, in a kernel.
    fn buffers(&self, e: &mut Emitter) -> Vec<Value> {
        self.slots.iter().map(|&slot| e.buffer(slot)).collect()
    }

    /// The per-output inputs' `ty` from output element `index + offset` on, in input order.
    fn per_output(
        &self,
        e: &mut Emitter,
        buffers: &[Value],
        index: Value,
        offset: i64,
        ty: Type,
    ) -> Vec<Value> {
        buffers
            .iter()
            .zip(&self.per_output)
            .filter(|(_, &per_output)| per_output)
            .map(|(&base, _)| e.load(ty, Emitter::frozen(), base, index, offset))
            .collect()
    }

    /// The `ty` of each sum's terms from summed element `index + offset` on, where the
    /// per-output inputs are `outputs` (of `ty`, from [`Terms::per_output`]); the stored
    /// results are written to `out` there.
    fn load(
        &self,
        e: &mut Emitter,
        [buffers, outputs]: [&[Value]; 2],
        out: Value,
        index: Value,
        offset: i64,
        ty: Type,
    ) -> Vec<Value> {
        let mut outputs = outputs.iter();
        let loaded: Vec<Value> = buffers
            .iter()
            .zip(&self.per_output)
            .map(|(&base, &per_output)| match per_output {
                true => *outputs.next().expect("a value per per-output input"),
                false => e.load(ty, Emitter::frozen(), base, index, offset),
            })
            .collect();
        let values = emit_each_step(e, self.pass.steps, &loaded, ty);
        let value = |arg: Arg| arg_value(arg, &loaded, &values);
        for &(arg, at) in &self.pass.stores {
            e.store(
                Emitter::mutable(),
                value(arg),
                out,
                index,
                offset + at as i64,
            );
        }
        self.pass.sums.iter().map(|&(arg, _)| value(arg)).collect()
    }
}

/// The sums (and stored results) of a reducing pass over `inputs` (see [`Terms`]), into the
/// output's buffer at their offsets.
pub fn emit_sum(sink: &mut KernelSink, inputs: &[Operand], pass: &Results, output: &Operand) {
    let terms = Terms {
        slots: inputs.iter().map(|input| input.slot).collect(),
        per_output: inputs
            .iter()
            .map(|input| input.shape != pass.summed)
            .collect(),
        pass,
        output: output.slot,
    };
    let groups = reduction_groups(&pass.summed, &pass.target);
    let kept: Vec<Group> = groups.iter().filter(|g| g.kept).copied().collect();
    let summed_groups: Vec<Group> = groups.iter().filter(|g| !g.kept).copied().collect();
    let (innermost, _) = groups.split_last().expect("at least one group");
    let target = pass.target.iter().product();
    if innermost.kept {
        let (columns, rows) = kept.split_last().expect("the innermost group is kept");
        sum_columns(sink, &terms, rows, columns.extent, &summed_groups);
    } else {
        let (run, outer) = summed_groups
            .split_last()
            .expect("the innermost group is summed");
        let total = pass.summed.iter().product();
        sum_runs(sink, &terms, [total, target], &kept, outer, run.extent);
    }
}

/// `sum_to` where the innermost axes are summed (a bias gradient `[N,C,H,W] -> [1,C,1,1]`):
/// each output element is the sum of contiguous runs of `run` elements, one per position over
/// `outer`. A call walks the positions over `outer` once, and at each adds the run of every
/// output element of its tasks (f32x4 accumulators, then a horizontal sum) to that element:
/// memory is read in order (all channels of image 0, then of image 1...), and each element's
/// terms are added in row-major order whatever the split. Tasks are output elements. The
/// running sums live in the thread's scratch, and reach the output once, at the end: neighbouring
/// output elements are other threads', and adding to them in place at every position made the
/// threads pass their cache lines back and forth (2 threads took 2 to 3 times as long as one).
fn sum_runs(
    sink: &mut KernelSink,
    terms: &Terms,
    [summed, target]: [usize; 2],
    kept: &[Group],
    outer: &[Group],
    run: usize,
) {
    let units = Units::new(target, summed / target);
    let sums = &terms.pass.sums;
    // Each sum's running totals, for every output element (a call uses those of its tasks).
    let scratch = sums.len() * target;
    sink.kernel(units.tasks(), scratch, |e| {
        let (x, out, totals) = (terms.buffers(e), e.buffer(terms.output), e.scratch());
        let (lo, hi) = units.range(e);
        let zero = e.float(0.0);
        e.for_loop(lo, hi, 1, |e, o| {
            for k in 0..sums.len() {
                e.store(Emitter::mutable(), zero, totals, o, (k * target) as i64)
            }
        });
        let origin = e.int(0);
        for_each_position(e, outer, origin, &mut |e, position| {
            e.for_loop(lo, hi, 1, |e, o| {
                let offset = offset_of(e, o, kept);
                let start = e.b.ins().iadd(position, offset);
                let end = e.b.ins().iadd_imm_s(start, run as i64);
                let scalars = terms.per_output(e, &x, o, 0, F32);
                let vectors: Vec<Value> = scalars.iter().map(|&v| e.splat(F32X4, v)).collect();
                let accumulators: Vec<Accumulators> = sums
                    .iter()
                    .map(|_| Accumulators::new(e, Reduce::Sum))
                    .collect();
                fold_together(&accumulators, e, start, end, |e, i, ty| {
                    let outputs = if ty == F32 { &scalars } else { &vectors };
                    terms.load(e, [&x, outputs], out, i, 0, ty)
                });
                for (k, accumulators) in accumulators.iter().enumerate() {
                    let run_total = accumulators.total(e);
                    let at = (k * target) as i64;
                    let old = e.load(F32, Emitter::mutable(), totals, o, at);
                    let new = e.b.ins().fadd(old, run_total);
                    e.store(Emitter::mutable(), new, totals, o, at);
                }
            });
        });
        e.for_loop(lo, hi, 1, |e, o| {
            for (k, &(_, at)) in sums.iter().enumerate() {
                let total = e.load(F32, Emitter::mutable(), totals, o, (k * target) as i64);
                e.store(Emitter::mutable(), total, out, o, at as i64)
            }
        });
    });
}

/// `sum_to` where the innermost axis is kept (a bias gradient `[N,F] -> [F]`): the output is
/// rows (positions over `rows`) of `columns` contiguous elements, and each strip of columns
/// adds the matching strip of the input at every position over `summed`, vectorised across
/// columns. Tasks are blocks of `COLUMNS` columns of a row.
fn sum_columns(
    sink: &mut KernelSink,
    terms: &Terms,
    rows: &[Group],
    columns: usize,
    summed: &[Group],
) {
    let blocks = columns.div_ceil(COLUMNS);
    let units = Units::new(
        extent_product(rows) * blocks,
        columns.min(COLUMNS) * extent_product(summed),
    );
    let sums = &terms.pass.sums;
    sink.kernel(units.tasks(), 0, |e| {
        let (x, out) = (terms.buffers(e), e.buffer(terms.output));
        units.for_each(e, |e, unit| {
            let row = e.b.ins().udiv_imm_s(unit, blocks as i64);
            let block = e.b.ins().urem_imm_s(unit, blocks as i64);
            let lo = e.b.ins().imul_imm_s(block, COLUMNS as i64);
            let hi = e.b.ins().iadd_imm_s(lo, COLUMNS as i64);
            let limit = e.int(columns as i64);
            let hi = e.b.ins().smin(hi, limit);
            let base = offset_of(e, row, rows);
            let out_base = e.b.ins().imul_imm_s(row, columns as i64);
            for_each_strip(e, lo, hi, |e, j, ty, count| {
                let zero = e.constant(ty, 0.0);
                // The running sum of each vector of the strip, for each sum.
                let totals: Vec<Vec<Variable>> = (0..count)
                    .map(|_| sums.iter().map(|_| e.variable(ty, zero)).collect())
                    .collect();
                let start = e.b.ins().iadd(base, j);
                let index = e.b.ins().iadd(out_base, j);
                let outputs: Vec<Vec<Value>> = (0..count as i64)
                    .map(|k| terms.per_output(e, &x, index, k * LANES, ty))
                    .collect();
                for_each_position(e, summed, start, &mut |e, offset| {
                    for (k, sums) in totals.iter().enumerate() {
                        let lane = k as i64 * LANES;
                        let values = terms.load(e, [&x, &outputs[k]], out, offset, lane, ty);
                        for (&sum, v) in sums.iter().zip(values) {
                            let so_far = e.get(sum);
                            let new = e.b.ins().fadd(so_far, v);
                            e.set(sum, new);
                        }
                    }
                });
                for (k, totals) in totals.iter().enumerate() {
                    for (&sum, &(_, at)) in totals.iter().zip(sums) {
                        let total = e.get(sum);
                        let lane = (k * LANES as usize + at) as i64;
                        e.store(Emitter::mutable(), total, out, index, lane);
                    }
                }
            });
        });
    });
}

/// Copies the elements of `from` to the same positions of `to`, over `shape`.
fn copy(sink: &mut KernelSink, shape: &[usize], from: Strided, to: Strided) {
    for_each_element(sink, shape, &[from], &to, |_, v, _| v[0]);
}

/// A tensor of `shape` at `offset` elements into a buffer whose dense layout is `layout` (a
/// part of a larger tensor along one axis).
fn part_of(slot: Slot, layout: &[usize], offset: i64) -> Strided {
    Strided {
        slot,
        strides: strides(layout).into_iter().map(|s| s as i64).collect(),
        offset,
    }
}

pub fn emit_broadcast(sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let x = &inputs[0];
    let from = Strided::broadcast(x.slot, &x.shape, &output.shape);
    copy(
        sink,
        &output.shape,
        from,
        Strided::dense(output.slot, &output.shape),
    );
}

/// One copy per input, into its place along `axis` of the output.
pub fn emit_concat(axis: usize, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let axis_stride = strides(&output.shape)[axis] as i64;
    let mut start = 0;
    for x in inputs {
        let to = part_of(output.slot, &output.shape, start as i64 * axis_stride);
        copy(sink, &x.shape, Strided::dense(x.slot, &x.shape), to);
        start += x.shape[axis];
    }
}

pub fn emit_slice(
    axis: usize,
    start: usize,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
) {
    let x = &inputs[0];
    let from = part_of(x.slot, &x.shape, (start * strides(&x.shape)[axis]) as i64);
    copy(
        sink,
        &output.shape,
        from,
        Strided::dense(output.slot, &output.shape),
    );
}
