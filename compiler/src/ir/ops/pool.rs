//! Max and average pooling over 2-D windows, and their backward ops.
//!
//! Generated code runs one task per (n, c) plane. Along each axis the output positions split
//! into segments (`Segment`): the run whose windows lie wholly inside the input, one loop with
//! the kernel's full extent, and the clipped windows at the edges, each with its own window.
//! Every window's cells are then constant offsets from its first cell, so small windows unroll
//! completely, and where windows slide by one column, four neighbouring windows are computed at
//! once in f32x4 lanes. The backward ops scatter into their zeroed plane window by window, in
//! order, so overlapping windows add up the same way whatever the thread count.

use super::{arity, OpKind, PoolAttrs};
use crate::codegen::emit::{Emitter, Slot, F32, F32X4, I64, LANES};
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, ConstantData, InstBuilder, Type, Value};
use std::ops::Range;

/// Output extent of one axis (PyTorch's rule, ceil mode included), or `None` when the window
/// does not fit.
pub fn out_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: (usize, usize),
    ceil: bool,
) -> Option<usize> {
    let room = (input + pad.0 + pad.1).checked_sub(kernel)?;
    if !ceil {
        return Some(room / stride + 1);
    }
    let mut out = room.div_ceil(stride) + 1;
    // The last window must start inside the input or the leading padding.
    if (out - 1) * stride >= input + pad.0 {
        out -= 1;
    }
    Some(out)
}

fn out_hw(a: &PoolAttrs, hw: [usize; 2]) -> Result<[usize; 2], String> {
    if a.kernel.contains(&0) || a.stride.contains(&0) {
        return Err("kernel and stride must be positive".into());
    }
    let h = out_extent(
        hw[0],
        a.kernel[0],
        a.stride[0],
        (a.pad[0], a.pad[1]),
        a.ceil,
    );
    let w = out_extent(
        hw[1],
        a.kernel[1],
        a.stride[1],
        (a.pad[2], a.pad[3]),
        a.ceil,
    );
    match (h, w) {
        (Some(h), Some(w)) => Ok([h, w]),
        _ => Err(format!("window {:?} does not fit input {hw:?}", a.kernel)),
    }
}

pub fn shape(a: &PoolAttrs, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    let &[n, c, h, w] = inputs[0].as_slice() else {
        return Err("expected x [N,C,H,W]".into());
    };
    let [oh, ow] = out_hw(a, [h, w])?;
    Ok(vec![n, c, oh, ow])
}

/// The largest plane whose every index a float holds exactly.
const MOST_INDEXED: usize = 1 << 24;

/// `x [N,C,H,W] -> [2,N,C,OH,OW]`: the pooled tensor, then each maximum's index in its plane.
pub fn max_with_indices_shape(a: &PoolAttrs, inputs: &[&Shape]) -> Result<Shape, String> {
    let pooled = shape(a, inputs)?;
    let plane = inputs[0][2] * inputs[0][3];
    if plane > MOST_INDEXED {
        return Err(format!(
            "planes of {plane} elements hold indices a float does not (at most {MOST_INDEXED})"
        ));
    }
    Ok([2].iter().chain(&pooled).copied().collect())
}

pub fn max_grad_shape(a: &PoolAttrs, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    let y = shape(a, &inputs[..1])?;
    if &y != inputs[1] {
        return Err(format!("dy {:?} is not the output shape {y:?}", inputs[1]));
    }
    Ok(inputs[0].clone())
}

pub fn avg_grad_shape(a: &PoolAttrs, hw: [usize; 2], inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 1)?;
    let &[n, c, oh, ow] = inputs[0].as_slice() else {
        return Err("expected dy [N,C,OH,OW]".into());
    };
    if out_hw(a, hw)? != [oh, ow] {
        return Err(format!("dy {:?} does not fit input {hw:?}", inputs[0]));
    }
    Ok(vec![n, c, hw[0], hw[1]])
}

/// Visits every pooling window over an input of shape `x` as `visit(y, cells, padded)`: the
/// flat index of the output element, the flat indices of the window's cells inside the input in
/// row-major window order, and how many of its cells lie within the padded input (PyTorch's
/// `count_include_pad` divisor: in ceil mode the last window may overhang the padding too).
/// With padding wider than half the kernel, which PyTorch forbids, a window may have no cells.
fn for_each_window(a: &PoolAttrs, x: &[usize], mut visit: impl FnMut(usize, &[usize], usize)) {
    let &[n, c, h, w] = x else {
        unreachable!("verified shapes are 4-D")
    };
    let [oh, ow] = out_hw(a, [h, w]).expect("verified shapes fit");
    let mut cells = Vec::new();
    for plane in 0..n * c {
        for i in 0..oh {
            let (rows, padded_rows) = span(i, a.kernel[0], a.stride[0], (a.pad[0], a.pad[1]), h);
            for j in 0..ow {
                let (cols, padded_cols) =
                    span(j, a.kernel[1], a.stride[1], (a.pad[2], a.pad[3]), w);
                cells.clear();
                for r in rows.clone() {
                    cells.extend(cols.clone().map(|s| (plane * h + r) * w + s));
                }
                visit((plane * oh + i) * ow + j, &cells, padded_rows * padded_cols);
            }
        }
    }
}

/// The input coordinates that window `out` covers along one axis, and how many of its positions
/// lie within the padded axis.
fn span(
    out: usize,
    kernel: usize,
    stride: usize,
    pad: (usize, usize),
    extent: usize,
) -> (Range<usize>, usize) {
    // In padded coordinates, where the input starts at `pad.0`.
    let start = out * stride;
    let end = (start + kernel).min(pad.0 + extent + pad.1);
    let inside = start.max(pad.0) - pad.0..end.min(pad.0 + extent).saturating_sub(pad.0);
    (inside, end - start)
}

/// Whether every window holds a cell of the input, so that max pooling's gradient passes each
/// element of dy to exactly one cell and sums over a plane what dy sums to: a window that starts
/// inside the leading padding reaches the input when the padding is narrower than the kernel,
/// and the last one starts before the trailing padding for the same reason.
pub fn every_window_has_a_cell(a: &PoolAttrs) -> bool {
    (0..4).all(|side| a.pad[side] < a.kernel[side / 2])
}

/// The cell holding the window's maximum, the first in window order among equals; padding never
/// wins, so an empty window has none.
fn first_max(x: &[f64], cells: &[usize]) -> Option<usize> {
    cells
        .iter()
        .copied()
        .reduce(|best, k| if x[k] > x[best] { k } else { best })
}

/// The weight of each cell in the average of a window of `cells` cells, `padded` of them within
/// the padded input. A window with no cells averages to the empty sum, 0, whatever its divisor.
fn avg_weight(a: &PoolAttrs, cells: usize, padded: usize) -> f64 {
    let divisor = if a.include_pad { padded } else { cells };
    1.0 / divisor as f64
}

pub fn eval_max(a: &PoolAttrs, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let y_shape = shape(a, &[&x.shape]).expect("verified shapes fit");
    let mut y = vec![0.0; y_shape.iter().product()];
    for_each_window(a, &x.shape, |yi, cells, _| {
        y[yi] = first_max(&x.data, cells).map_or(0.0, |k| x.data[k]);
    });
    Tensor::new(y_shape, y)
}

pub fn eval_max_with_indices(a: &PoolAttrs, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let shape = max_with_indices_shape(a, &[&x.shape]).expect("verified shapes fit");
    let half: usize = shape[1..].iter().product();
    let plane = x.shape[2] * x.shape[3];
    let mut y = vec![0.0; 2 * half];
    for_each_window(a, &x.shape, |yi, cells, _| {
        let first = first_max(&x.data, cells);
        y[yi] = first.map_or(0.0, |k| x.data[k]);
        y[half + yi] = first.map_or(-1.0, |k| (k % plane) as f64);
    });
    Tensor::new(shape, y)
}

pub fn eval_max_grad(a: &PoolAttrs, inputs: &[&Tensor]) -> Tensor {
    let (x, dy) = (inputs[0], inputs[1]);
    let mut dx = vec![0.0; x.len()];
    for_each_window(a, &x.shape, |yi, cells, _| {
        if let Some(k) = first_max(&x.data, cells) {
            dx[k] += dy.data[yi];
        }
    });
    Tensor::new(x.shape.clone(), dx)
}

pub fn eval_avg(a: &PoolAttrs, inputs: &[&Tensor]) -> Tensor {
    let x = inputs[0];
    let y_shape = shape(a, &[&x.shape]).expect("verified shapes fit");
    let mut y = vec![0.0; y_shape.iter().product()];
    for_each_window(a, &x.shape, |yi, cells, padded| {
        let weight = avg_weight(a, cells.len(), padded);
        y[yi] = cells.iter().map(|&k| x.data[k] * weight).sum();
    });
    Tensor::new(y_shape, y)
}

pub fn eval_avg_grad(a: &PoolAttrs, hw: [usize; 2], inputs: &[&Tensor]) -> Tensor {
    let dy = inputs[0];
    let x_shape = avg_grad_shape(a, hw, &[&dy.shape]).expect("verified shapes fit");
    let mut dx = vec![0.0; x_shape.iter().product()];
    for_each_window(a, &x_shape, |yi, cells, padded| {
        let weight = avg_weight(a, cells.len(), padded);
        for &k in cells {
            dx[k] += dy.data[yi] * weight;
        }
    });
    Tensor::new(x_shape, dx)
}

pub fn vjp_max(a: &PoolAttrs, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let dx = graph.op(
        OpKind::MaxPoolGrad(*a),
        &[op.inputs[0], grad],
        op.layer.as_deref(),
    );
    vec![Some(dx)]
}

pub fn vjp_avg(a: &PoolAttrs, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let x = graph.shape(op.inputs[0]);
    let hw = [x[2], x[3]];
    let dx = graph.op(OpKind::AvgPoolGrad(*a, hw), &[grad], op.layer.as_deref());
    vec![Some(dx)]
}

pub fn emit_max(a: &PoolAttrs, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    emit_pool(a, Reduction::Max, sink, inputs, output);
}

pub fn emit_avg(a: &PoolAttrs, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    emit_pool(a, Reduction::Sum, sink, inputs, output);
}

/// Max pooling (`Reduction::Max`) or average pooling (`Reduction::Sum`, then the weight).
fn emit_pool(
    a: &PoolAttrs,
    reduction: Reduction,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
) {
    let geometry = Geometry::new(a, &inputs[0].shape);
    let unroll = (VECTOR_BUDGET / (a.kernel[0] * a.kernel[1])).clamp(1, 4);
    let slots = [inputs[0].slot, output.slot];
    geometry.kernel(sink, &slots, |e, buffers, x_plane, y_plane| {
        let [x, y] = buffers else {
            unreachable!("two buffers")
        };
        geometry.for_each_window(e, x_plane, y_plane, unroll, &mut |e, window, ty| {
            let value = if window.is_empty() {
                e.constant(ty, 0.0)
            } else {
                let value = reduce(e, reduction, *x, window, geometry.width, ty);
                match reduction {
                    Reduction::Max => value,
                    Reduction::Sum => {
                        let weight = avg_weight(a, window.rows * window.cols, window.padded);
                        let weight = e.constant(ty, weight as f32);
                        e.b.ins().fmul(value, weight)
                    }
                }
            };
            e.store(Emitter::mutable(), value, *y, window.y, 0);
        });
    });
}

/// The maxima, as [`emit_max`] writes them, then each one's index in its plane as a float.
pub fn emit_max_with_indices(
    a: &PoolAttrs,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
) {
    let geometry = Geometry::new(a, &inputs[0].shape);
    let half = (output.len() / 2) as i64;
    let width = geometry.width;
    let slots = [inputs[0].slot, output.slot];
    geometry.kernel(sink, &slots, |e, buffers, x_plane, y_plane| {
        let [x, y] = buffers else {
            unreachable!("two buffers")
        };
        geometry.for_each_window(e, x_plane, y_plane, 1, &mut |e, window, ty| {
            let (value, index) = if window.is_empty() {
                (e.constant(ty, 0.0), e.constant(ty, -1.0))
            } else {
                let mut offset = |e: &mut Emitter, row, col| {
                    let down = e.b.ins().imul_imm_s(row, width as i64);
                    e.b.ins().iadd(down, col)
                };
                let [value, at] = first_max_position(e, *x, window, width, ty, &mut offset);
                // The (first) window's first cell's index, plus the maximum's offset from it,
                // plus, lane by lane, the lane's column.
                let first = e.b.ins().imul_imm_s(window.row, width as i64);
                let first = e.b.ins().iadd(first, window.col);
                let index = if ty == F32 {
                    let index = e.b.ins().iadd(first, at);
                    e.b.ins().fcvt_from_sint(F32, index)
                } else {
                    let first = e.b.ins().fcvt_from_sint(F32, first);
                    let first = e.splat(F32X4, first);
                    let bytes: Vec<u8> =
                        (0..LANES).flat_map(|l| (l as f32).to_le_bytes()).collect();
                    let lanes = e.b.func.dfg.constants.insert(ConstantData::from(bytes));
                    let lanes = e.b.ins().vconst(F32X4, lanes);
                    let at = e.b.ins().fcvt_from_sint(F32X4, at);
                    let index = e.b.ins().fadd(first, lanes);
                    e.b.ins().fadd(index, at)
                };
                (value, index)
            };
            e.store(Emitter::mutable(), value, *y, window.y, 0);
            e.store(Emitter::mutable(), index, *y, window.y, half);
        });
    });
}

pub fn emit_max_grad(a: &PoolAttrs, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let geometry = Geometry::new(a, &inputs[0].shape);
    let slots = [inputs[0].slot, inputs[1].slot, output.slot];
    geometry.kernel(sink, &slots, |e, buffers, x_plane, y_plane| {
        let [x, dy, dx] = buffers else {
            unreachable!("three buffers")
        };
        fill_zero(e, *dx, x_plane, geometry.height * geometry.width);
        // Scattering lane by lane leaves no room for unrolling.
        geometry.for_each_window(e, x_plane, y_plane, 1, &mut |e, window, ty| {
            if window.is_empty() {
                return;
            }
            let at = first_max_offset(e, *x, window, geometry.width, ty);
            let grad = e.load(ty, Emitter::frozen(), *dy, window.y, 0);
            for lane in 0..ty.lane_count() as u8 {
                let (offset, grad) = if ty == F32 {
                    (at, grad)
                } else {
                    let offset = e.b.ins().extractlane(at, lane);
                    let offset = e.b.ins().sextend(I64, offset);
                    (offset, e.b.ins().extractlane(grad, lane))
                };
                // Lane `lane`'s window starts `lane` columns after the first lane's.
                let index = e.b.ins().iadd(window.x, offset);
                let old = e.load(F32, Emitter::mutable(), *dx, index, lane.into());
                let new = e.b.ins().fadd(old, grad);
                e.store(Emitter::mutable(), new, *dx, index, lane.into());
            }
        });
    });
}

pub fn emit_avg_grad(a: &PoolAttrs, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let geometry = Geometry::new(a, &output.shape);
    // Windows that share no cell store their share instead of adding it; where they also cover
    // the input (global pooling, 2x2/2 on even sizes) nothing needs zeroing first.
    let overlapping = !(geometry.rows.disjoint && geometry.cols.disjoint);
    let covering = geometry.rows.covering && geometry.cols.covering;
    let slots = [inputs[0].slot, output.slot];
    geometry.kernel(sink, &slots, |e, buffers, x_plane, y_plane| {
        let [dy, dx] = buffers else {
            unreachable!("two buffers")
        };
        if overlapping || !covering {
            fill_zero(e, *dx, x_plane, geometry.height * geometry.width);
        }
        geometry.for_each_window(e, x_plane, y_plane, 0, &mut |e, window, _| {
            if window.is_empty() {
                return;
            }
            let weight = avg_weight(a, window.rows * window.cols, window.padded);
            let weight = e.float(weight as f32);
            let grad = e.load(F32, Emitter::frozen(), *dy, window.y, 0);
            let share = e.b.ins().fmul(grad, weight);
            for_each_run(e, window, geometry.width, |e, first, len| {
                for_run(e, first, len, |e, index, offset, ty| {
                    let mut value = e.splat(ty, share);
                    if overlapping {
                        let old = e.load(ty, Emitter::mutable(), *dx, index, offset);
                        value = e.b.ins().fadd(old, value);
                    }
                    e.store(Emitter::mutable(), value, *dx, index, offset);
                });
            });
        });
    });
}

/// Windows of at most this many cells are unrolled; larger ones loop over their rows.
const UNROLLED_CELLS: usize = 64;
/// A lone window whose contiguous runs of cells are at least this long is reduced in f32x4
/// steps.
const VECTOR_RUN: usize = 8;
/// About how many f32x4 loads an unrolled step over side-by-side windows may hold.
const VECTOR_BUDGET: usize = 36;

/// Output positions along one axis whose windows have the same shape: window `o` starts at input
/// position `o * step + offset` and holds `cells` positions of the input, `padded` of the padded
/// input.
struct Segment {
    outputs: Range<usize>,
    step: usize,
    offset: i64,
    cells: usize,
    padded: usize,
}

/// How one axis's output positions map to input windows.
struct Axis {
    segments: Vec<Segment>,
    /// No input position lies in two windows.
    disjoint: bool,
    /// Every input position lies in a window.
    covering: bool,
}

impl Axis {
    /// Runs of windows wholly inside the input, sliding by the stride, and each clipped window on
    /// its own (`step` 0).
    fn new(
        outputs: usize,
        kernel: usize,
        stride: usize,
        pad: (usize, usize),
        extent: usize,
    ) -> Axis {
        let mut segments: Vec<Segment> = Vec::new();
        let (mut disjoint, mut covering, mut reached) = (true, true, 0);
        for o in 0..outputs {
            let (inside, padded) = span(o, kernel, stride, pad, extent);
            if !inside.is_empty() {
                disjoint &= inside.start >= reached;
                covering &= inside.start <= reached;
                reached = reached.max(inside.end);
            }
            if inside.len() < kernel {
                segments.push(Segment {
                    outputs: o..o + 1,
                    step: 0,
                    offset: inside.start as i64,
                    cells: inside.len(),
                    padded,
                });
                continue;
            }
            match segments.last_mut() {
                Some(run) if run.step == stride && run.outputs.end == o => run.outputs.end += 1,
                _ => segments.push(Segment {
                    outputs: o..o + 1,
                    step: stride,
                    offset: -(pad.0 as i64),
                    cells: kernel,
                    padded: kernel,
                }),
            }
        }
        Axis {
            segments,
            disjoint,
            covering: covering && reached == extent,
        }
    }
}

/// A pooling op's planes and windows. `height` and `width` are the input's (the gradient's, for
/// the backward ops), the `out_` ones the pooled tensor's.
pub(super) struct Geometry {
    planes: usize,
    pub height: usize,
    pub width: usize,
    pub out_height: usize,
    pub out_width: usize,
    rows: Axis,
    cols: Axis,
}

/// One window, or in f32x4 code `LANES` windows side by side, each one column after the last.
pub(super) struct Window {
    /// The element of the input-shaped tensor at the (first) window's first cell.
    pub x: Value,
    /// That cell's row and column in its plane (I64).
    pub row: Value,
    pub col: Value,
    /// The element of the pooled tensor the (first) window gives.
    pub y: Value,
    rows: usize,
    cols: usize,
    /// Its positions within the padded input.
    padded: usize,
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0
    }

    /// Its cells as contiguous runs in a plane `width` wide: `(count, length, stride)`; a window
    /// of whole rows is one run.
    fn runs(&self, width: usize) -> (usize, usize, usize) {
        if self.cols == width {
            (1, self.rows * self.cols, 0)
        } else {
            (self.rows, self.cols, width)
        }
    }
}

impl Geometry {
    pub fn new(a: &PoolAttrs, x: &[usize]) -> Geometry {
        let &[n, c, height, width] = x else {
            unreachable!("verified shapes are 4-D")
        };
        let [out_height, out_width] = out_hw(a, [height, width]).expect("verified shapes fit");
        let axis = |k: usize, outputs, extent| {
            let pad = (a.pad[2 * k], a.pad[2 * k + 1]);
            Axis::new(outputs, a.kernel[k], a.stride[k], pad, extent)
        };
        Geometry {
            planes: n * c,
            height,
            width,
            out_height,
            out_width,
            rows: axis(0, out_height, height),
            cols: axis(1, out_width, width),
        }
    }

    /// Builds a kernel of one task per plane over the buffers in `slots`: `body(e, buffers, x,
    /// y)` emits a plane's work, `x` and `y` being where the plane starts in the input-shaped and
    /// the pooled tensors.
    fn kernel(
        &self,
        sink: &mut KernelSink,
        slots: &[Slot],
        mut body: impl FnMut(&mut Emitter, &[Value], Value, Value),
    ) {
        let x_plane = (self.height * self.width) as i64;
        let y_plane = (self.out_height * self.out_width) as i64;
        sink.kernel(self.planes, 0, |e| {
            let buffers: Vec<Value> = slots.iter().map(|&slot| e.buffer(slot)).collect();
            let (begin, end) = (e.begin(), e.end());
            e.for_loop(begin, end, 1, |e, plane| {
                let x = e.b.ins().imul_imm_s(plane, x_plane);
                let y = e.b.ins().imul_imm_s(plane, y_plane);
                body(e, &buffers, x, y);
            });
        });
    }

    /// Calls `visit(e, window, ty)` for every window of the plane starting at `x` (input-shaped)
    /// and `y` (pooled), in row-major order. With `unroll` above 0, runs of windows sliding by
    /// one column go `LANES` at a time in f32x4 lanes (`ty` F32X4), `unroll` steps per
    /// iteration; every other window goes alone (F32).
    pub fn for_each_window(
        &self,
        e: &mut Emitter,
        x: Value,
        y: Value,
        unroll: usize,
        visit: &mut impl FnMut(&mut Emitter, &Window, Type),
    ) {
        for rows in &self.rows.segments {
            for_outputs(e, &rows.outputs, |e, i| {
                let row = e.b.ins().imul_imm_s(i, rows.step as i64);
                let row = e.b.ins().iadd_imm_s(row, rows.offset);
                let down = e.b.ins().imul_imm_s(row, self.width as i64);
                let x_row = e.b.ins().iadd(x, down);
                let down = e.b.ins().imul_imm_s(i, self.out_width as i64);
                let y_row = e.b.ins().iadd(y, down);
                for cols in &self.cols.segments {
                    let mut at = |e: &mut Emitter, j: Value, ty: Type| {
                        let col = e.b.ins().imul_imm_s(j, cols.step as i64);
                        let col = e.b.ins().iadd_imm_s(col, cols.offset);
                        let x = e.b.ins().iadd(x_row, col);
                        let y = e.b.ins().iadd(y_row, j);
                        let window = Window {
                            x,
                            row,
                            col,
                            y,
                            rows: rows.cells,
                            cols: cols.cells,
                            padded: rows.padded * cols.padded,
                        };
                        visit(e, &window, ty);
                    };
                    let (lo, hi) = (cols.outputs.start as i64, cols.outputs.end as i64);
                    if unroll > 0 && cols.step == 1 && cols.outputs.len() >= LANES as usize {
                        e.vector_range(lo, hi, unroll, at);
                    } else {
                        for_outputs(e, &cols.outputs, |e, j| at(e, j, F32));
                    }
                }
            });
        }
    }
}

/// Runs `body(e, o)` over a range of output positions: a loop, or straight code for one.
fn for_outputs(e: &mut Emitter, outputs: &Range<usize>, body: impl FnOnce(&mut Emitter, Value)) {
    if outputs.len() == 1 {
        let o = e.int(outputs.start as i64);
        body(e, o);
    } else {
        e.for_range(outputs.start as i64, outputs.end as i64, body);
    }
}

/// How a window's cells combine.
#[derive(Clone, Copy)]
enum Reduction {
    Max,
    Sum,
}

impl Reduction {
    fn combine(self, e: &mut Emitter, acc: Value, v: Value) -> Value {
        match self {
            // A later cell wins only when greater, so the first of equal maxima (and a NaN in
            // the lead) stays, as in the interpreter; the pattern compiles to maxps.
            Reduction::Max => e.select_cmp(FloatCC::LessThan, acc, v, v, acc),
            Reduction::Sum => e.b.ins().fadd(acc, v),
        }
    }

    fn identity(self) -> f32 {
        match self {
            Reduction::Max => f32::NEG_INFINITY,
            Reduction::Sum => 0.0,
        }
    }
}

/// The reduction of a non-empty window's cells in `x`, or of each lane's window when `ty` is
/// F32X4: from the first cell on, in row-major order, except that a lone window of long runs
/// goes in f32x4 steps.
fn reduce(
    e: &mut Emitter,
    reduction: Reduction,
    x: Value,
    window: &Window,
    width: usize,
    ty: Type,
) -> Value {
    if ty == F32 && window.runs(width).1 >= VECTOR_RUN {
        return reduce_runs(e, reduction, x, window, width);
    }
    let first = e.load(ty, Emitter::frozen(), x, window.x, 0);
    let acc = e.variable(ty, first);
    for_each_later_cell(e, window, width, |e, index, offset, _, _| {
        let v = e.load(ty, Emitter::frozen(), x, index, offset);
        let old = e.get(acc);
        let new = reduction.combine(e, old, v);
        e.set(acc, new);
    });
    e.get(acc)
}

/// The reduction of one window run by run, an f32x4 accumulator taking the vector steps.
fn reduce_runs(
    e: &mut Emitter,
    reduction: Reduction,
    x: Value,
    window: &Window,
    width: usize,
) -> Value {
    let wide = e.constant(F32X4, reduction.identity());
    let wide = e.variable(F32X4, wide);
    let narrow = e.float(reduction.identity());
    let narrow = e.variable(F32, narrow);
    for_each_run(e, window, width, |e, first, len| {
        for_run(e, first, len, |e, index, offset, ty| {
            let acc = if ty == F32 { narrow } else { wide };
            let v = e.load(ty, Emitter::frozen(), x, index, offset);
            let old = e.get(acc);
            let new = reduction.combine(e, old, v);
            e.set(acc, new);
        });
    });
    let (mut result, lanes) = (e.get(narrow), e.get(wide));
    for lane in 0..LANES as u8 {
        let v = e.b.ins().extractlane(lanes, lane);
        result = reduction.combine(e, result, v);
    }
    match reduction {
        // The f32x4 steps lose a NaN in the lead, which the row-major reduction keeps.
        Reduction::Max => {
            let lead = e.load(F32, Emitter::frozen(), x, window.x, 0);
            e.select_cmp(FloatCC::Unordered, lead, lead, lead, result)
        }
        Reduction::Sum => result,
    }
}

/// Where the first maximum of a non-empty window lies, as an offset from its first cell: I64
/// for one window (`ty` F32), I32X4 for f32x4 lanes of windows.
fn first_max_offset(e: &mut Emitter, x: Value, window: &Window, width: usize, ty: Type) -> Value {
    let [_, at] = first_max_position(e, x, window, width, ty, &mut |e, row, col| {
        let down = e.b.ins().imul_imm_s(row, width as i64);
        e.b.ins().iadd(down, col)
    });
    at
}

/// The maximum of a non-empty window (as [`Reduction::Max`] finds it) and `position(e, row,
/// col)` (I64, linear in both) of its first cell, `row` and `col` being the cell's place in the
/// window: I64 for one window (`ty` F32), I32X4 for f32x4 lanes of windows.
fn first_max_position(
    e: &mut Emitter,
    x: Value,
    window: &Window,
    width: usize,
    ty: Type,
    position: &mut dyn FnMut(&mut Emitter, Value, Value) -> Value,
) -> [Value; 2] {
    let offset_ty = if ty == F32 { I64 } else { types::I32X4 };
    let offset = |e: &mut Emitter, value: Value| {
        if ty == F32 {
            value
        } else {
            let value = e.b.ins().ireduce(types::I32, value);
            e.b.ins().splat(offset_ty, value)
        }
    };
    let first = e.load(ty, Emitter::frozen(), x, window.x, 0);
    let best = e.variable(ty, first);
    let zero = e.int(0);
    let first_position = position(e, zero, zero);
    let first_position = offset(e, first_position);
    let at = e.variable(offset_ty, first_position);
    for_each_later_cell(e, window, width, |e, index, cell, row, col| {
        let v = e.load(ty, Emitter::frozen(), x, index, cell);
        let (old_best, old_at) = (e.get(best), e.get(at));
        // The comparison `Reduction::Max` makes: a later cell wins only when greater.
        let wins = e.b.ins().fcmp(FloatCC::LessThan, old_best, v);
        let here = position(e, row, col);
        let here = offset(e, here);
        let new_at = if ty == F32 {
            e.b.ins().select(wins, here, old_at)
        } else {
            e.b.ins().bitselect(wins, here, old_at)
        };
        let new_best = Reduction::Max.combine(e, old_best, v);
        e.set(best, new_best);
        e.set(at, new_at);
    });
    [e.get(best), e.get(at)]
}

/// Calls `visit(e, index, offset, row, col)` for each cell of a non-empty window after its
/// first, in row-major order, the cell being at `index + offset`, in the window's row `row` and
/// column `col` (I64). Small windows unroll (`index` is the window's first cell); larger ones
/// loop over their rows, and over columns beyond `UNROLLED_CELLS`.
fn for_each_later_cell(
    e: &mut Emitter,
    window: &Window,
    width: usize,
    mut visit: impl FnMut(&mut Emitter, Value, i64, Value, Value),
) {
    let (rows, cols) = (window.rows, window.cols);
    if rows * cols <= UNROLLED_CELLS {
        for cell in 1..rows * cols {
            let (row, col) = (e.int((cell / cols) as i64), e.int((cell % cols) as i64));
            visit(
                e,
                window.x,
                (cell / cols * width + cell % cols) as i64,
                row,
                col,
            );
        }
        return;
    }
    type Visit<'a> = dyn FnMut(&mut Emitter, Value, i64, Value, Value) + 'a;
    let row = |e: &mut Emitter, index: Value, r: Value, from: usize, visit: &mut Visit| {
        if cols <= UNROLLED_CELLS {
            for s in from..cols {
                let col = e.int(s as i64);
                visit(e, index, s as i64, r, col);
            }
        } else {
            e.for_range(from as i64, cols as i64, |e, s| {
                let index = e.b.ins().iadd(index, s);
                visit(e, index, 0, r, s);
            });
        }
    };
    let first_row = e.int(0);
    row(e, window.x, first_row, 1, &mut visit);
    e.for_range(1, rows as i64, |e, r| {
        let down = e.b.ins().imul_imm_s(r, width as i64);
        let index = e.b.ins().iadd(window.x, down);
        row(e, index, r, 0, &mut visit);
    });
}

/// Calls `body(e, first, len)` for each contiguous run of a window's cells (see
/// `Window::runs`), unrolled when the window is small.
fn for_each_run(
    e: &mut Emitter,
    window: &Window,
    width: usize,
    mut body: impl FnMut(&mut Emitter, Value, usize),
) {
    let (count, len, stride) = window.runs(width);
    if count * len <= UNROLLED_CELLS {
        for r in 0..count {
            let first = e.b.ins().iadd_imm_s(window.x, (r * stride) as i64);
            body(e, first, len);
        }
    } else {
        e.for_range(0, count as i64, |e, r| {
            let down = e.b.ins().imul_imm_s(r, stride as i64);
            let first = e.b.ins().iadd(window.x, down);
            body(e, first, len);
        });
    }
}

/// Calls `body(e, index, offset, ty)` over the `len` elements from `first`, f32x4 pieces (`ty`
/// F32X4) then single elements (F32), each at `index + offset`; unrolled when short.
fn for_run(
    e: &mut Emitter,
    first: Value,
    len: usize,
    mut body: impl FnMut(&mut Emitter, Value, i64, Type),
) {
    if len > UNROLLED_CELLS {
        e.vector_range(0, len as i64, 4, |e, k, ty| {
            let index = e.b.ins().iadd(first, k);
            body(e, index, 0, ty);
        });
        return;
    }
    let vectors = len / LANES as usize * LANES as usize;
    for k in (0..vectors).step_by(LANES as usize) {
        body(e, first, k as i64, F32X4);
    }
    for k in vectors..len {
        body(e, first, k as i64, F32);
    }
}

/// Zeroes the `len` elements of `base` from `first`.
fn fill_zero(e: &mut Emitter, base: Value, first: Value, len: usize) {
    for_run(e, first, len, |e, index, offset, ty| {
        let zero = e.constant(ty, 0.0);
        e.store(Emitter::mutable(), zero, base, index, offset);
    });
}
