//! 2-D convolution (cross-correlation, NCHW x OIHW) and its two backward ops: the gradient with
//! respect to the input and with respect to the weight.

use super::{arity, layout, ConvAttrs, OpKind};
use crate::codegen::depthwise;
use crate::codegen::emit::{Emitter, Slot, F32, F32X4, LANES};
use crate::codegen::gemm::{
    self, for_each_span, Block, ElementLoad, Epilogue, IndexMath, Matrices, Runs, ScratchLayout,
    Span, Tile, KC,
};
use crate::codegen::prologue::{Prologue, Source};
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::{Graph, Op, Shape, ValueId};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use netc_runtime::microkernel::{MR, NR};

/// Output extent of one spatial axis, or `None` when the dilated kernel does not fit.
pub fn out_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: (usize, usize),
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (input + pad.0 + pad.1)
        .checked_sub(span)
        .map(|room| room / stride + 1)
}

fn out_hw(a: &ConvAttrs, hw: [usize; 2], kernel: [usize; 2]) -> Result<[usize; 2], String> {
    let h = out_extent(
        hw[0],
        kernel[0],
        a.stride[0],
        a.dilation[0],
        (a.pad[0], a.pad[1]),
    );
    let w = out_extent(
        hw[1],
        kernel[1],
        a.stride[1],
        a.dilation[1],
        (a.pad[2], a.pad[3]),
    );
    match (h, w) {
        (Some(h), Some(w)) => Ok([h, w]),
        _ => Err(format!("kernel {kernel:?} does not fit input {hw:?}")),
    }
}

fn check_attrs(a: &ConvAttrs) -> Result<(), String> {
    if a.groups == 0 || a.stride.contains(&0) || a.dilation.contains(&0) {
        return Err("groups, strides and dilations must be positive".into());
    }
    Ok(())
}

pub fn shape(a: &ConvAttrs, inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    check_attrs(a)?;
    let (&[n, c, h, w], &[o, cg, kh, kw]) = (inputs[0].as_slice(), inputs[1].as_slice()) else {
        return Err("expected x [N,C,H,W] and w [O,C/g,kh,kw]".into());
    };
    if c != cg * a.groups || o % a.groups != 0 || kh == 0 || kw == 0 {
        return Err(format!(
            "weight {:?} does not fit {c} input channels in {} groups",
            inputs[1], a.groups
        ));
    }
    let [oh, ow] = out_hw(a, [h, w], [kh, kw])?;
    Ok(vec![n, o, oh, ow])
}

pub fn input_grad_shape(a: &ConvAttrs, hw: [usize; 2], inputs: &[&Shape]) -> Result<Shape, String> {
    arity(inputs, 2)?;
    check_attrs(a)?;
    let (&[n, o, oh, ow], &[wo, cg, kh, kw]) = (inputs[0].as_slice(), inputs[1].as_slice()) else {
        return Err("expected dy [N,O,OH,OW] and w [O,C/g,kh,kw]".into());
    };
    if o != wo || kh == 0 || kw == 0 || o % a.groups != 0 || out_hw(a, hw, [kh, kw])? != [oh, ow] {
        return Err(format!(
            "dy {:?} and w {:?} do not fit input {hw:?}",
            inputs[0], inputs[1]
        ));
    }
    Ok(vec![n, cg * a.groups, hw[0], hw[1]])
}

pub fn weight_grad_shape(
    a: &ConvAttrs,
    kernel: [usize; 2],
    inputs: &[&Shape],
) -> Result<Shape, String> {
    arity(inputs, 2)?;
    check_attrs(a)?;
    let (&[n, c, h, w], &[dn, o, oh, ow]) = (inputs[0].as_slice(), inputs[1].as_slice()) else {
        return Err("expected x [N,C,H,W] and dy [N,O,OH,OW]".into());
    };
    if n != dn
        || c % a.groups != 0
        || o % a.groups != 0
        || kernel.contains(&0)
        || out_hw(a, [h, w], kernel)? != [oh, ow]
    {
        return Err(format!(
            "x {:?} and dy {:?} do not fit kernel {kernel:?}",
            inputs[0], inputs[1]
        ));
    }
    Ok(vec![o, c / a.groups, kernel[0], kernel[1]])
}

/// Visits every product term of the convolution of `x` by `w` into `y` (shapes `[N,C,H,W]`,
/// `[O,C/g,kh,kw]`, `[N,O,OH,OW]`) as `visit(x, w, y)`, flat indices of the three elements it
/// involves; taps that land in the padding are skipped. The forward op and both backward ops are
/// this one loop with the roles exchanged, which makes each backward op the exact adjoint.
fn for_each_tap(
    a: &ConvAttrs,
    x: &[usize],
    w: &[usize],
    y: &[usize],
    mut visit: impl FnMut(usize, usize, usize),
) {
    let (&[n, c, h, wd], &[o, cg, kh, kw], &[_, _, oh, ow]) = (x, w, y) else {
        unreachable!("verified shapes are 4-D")
    };
    let per_group = o / a.groups;
    for b in 0..n {
        for oc in 0..o {
            let group = oc / per_group;
            for i in 0..oh {
                for j in 0..ow {
                    let yi = ((b * o + oc) * oh + i) * ow + j;
                    for ci in 0..cg {
                        let xc = group * cg + ci;
                        for p in 0..kh {
                            let Some(r) = tap(i, p, a.stride[0], a.dilation[0], a.pad[0], h) else {
                                continue;
                            };
                            for q in 0..kw {
                                let Some(s) = tap(j, q, a.stride[1], a.dilation[1], a.pad[2], wd)
                                else {
                                    continue;
                                };
                                visit(
                                    ((b * c + xc) * h + r) * wd + s,
                                    ((oc * cg + ci) * kh + p) * kw + q,
                                    yi,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The input coordinate that kernel position `k` of output position `out` reads along one axis,
/// or `None` in the padding.
fn tap(
    out: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad_before: usize,
    extent: usize,
) -> Option<usize> {
    (out * stride + k * dilation)
        .checked_sub(pad_before)
        .filter(|&v| v < extent)
}

pub fn eval(a: &ConvAttrs, inputs: &[&Tensor]) -> Tensor {
    let (x, w) = (inputs[0], inputs[1]);
    let y_shape = shape(a, &[&x.shape, &w.shape]).expect("verified shapes fit");
    let mut y = vec![0.0; y_shape.iter().product()];
    for_each_tap(a, &x.shape, &w.shape, &y_shape, |xi, wi, yi| {
        y[yi] += x.data[xi] * w.data[wi]
    });
    Tensor::new(y_shape, y)
}

pub fn eval_input_grad(a: &ConvAttrs, hw: [usize; 2], inputs: &[&Tensor]) -> Tensor {
    let (dy, w) = (inputs[0], inputs[1]);
    let x_shape = input_grad_shape(a, hw, &[&dy.shape, &w.shape]).expect("verified shapes fit");
    let mut dx = vec![0.0; x_shape.iter().product()];
    for_each_tap(a, &x_shape, &w.shape, &dy.shape, |xi, wi, yi| {
        dx[xi] += dy.data[yi] * w.data[wi]
    });
    Tensor::new(x_shape, dx)
}

pub fn eval_weight_grad(a: &ConvAttrs, kernel: [usize; 2], inputs: &[&Tensor]) -> Tensor {
    let (x, dy) = (inputs[0], inputs[1]);
    let w_shape =
        weight_grad_shape(a, kernel, &[&x.shape, &dy.shape]).expect("verified shapes fit");
    let mut dw = vec![0.0; w_shape.iter().product()];
    for_each_tap(a, &x.shape, &w_shape, &dy.shape, |xi, wi, yi| {
        dw[wi] += x.data[xi] * dy.data[yi]
    });
    Tensor::new(w_shape, dw)
}

pub fn vjp(a: &ConvAttrs, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
    let (x, w) = (op.inputs[0], op.inputs[1]);
    let hw = [graph.shape(x)[2], graph.shape(x)[3]];
    let kernel = [graph.shape(w)[2], graph.shape(w)[3]];
    let layer = op.layer.as_deref();
    let dx = graph.op(OpKind::Conv2dInputGrad(*a, hw), &[grad, w], layer);
    let dw = graph.op(OpKind::Conv2dWeightGrad(*a, kernel), &[x, grad], layer);
    vec![Some(dx), Some(dw)]
}

/// A convolution's extents, for generated code: per image and group, the forward op is the
/// product `[O/g x Kc] · [Kc x P]` of the group's weights and the implicit im2col matrix of x,
/// whose row `(c, r, q)` (`Kc = C/g * kh * kw` of them) holds, at column `p = i*OW + j` (`P =
/// OH * OW` of them), the input element that kernel tap `(r, q)` of output position `(i, j)`
/// reads in channel `c`, or zero in the padding.
struct Geometry {
    attrs: ConvAttrs,
    batch: usize,
    hw: [usize; 2],
    groups: usize,
    group_in: usize,
    group_out: usize,
    kernel: [usize; 2],
    out_width: usize,
    positions: usize,
}

impl Geometry {
    /// From x's shape `[N, C, H, W]` and w's `[O, C/g, kh, kw]`.
    fn new(a: &ConvAttrs, x: &[usize], w: &[usize]) -> Geometry {
        let (&[batch, _, h, wd], &[out_channels, group_in, kh, kw]) = (x, w) else {
            unreachable!("verified shapes are 4-D")
        };
        let [oh, ow] = out_hw(a, [h, wd], [kh, kw]).expect("verified shapes fit");
        Geometry {
            attrs: *a,
            batch,
            hw: [h, wd],
            groups: a.groups,
            group_in,
            group_out: out_channels / a.groups,
            kernel: [kh, kw],
            out_width: ow,
            positions: oh * ow,
        }
    }

    /// Kernel taps per channel.
    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Rows of the im2col matrix, the reduction of the forward product: `Kc`.
    fn depth(&self) -> usize {
        self.group_in * self.taps()
    }

    /// Whether the im2col matrix is x itself: a 1x1 kernel, no stride, no padding.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.attrs.stride == [1, 1] && self.attrs.pad == [0; 4]
    }

    /// Images whose positions one B panel holds side by side: several where a plane has few
    /// positions (a late layer's), which would otherwise leave most of the panel's columns zero
    /// (mnist_cnn's conv2, 4x4, two to a panel).
    fn images_per_panel(&self) -> usize {
        if self.positions * 2 <= NR {
            NR / self.positions
        } else {
            1
        }
    }

    /// Whether every tap lands inside x and the columns have no stride: then an output row's
    /// taps of one kernel position are one run of an input row, the same for every image.
    fn taps_inside(&self) -> bool {
        self.attrs.pad == [0; 4] && self.attrs.stride[1] == 1
    }

    /// Floats in one channel plane of x.
    fn plane(&self) -> usize {
        self.hw[0] * self.hw[1]
    }

    /// The address of the first channel plane of `group` in `image` of x (or dx, or a copy of
    /// x of `plane` floats per channel) at `base`.
    fn group_planes(
        &self,
        e: &mut Emitter,
        [base, image, group]: [Value; 3],
        plane: usize,
    ) -> Value {
        let images = e.mul_imm(image, self.groups as i64);
        let index = e.add(images, group);
        e.at_scaled(base, index, (self.group_in * plane) as i64)
    }
}

/// Calls `body` once for each output row that im2col columns `lo..hi` (at least one) cross.
fn for_each_row_span(
    e: &mut Emitter,
    g: &Geometry,
    range: [Value; 2],
    body: impl FnOnce(&mut Emitter, &Span),
) {
    for_each_span(e, g.out_width, range, body)
}

/// Where the taps of kernel column `q` fall along input rows: output column `j` reads input
/// column `j * stride + left`, inside the row for `j` in `inside..outside`.
struct TapColumns {
    left: Value,
    inside: Value,
    outside: Value,
}

impl TapColumns {
    /// For kernel column `q` (a constant one folds to constants).
    fn new(e: &mut Emitter, g: &Geometry, q: Value) -> TapColumns {
        let a = &g.attrs;
        let scaled = e.mul_imm(q, a.dilation[1] as i64);
        let left = e.add_imm(scaled, -(a.pad[2] as i64));
        // The first output column whose tap lands at or past input column `from`:
        // `ceil(from / stride)`, within the row.
        let stride = a.stride[1] as i64;
        let first_column = |e: &mut Emitter, from: Value| {
            let from = e.max_imm(from, 0);
            let rounded = e.add_imm(from, stride - 1);
            let column = e.div_imm(rounded, stride);
            e.min_imm(column, g.out_width as i64)
        };
        let zero = e.int(0);
        let negated = e.sub(zero, left);
        let inside = first_column(e, negated);
        let width = e.int(g.hw[1] as i64);
        let room = e.sub(width, left);
        let outside = first_column(e, room);
        TapColumns {
            left,
            inside,
            outside,
        }
    }
}

/// The taps of kernel position `(r, q)` along one row span: output columns `start..end`, of
/// which `inside..outside` read the input plane at float `x + j * stride` and the others land in
/// the padding; column `j` is the range's column `col + j`. (`x` is meaningless when `inside ==
/// outside`.)
struct Run {
    x: Value,
    col: Value,
    start: Value,
    inside: Value,
    outside: Value,
    end: Value,
}

impl Run {
    /// Kernel row `r` enters as `top = r * dilation - pad_top`, its column as `columns`.
    fn new(e: &mut Emitter, g: &Geometry, span: &Span, top: Value, columns: &TapColumns) -> Run {
        let scaled = e.mul_imm(span.block, g.attrs.stride[0] as i64);
        let input_row = e.add(scaled, top);
        // Negative rows wrap to huge unsigned values: one comparison checks both ends.
        let in_image =
            e.b.ins()
                .icmp_imm_s(IntCC::UnsignedLessThan, input_row, g.hw[0] as i64);
        let clamped = e.max(columns.inside, span.start);
        let clamped = e.min(clamped, span.end);
        let inside = e.b.ins().select(in_image, clamped, span.end);
        let clamped = e.min(columns.outside, span.end);
        let outside = e.max(clamped, inside);
        let row_offset = e.mul_imm(input_row, g.hw[1] as i64);
        let x = e.add(row_offset, columns.left);
        Run {
            x,
            col: span.col,
            start: span.start,
            inside,
            outside,
            end: span.end,
        }
    }
}

/// `r * dilation - pad_top` for kernel row `r`.
fn tap_top(e: &mut Emitter, g: &Geometry, r: Value) -> Value {
    let scaled = e.mul_imm(r, g.attrs.dilation[0] as i64);
    e.add_imm(scaled, -(g.attrs.pad[0] as i64))
}

/// Calls `visit` with the run of every output row that columns `lo..hi` (at least one) of
/// the im2col row of kernel position `[r, q]` cross.
fn for_each_run(
    e: &mut Emitter,
    g: &Geometry,
    [r, q]: [Value; 2],
    range: [Value; 2],
    visit: impl FnOnce(&mut Emitter, &Run),
) {
    let top = tap_top(e, g, r);
    let columns = TapColumns::new(e, g, q);
    for_each_row_span(e, g, range, |e, span| {
        let run = Run::new(e, g, span, top, &columns);
        visit(e, &run);
    });
}

/// Writes a run's im2col values to `dst + col + j`: the input plane's element (or what `load`
/// makes of it), or zero in the padding.
fn gather_run(
    e: &mut Emitter,
    g: &Geometry,
    (run, load): (&Run, Option<&ElementLoad>),
    plane: Value,
    dst: Value,
) {
    let stride = g.attrs.stride[1] as i64;
    let from = e.at(plane, run.x);
    let to = e.at(dst, run.col);
    let zero = e.float(0.0);
    let store_zero = |e: &mut Emitter, j: Value| e.store(Emitter::mutable(), zero, to, j, 0);
    // Padding runs are short: a few columns at the borders, or whole rows above and below.
    e.for_loop(run.start, run.inside, 1, store_zero);
    if stride == 1 {
        gemm::copy_run_through(e, load, [from, to], [run.inside, run.outside]);
    } else {
        e.for_loop(run.inside, run.outside, 1, |e, j| {
            let source = e.mul_imm(j, stride);
            let value = gemm::load_through(e, load, F32, [from, source], 0);
            e.store(Emitter::mutable(), value, to, j, 0);
        });
    }
    e.for_loop(run.outside, run.end, 1, store_zero);
}

/// Adds a run's im2col values, read from `src + col + j`, to the input plane elements their
/// taps read (the adjoint of [`gather_run`]).
fn scatter_add_run(e: &mut Emitter, g: &Geometry, run: &Run, plane: Value, src: Value) {
    let stride = g.attrs.stride[1] as i64;
    let to = e.at(plane, run.x);
    let from = e.at(src, run.col);
    if stride == 1 {
        e.vector_loop(run.inside, run.outside, 2, |e, j, ty| {
            add_into(e, [from, to], [j, j], ty)
        });
    } else {
        e.for_loop(run.inside, run.outside, 1, |e, j| {
            let target = e.mul_imm(j, stride);
            add_into(e, [from, to], [j, target], F32)
        });
    }
}

/// `to[target] += from[j]`, for one float or one f32x4 (`ty`).
fn add_into(e: &mut Emitter, [from, to]: [Value; 2], [j, target]: [Value; 2], ty: Type) {
    let value = e.load(ty, Emitter::mutable(), from, j, 0);
    let old = e.load(ty, Emitter::mutable(), to, target, 0);
    let sum = e.b.ins().fadd(old, value);
    e.store(Emitter::mutable(), sum, to, target, 0);
}

/// The kernel positions along one axis whose taps land on input index `phase` modulo `stride`
/// (with `pad` and `dilation` on that axis), each with how far its output index lies from the
/// input index's: input `stride * m + phase` is read by kernel position `k`'s tap at output
/// `m + offset`.
fn phase_taps(
    phase: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    kernel: usize,
) -> Vec<(usize, i64)> {
    let stride = stride as i64;
    (0..kernel)
        .filter_map(|k| {
            let reach = (phase + pad) as i64 - (k * dilation) as i64;
            (reach.rem_euclid(stride) == 0).then_some((k, reach.div_euclid(stride)))
        })
        .collect()
}

/// col2im of one whole image (the adjoint of its im2col rows, `dcol` at its first column, rows
/// `ldc` apart) into the channel planes at `planes`, by phases: with a stride, the elements of a
/// plane whose row and column are `a` and `b` modulo the stride form phase `(a, b)`, a dense plane
/// (in `phases`) that each of its taps adds one contiguous run per output row to, vector by
/// vector; the phases are then dealt back into the plane, row by row. Without a stride the one
/// phase is the plane itself. Every loop has constant bounds. A scatter of one float at a time,
/// read, add, write, cost several times as much; and so did building a row of dx from all its
/// taps at once, whose runs read back the row's overlapping, just-stored vectors.
fn col2im_by_phases(
    e: &mut Emitter,
    g: &Geometry,
    channels: Value,
    [planes, dcol, phases]: [Value; 3],
    ldc: usize,
) {
    let a = &g.attrs;
    let [sy, sx] = a.stride;
    let [height, width] = g.hw;
    let (out_height, out_width) = (g.positions / g.out_width, g.out_width);
    let strided = sy * sx > 1;
    let [phase_height, phase_stride] = phase_extent(g);
    let phase_width = |b: usize| width.saturating_sub(b).div_ceil(sx);
    let zero = e.int(0);
    e.for_loop(zero, channels, 1, |e, c| {
        let plane = e.at_scaled(planes, c, g.plane() as i64);
        let channel_rows = e.at_scaled(dcol, c, (g.taps() * ldc) as i64);
        let phase_plane = |e: &mut Emitter, [row, column]: [usize; 2]| {
            if strided {
                let offset = (row * sx + column) * phase_height * phase_stride;
                let offset = e.int(offset as i64);
                e.at(phases, offset)
            } else {
                plane
            }
        };
        for row_phase in 0..sy {
            let rows = height.saturating_sub(row_phase).div_ceil(sy) as i64;
            let row_taps = phase_taps(row_phase, sy, a.pad[0], a.dilation[0], g.kernel[0]);
            for column_phase in 0..sx {
                let columns = phase_width(column_phase) as i64;
                let to = phase_plane(e, [row_phase, column_phase]);
                let row_floats = if strided { phase_stride } else { width } as i64;
                let floats = e.int(rows * row_floats);
                gemm::zero_run(e, to, 1, zero, floats);
                let column_taps =
                    phase_taps(column_phase, sx, a.pad[2], a.dilation[1], g.kernel[1]);
                for &(r, row_offset) in &row_taps {
                    for &(q, column_offset) in &column_taps {
                        let tap_row = ((r * g.kernel[1] + q) * ldc) as i64;
                        let first_dy = row_offset * out_width as i64 + column_offset;
                        let from = e.int(tap_row + first_dy);
                        let from = e.at(channel_rows, from);
                        let [m_lo, m_hi] = [
                            (-row_offset).max(0),
                            rows.min(out_height as i64 - row_offset),
                        ];
                        let [n_lo, n_hi] = [
                            (-column_offset).max(0),
                            columns.min(out_width as i64 - column_offset),
                        ];
                        e.for_range(m_lo, m_hi, |e, m| {
                            let to = e.at_scaled(to, m, row_floats);
                            let from = e.at_scaled(from, m, out_width as i64);
                            e.vector_range(n_lo, n_hi, 2, |e, n, ty| {
                                add_into(e, [from, to], [n, n], ty)
                            });
                        });
                    }
                }
            }
            if strided {
                e.for_range(0, rows, |e, m| {
                    let scaled = e.mul_imm(m, sy as i64);
                    let y = e.add_imm(scaled, row_phase as i64);
                    let dx_row = e.at_scaled(plane, y, width as i64);
                    let phase_rows: Vec<Value> = (0..sx)
                        .map(|b| {
                            let phase = phase_plane(e, [row_phase, b]);
                            e.at_scaled(phase, m, phase_stride as i64)
                        })
                        .collect();
                    deal_back(e, &phase_rows, dx_row, width);
                });
            }
        }
    });
}

/// The rows (the most of any phase) and the floats per row (a whole number of vectors) of each
/// phase plane of [`col2im_by_phases`].
fn phase_extent(g: &Geometry) -> [usize; 2] {
    let [sy, sx] = g.attrs.stride;
    [
        g.hw[0].div_ceil(sy),
        g.hw[1].div_ceil(sx).next_multiple_of(LANES as usize),
    ]
}

/// `row[stride * n + b] = phases[b][n]` for the `width` floats of `row`, `stride` being the
/// number of phases: one is copied; with two, eight floats at a time from four of each phase,
/// interleaved by two shuffles (the inverse of [`PaddedLayout`]'s dealing).
fn deal_back(e: &mut Emitter, phases: &[Value], row: Value, width: usize) {
    let stride = phases.len();
    if stride == 1 {
        // Not `gemm::copy_floats` or `gemm::copy_run`: their loads may move, and the phase is
        // written again for the next channel.
        return e.vector_range(0, width as i64, 2, |e, n, ty| {
            let value = e.load(ty, Emitter::mutable(), phases[0], n, 0);
            e.store(Emitter::mutable(), value, row, n, 0);
        });
    }
    let vectored = if stride == 2 { width / 8 * 8 } else { 0 };
    e.for_range(0, (vectored / 8) as i64, |e, i| {
        let n = e.mul_imm(i, LANES);
        let [even, odd] = [0, 1].map(|b| e.load(F32X4, Emitter::mutable(), phases[b], n, 0));
        let low = gemm::shuffle_lanes(e, [even, odd], [0, 4, 1, 5]);
        let high = gemm::shuffle_lanes(e, [even, odd], [2, 6, 3, 7]);
        let x = e.mul_imm(n, 2);
        e.store(Emitter::mutable(), low, row, x, 0);
        e.store(Emitter::mutable(), high, row, x, LANES);
    });
    for (b, &phase) in phases.iter().enumerate() {
        let first = (vectored / stride) as i64;
        let phase_width = width.saturating_sub(b).div_ceil(stride) as i64;
        e.for_range(first, phase_width, |e, n| {
            let value = e.load(F32, Emitter::mutable(), phase, n, 0);
            let x = e.mul_imm(n, stride as i64);
            e.store(Emitter::mutable(), value, row, x, b as i64);
        });
    }
}

/// Where image `t` of `images` side by side in a B panel (see [`Geometry::images_per_panel`])
/// lies: its first column, and the columns it owns, its positions (the last image's run to the
/// panel's end, for the zeros after it).
fn image_columns(e: &mut Emitter, g: &Geometry, [t, images]: [Value; 2]) -> [Value; 2] {
    let col = e.mul_imm(t, g.positions as i64);
    let last = e.add_imm(images, -1);
    let is_last = e.b.ins().icmp(IntCC::Equal, t, last);
    let panel = e.int(NR as i64);
    let rest = e.sub(panel, col);
    let own = e.int(g.positions as i64);
    [col, e.b.ins().select(is_last, rest, own)]
}

/// Calls `visit(e, x, col, j, ty)` over a whole image's im2col row of kernel position
/// `[r, q]`, for a convolution of at most `NR` positions whose taps all land inside x (see
/// [`Geometry::taps_inside`]):
/// elements `j` (one, or a vector's) of the run of output row `oy` lie at `x + j` in the plane
/// at `plane` (input row `oy * stride + r * dilation`, from column `q * dilation`) and at
/// `col + j` in the row (`oy * out_width`). The loops have constant bounds.
fn for_each_image_run(
    e: &mut Emitter,
    g: &Geometry,
    [r, q]: [Value; 2],
    [plane, row]: [Value; 2],
    mut visit: impl FnMut(&mut Emitter, Value, Value, Value, Type),
) {
    let a = &g.attrs;
    let width = g.hw[1] as i64;
    let top = e.mul_imm(r, a.dilation[0] as i64 * width);
    let left = e.mul_imm(q, a.dilation[1] as i64);
    let first = e.add(top, left);
    let x = e.at(plane, first);
    let out_width = g.out_width as i64;
    // One output row after the other, at constant offsets: an image has at most `NR`
    // positions here, and its runs are short (mnist_cnn's conv2: four of four floats), so
    // that a loop's counting would cost as much as the copying.
    for oy in 0..(g.positions / g.out_width) as i64 {
        let input_row = e.int(oy * a.stride[0] as i64 * width);
        let x = e.at(x, input_row);
        let output_row = e.int(oy * out_width);
        let col = e.at(row, output_row);
        e.vector_range(0, out_width, 2, |e, j, ty| visit(e, x, col, j, ty));
    }
}

/// Runs `body(e, c, [r, q], row)` over the im2col rows `(c, r, q)` of `channels` channels,
/// `row` counting from the first.
fn for_each_tap_row(
    e: &mut Emitter,
    g: &Geometry,
    channels: Value,
    body: impl FnOnce(&mut Emitter, Value, [Value; 2], Value),
) {
    let [kh, kw] = g.kernel.map(|k| k as i64);
    let zero = e.int(0);
    e.for_loop(zero, channels, 1, |e, c| {
        e.for_range(0, kh, |e, r| {
            e.for_range(0, kw, |e, q| {
                let rows = e.mul_imm(c, kh);
                let rows = e.add(rows, r);
                let rows = e.mul_imm(rows, kw);
                let row = e.add(rows, q);
                body(e, c, [r, q], row);
            })
        })
    });
}

/// The most rows of C one task of a convolution's product keeps in scratch.
const MOST_ROWS: usize = 256;
/// The most columns (positions, or im2col rows) one task of a convolution's gradients covers,
/// in panels.
const MOST_PANELS: usize = 8;
/// The most floats of C one task of a convolution's product or weight gradient keeps in
/// scratch: its tile is as wide as fits, up to [`MOST_PRODUCT_PANELS`] (and twice
/// [`MOST_PANELS`] for the weight gradient). Wide tiles of few rows (resnet_small's 16 to 64
/// channels) made its step 6% faster than tiles of at most 8 (and 4) panels, googlenet's 1.5%.
const MOST_TILE_FLOATS: usize = 1 << 16;
const MOST_PRODUCT_PANELS: usize = 32;
/// The floats of partial sums (one dW per block of images) up to which a weight gradient
/// splits its images into more blocks than it needs tasks: short last tasks, where the
/// thread that runs out of work first waits for the other's.
const MOST_BLOCK_SUM_FLOATS: usize = 1 << 18;

/// The convolution of x (a tensor, or computed by a prologue as the kernels read it) by `w`,
/// written through `epilogue`.
pub fn emit(
    a: &ConvAttrs,
    sink: &mut KernelSink,
    (x, x_shape): (&Source, &[usize]),
    w: &Operand,
    output: &Operand,
    epilogue: &Epilogue,
) {
    if depthwise::is_depthwise(a, x_shape, &w.shape) {
        return depthwise::emit_forward(a, sink, (x, x_shape), w, output, epilogue);
    }
    let g = Geometry::new(a, x_shape, &w.shape);
    let depth = g.depth();
    let weights = Matrices {
        slot: w.slot,
        count: g.groups,
        stride: g.group_out * depth,
        rows: g.group_out,
        cols: depth,
        row_stride: depth,
        col_stride: 1,
    };
    emit_product(sink, &g, x, &weights, output, epilogue);
}

/// Where a (non-depthwise) convolution's kernels read x: x, or the first tensor of x's shape
/// of the prologue that computes x from it.
type XSource<'p> = (Slot, Option<&'p Prologue>);

/// x's [`XSource`]: with a prologue, the kernels compute x's elements as they read them (into
/// a padded copy, a packed panel or a channels-last copy).
fn packed_source<'p>(source: &Source<'p>) -> XSource<'p> {
    match *source {
        Source::Tensor(slot) => (slot, None),
        Source::Computed(prologue) => (prologue.primary(), Some(prologue)),
    }
}

/// The most output channels per group, and else the largest padded plane, for which reading
/// im2col rows in place pays (see [`PaddedLayout::pays`]).
const MOST_PLACED_ROWS: usize = 64;
const MOST_PLACED_PLANE: usize = 16 * 16;
/// The largest copy of x (in floats) a convolution makes to read its im2col rows in place: the
/// copy is a workspace as large as x, which the packing route does without (vgg_small's 64
/// channels of 224x224 at batch 64 would add 789 MiB to its 6.8 GiB).
const MOST_PLACED_COPY: usize = 1 << 24;
/// The most floats of one image's padded group planes a task of the product writes to its
/// scratch (see `emit_product`): 1 MiB.
const MOST_STAGED_FLOATS: usize = 1 << 18;

/// x as a convolution's product reads its im2col rows where they lie (where that pays), or
/// packs them from (one image per panel): x itself, or a copy of x with its padding written
/// out (`copy`) and, with a stride `s`, its
/// rows and columns dealt into `s x s` phases (row `i` of the padded image into phase `i % s`,
/// as its row `i / s`; columns likewise), each of `hw` extents. Output positions are then
/// counted along phase rows: position `(oy, ox)` is column `oy * width + ox` of the product, and
/// each output row is followed by the `width - out_width` columns of no position, computed and
/// dropped. The im2col row of channel `c` and tap `(r, q)` is then the phase of
/// `(r * dilation) % s` (rows; columns likewise) of channel `c`, shifted by
/// `(r * dilation) / s` rows and `(q * dilation) / s` columns: contiguous, so the microkernel
/// reads it through a table of those offsets, and a packing copies it run by run.
struct PaddedLayout {
    hw: [usize; 2],
    phases: [usize; 2],
    copy: bool,
}

impl PaddedLayout {
    /// Whether reading the im2col rows in place applies and pays: more than one tap (a 1x1 kernel's packing is a plain copy, or
    /// with a stride reads one phase of the copy's several, which resnet_small's subsampling
    /// shortcuts did in twice the time); no more than a quarter more column panels than
    /// positions need (dropped columns are multiplied too); few output channels or small
    /// planes; and a copy of x no larger than [`MOST_PLACED_COPY`]. A packed panel is read by
    /// every panel of output channels from L1, while rows read in place lie a plane apart: on
    /// googlenet's 192-channel 3x3 layers over 28x28 and 56x56 images the packed product was
    /// faster, on resnet_small's 16 to 64 channels and googlenet's 14x14 ones the placed one.
    fn pays(&self, g: &Geometry) -> bool {
        let dropped = self.hw[1] - g.out_width;
        // Packed, the positions of several small images share a panel.
        let images = g.images_per_panel();
        let panels = [
            gemm::col_panels(self.columns(g)) * images,
            gemm::col_panels(g.positions * images),
        ];
        let reused = g.group_out > MOST_PLACED_ROWS && self.plane() > MOST_PLACED_PLANE;
        let copy = g.batch * g.groups * g.group_in * self.plane();
        let small = !self.copy || copy <= MOST_PLACED_COPY;
        let pays = g.taps() > 1 && dropped < NR && 4 * panels[0] <= 5 * panels[1] && !reused;
        pays && small
    }

    /// x's layout for a convolution: its padding written out and dealt into phases, and
    /// copied where x is `computed` by a prologue even with neither.
    fn of(g: &Geometry, computed: bool) -> PaddedLayout {
        let a = &g.attrs;
        let hw = [0, 1].map(|axis| {
            let padded = g.hw[axis] + a.pad[2 * axis] + a.pad[2 * axis + 1];
            padded.div_ceil(a.stride[axis])
        });
        PaddedLayout {
            hw,
            phases: a.stride,
            copy: a.pad != [0; 4] || a.stride != [1, 1] || computed,
        }
    }

    /// Floats of one phase of one channel.
    fn phase_plane(&self) -> usize {
        self.hw[0] * self.hw[1]
    }

    /// Floats of one channel, all its phases.
    fn plane(&self) -> usize {
        self.phase_plane() * self.phases[0] * self.phases[1]
    }

    /// Columns of the product, up to the last position's.
    fn columns(&self, g: &Geometry) -> usize {
        let out_height = g.positions / g.out_width;
        (out_height - 1) * self.hw[1] + g.out_width
    }

    /// The offset of each tap from its channel's first phase, `r * kw + q` in order.
    fn tap_offsets(&self, g: &Geometry) -> Vec<i64> {
        let ([kh, kw], [sh, sw], dilation) = (g.kernel, self.phases, g.attrs.dilation);
        (0..kh)
            .flat_map(|r| {
                (0..kw).map(move |q| {
                    let [row, column] = [r * dilation[0], q * dilation[1]];
                    let phase = (row % sh) * sw + column % sw;
                    let shift = (row / sh) * self.hw[1] + column / sw;
                    (phase * self.phase_plane() + shift) as i64
                })
            })
            .collect()
    }

    /// x with its padding written out and dealt into phases, in a workspace (or x itself,
    /// which has neither), computed by `prologue` (if any) from its tensors at `x`. One task
    /// per channel plane.
    fn image(&self, sink: &mut KernelSink, g: &Geometry, (x, prologue): XSource) -> Slot {
        if !self.copy {
            return x;
        }
        let planes = g.batch * g.groups * g.group_in;
        let padded = sink.workspace(planes * self.plane());
        sink.kernel(planes, 0, |e| {
            let (from, to) = (e.buffer(x), e.buffer(padded));
            let (begin, end) = (e.begin(), e.end());
            e.for_loop(begin, end, 1, |e, plane| {
                let from = e.at_scaled(from, plane, g.plane() as i64);
                let to = e.at_scaled(to, plane, self.plane() as i64);
                let (zero, floats) = (e.int(0), e.int(self.plane() as i64));
                gemm::zero_run(e, to, 1, zero, floats);
                let rows = [0, self.hw[0] as i64].map(|row| e.int(row));
                let channel = e.rem_imm(plane, (g.groups * g.group_in) as i64);
                let load = prologue.map(|p| p.in_channel(e, channel));
                self.write_rows(e, g, ([from, to], load.as_deref()), rows);
            });
        });
        padded
    }

    /// Writes x's values (or what `load` makes of them) into rows `first..last` of every phase
    /// of one channel's padded copy at `to`, from its plane of x at `from`; the padding's zeros
    /// must be there already.
    fn write_rows(
        &self,
        e: &mut Emitter,
        g: &Geometry,
        ([from, to], load): ([Value; 2], Option<&ElementLoad>),
        rows: [Value; 2],
    ) {
        let [height, width] = self.hw.map(|extent| extent as i64);
        let [sh, sw] = self.phases.map(|s| s as i64);
        let [top, _, left, _] = g.attrs.pad.map(|p| p as i64);
        let input_width = g.hw[1] as i64;
        let phase_at = |e: &mut Emitter, phase: i64| {
            let start = e.int(phase * self.phase_plane() as i64);
            e.at(to, start)
        };
        // Input column `c` lands in phase column `(c + left) % sw`, at `(c + left) / sw`.
        let landing = |c: i64| ((c + left) % sw, (c + left) / sw);
        for phase_row in 0..sh {
            // The phase's rows that hold input rows.
            let input_row_of = |row: i64| row * sh + phase_row - top;
            let first = (0..height).find(|&row| input_row_of(row) >= 0);
            let past = (0..height).find(|&row| input_row_of(row) >= g.hw[0] as i64);
            let [first, past] = [first.unwrap_or(height), past.unwrap_or(height)];
            let lo = e.max_imm(rows[0], first);
            let hi = e.min_imm(rows[1], past);
            e.for_loop(lo, hi, 1, |e, row| {
                let padded = e.mul_imm(row, sh);
                let input_row = e.add_imm(padded, phase_row - top);
                let input_start = e.mul_imm(input_row, input_width);
                let from = e.at(from, input_start);
                let row_start = e.mul_imm(row, width);
                // Where input column `c0 + c` goes, `c0` a multiple of `sw`.
                let target = |e: &mut Emitter, c0: Value, c: i64| {
                    let (phase_column, column) = landing(c);
                    let phase = phase_at(e, phase_row * sw + phase_column);
                    let to = e.at(phase, row_start);
                    let shift = e.div_imm(c0, sw);
                    let to = e.at(to, shift);
                    let column = e.int(column);
                    e.at(to, column)
                };
                let zero = e.int(0);
                let all = e.int(input_width);
                if sw == 1 {
                    let to = target(e, zero, 0);
                    gemm::copy_run_through(e, load, [from, to], [zero, all]);
                    return;
                }
                // By eight columns: two f32x4 dealt into the phases of their even and odd
                // columns; the rest one by one.
                let octets = if sw == 2 { input_width / 8 * 8 } else { 0 };
                let octet_end = e.int(octets);
                e.for_loop(zero, octet_end, 8, |e, c0| {
                    let low = gemm::load_through(e, load, F32X4, [from, c0], 0);
                    let high = gemm::load_through(e, load, F32X4, [from, c0], 4);
                    for (parity, lanes) in [[0, 2, 4, 6], [1, 3, 5, 7]].into_iter().enumerate() {
                        let dealt = gemm::shuffle_lanes(e, [low, high], lanes);
                        let to = target(e, c0, parity as i64);
                        e.store(Emitter::mutable(), dealt, to, zero, 0);
                    }
                });
                for c in octets..input_width {
                    let value = gemm::load_through(e, load, F32, [from, zero], c);
                    let to = target(e, zero, c);
                    e.store(Emitter::mutable(), value, to, zero, 0);
                }
            });
        }
    }

    /// The rows of each phase that columns `first..first + cols` of the product read,
    /// `[first, last)`.
    fn rows_read(&self, e: &mut Emitter, g: &Geometry, [first, cols]: [Value; 2]) -> [Value; 2] {
        let [height, width] = self.hw.map(|extent| extent as i64);
        let phase_plane = self.phase_plane() as i64;
        let reach = self
            .tap_offsets(g)
            .into_iter()
            .map(|offset| offset % phase_plane)
            .max();
        let first_row = e.div_imm(first, width);
        let last = e.add(first, cols);
        let last = e.add_imm(last, reach.unwrap_or(0) - 1);
        let last_row = e.div_imm(last, width);
        let past = e.add_imm(last_row, 1);
        [first_row, e.min_imm(past, height)]
    }
}

/// Where a convolution's product finds its im2col rows.
#[derive(Clone, Copy, PartialEq)]
enum Im2col {
    /// Read where they lie, in x's [`PaddedLayout`].
    InPlace,
    /// Packed one image per panel, copied run by run from x's [`PaddedLayout`].
    LaidOut,
    /// Packed one image per panel, gathered from x ([`pack_im2col`]).
    Gathered,
    /// Packed with several small images per panel, gathered from x.
    GatheredImages,
}

/// How a convolution's product is laid out: x's padded layout, where the im2col rows come
/// from, the product's columns (several images' positions where they share a panel), and its
/// tiles (`[O/g x columns]` per block of images and group).
struct ProductPlan {
    layout: PaddedLayout,
    im2col: Im2col,
    columns: usize,
    images_per_panel: usize,
    image_blocks: usize,
    /// Panels of rows and columns; panels per tile; tiles along each.
    panels: [usize; 2],
    tile: [usize; 2],
    tiles: [usize; 2],
    /// Whether each task writes the rows of x its tile reads to its scratch.
    staged: bool,
}

impl ProductPlan {
    /// The plan for `g`, x `computed` by a prologue or not, and `stored` by it: then an
    /// image's columns are one tile where that tile is no larger than others may be, so that one
    /// task stages (and stores) all of x's rows, which the image's other tasks would otherwise
    /// compute again.
    fn new(g: &Geometry, computed: bool, stored: bool) -> ProductPlan {
        let layout = PaddedLayout::of(g, computed);
        let placed = layout.pays(g);
        let (columns, images_per_panel) = if placed {
            (layout.columns(g), 1)
        } else {
            (g.positions, g.images_per_panel())
        };
        let image_blocks = g.batch.div_ceil(images_per_panel);
        let columns = columns * images_per_panel;
        // K blocks: whole channels.
        let (m_panels, n_panels) = (gemm::row_panels(g.group_out), gemm::col_panels(columns));
        let most_rows = m_panels.min(gemm::row_panels(MOST_ROWS));
        let most_cols = MOST_TILE_FLOATS / (most_rows * MR * NR);
        let most_cols = match stored && n_panels <= most_cols {
            true => n_panels,
            false => most_cols.clamp(MOST_PANELS, MOST_PRODUCT_PANELS),
        };
        let (mt, nt) = gemm::tiles(
            image_blocks * g.groups,
            m_panels,
            n_panels,
            [most_rows, most_cols],
        );
        let (m_tiles, n_tiles) = (m_panels.div_ceil(mt), n_panels.div_ceil(nt));
        // Packed im2col rows of one image per panel are copied from x as `layout` lays it out
        // (a tap's positions along an output row are then a run of it) where that layout is x
        // itself or can be staged.
        let fits = m_tiles == 1 && g.group_in * layout.plane() <= MOST_STAGED_FLOATS;
        let packs_laid_out =
            !placed && images_per_panel == 1 && g.taps() > 1 && (fits || !layout.copy);
        // Where x needs its padding written out (or dealt into phases), each task writes the
        // rows its tile reads to its scratch, where the product reads them in cache, unless
        // several tasks would write the same rows; else the product reads them from a copy of
        // all of x.
        let im2col = if placed {
            Im2col::InPlace
        } else if packs_laid_out {
            Im2col::LaidOut
        } else if images_per_panel == 1 {
            Im2col::Gathered
        } else {
            Im2col::GatheredImages
        };
        let staged = layout.copy && fits && matches!(im2col, Im2col::InPlace | Im2col::LaidOut);
        ProductPlan {
            layout,
            im2col,
            columns,
            images_per_panel,
            image_blocks,
            panels: [m_panels, n_panels],
            tile: [mt, nt],
            tiles: [m_tiles, n_tiles],
            staged,
        }
    }

    /// Whether the im2col rows are read from x's padded layout (in place, or copied run by run).
    fn laid_out(&self) -> bool {
        matches!(self.im2col, Im2col::InPlace | Im2col::LaidOut)
    }

    /// Whether x's padded copy is written whole once per image and group: by the copy's own
    /// kernel, or staged by the one task of each image and group (tasks stage x only where the
    /// product has one tile of rows), so that a prologue computing x can store it there.
    fn copies_x_once(&self) -> bool {
        self.laid_out() && self.layout.copy && (!self.staged || self.tiles[1] == 1)
    }
}

/// The product of each group's weights (`weights`: `[O/g x Kc]` per group, packed once) by the
/// im2col matrix of `x`, written to `output` through `epilogue`. The im2col rows are packed
/// block by block, or read where they lie (see [`PaddedLayout`]).
fn emit_product(
    sink: &mut KernelSink,
    g: &Geometry,
    source: &Source,
    weights: &Matrices,
    output: &Operand,
    epilogue: &Epilogue,
) {
    let (depth, taps) = (g.depth(), g.taps());
    // A prologue is computed where x is copied into its padded layout, or packed.
    let (x, prologue) = packed_source(source);
    let weights = gemm::pack_a(sink, weights);
    let stores = prologue.is_some_and(|p| p.stored.is_some());
    let plan = ProductPlan::new(g, prologue.is_some(), stores);
    assert!(
        !stores || plan.copies_x_once(),
        "internal error: a convolution stores a prologue it computes more than once"
    );
    let (laid_out, staged) = (plan.laid_out(), plan.staged);
    let [m_panels, n_panels] = plan.panels;
    let [mt, nt] = plan.tile;
    let [m_tiles, n_tiles] = plan.tiles;
    let ProductPlan {
        layout,
        im2col,
        columns,
        images_per_panel,
        image_blocks,
        ..
    } = plan;
    let (image, image_plane) = if staged {
        (x, layout.plane())
    } else if laid_out {
        (layout.image(sink, g, (x, prologue)), layout.plane())
    } else {
        (x, g.plane())
    };
    // With `NR` floats more, which rows read in place run past.
    let staged_floats = if staged {
        g.group_in * layout.plane() + NR
    } else {
        0
    };
    let channel_blocks = gemm::balanced_blocks(g.group_in, KC / taps);
    let block_rows = channel_blocks.1 * taps;
    let ldc = nt * NR;
    // B's packed panels, or the table of its rows' offsets (i64, two floats each).
    let b_floats = if im2col == Im2col::InPlace {
        2 * block_rows
    } else {
        nt * NR * block_rows
    };
    let scratch = ScratchLayout::new(&[b_floats, mt * MR * ldc, staged_floats]);
    let tasks = image_blocks * g.groups * m_tiles * n_tiles;
    // Row sums per image and block of positions.
    let partials = epilogue.partials(sink, g.batch * n_tiles, g.groups * g.group_out);
    sink.kernel(tasks, scratch.floats(), |e| {
        let (xs, packed, y) = (e.buffer(image), e.buffer(weights), e.buffer(output.slot));
        let (b_scratch, c_tiles) = (scratch.region(e, 0), scratch.region(e, 1));
        let stage = scratch.region(e, 2);
        if staged {
            // The padding's zeros, written once: the tasks write only x's values over them.
            let zero = e.int(0);
            let staged_floats = e.int(staged_floats as i64);
            gemm::zero_run(e, stage, 1, zero, staged_floats);
        }
        if im2col == Im2col::InPlace {
            // Row `c * taps + t` of a K block: channel `c`'s plane, shifted to tap `t`.
            let offsets = layout.tap_offsets(g);
            let zero = e.int(0);
            let channels = e.int(channel_blocks.1 as i64);
            e.for_loop(zero, channels, 1, |e, c| {
                let plane = e.mul_imm(c, layout.plane() as i64);
                let row = e.mul_imm(c, taps as i64);
                for (t, &offset) in offsets.iter().enumerate() {
                    let value = e.add_imm(plane, offset);
                    let index = e.add_imm(row, t as i64);
                    let at = e.offset_entry(b_scratch, index);
                    e.b.ins().store(Emitter::mutable(), value, at, 0);
                }
            });
        }
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let [image_block, group, mi, ni] =
                e.decode(task, &[image_blocks, g.groups, m_tiles, n_tiles])[..]
            else {
                unreachable!()
            };
            let first_image = e.mul_imm(image_block, images_per_panel as i64);
            let batch = e.int(g.batch as i64);
            let left_images = e.sub(batch, first_image);
            let images = e.min_imm(left_images, images_per_panel as i64);
            let tile = Tile::new(e, [mi, ni], [mt, nt], [m_panels, n_panels]);
            let first_column = e.mul_imm(tile.first_panel[1], NR as i64);
            let group_panels = e.mul_imm(group, m_panels as i64);
            let panel = e.add(group_panels, tile.first_panel[0]);
            let panels = e.at_scaled(packed, panel, (depth * MR) as i64);
            let (rows, cols) = tile.extent(e, [g.group_out, columns]);
            let zero = e.int(0);
            if staged {
                let x_planes = g.group_planes(e, [xs, first_image, group], g.plane());
                // A prologue that stores x computes all of it.
                let read = if im2col == Im2col::InPlace && !stores {
                    layout.rows_read(e, g, [first_column, cols])
                } else {
                    [0, layout.hw[0] as i64].map(|row| e.int(row))
                };
                let group_channels = e.mul_imm(group, g.group_in as i64);
                e.for_range(0, g.group_in as i64, |e, c| {
                    let from = e.at_scaled(x_planes, c, g.plane() as i64);
                    let to = e.at_scaled(stage, c, image_plane as i64);
                    let channel = e.add(group_channels, c);
                    let load = prologue.map(|p| p.in_channel(e, channel));
                    layout.write_rows(e, g, ([from, to], load.as_deref()), read);
                });
            }
            // The group's planes in image `first_image + t`.
            let planes = |e: &mut Emitter, t: Value| {
                if staged {
                    return stage;
                }
                let image = e.add(first_image, t);
                g.group_planes(e, [xs, image, group], image_plane)
            };
            gemm::for_each_k_block(e, channel_blocks, g.group_in, |e, c0, channels, first| {
                let kc = e.mul_imm(channels, taps as i64);
                let block_planes = |e: &mut Emitter, t: Value| {
                    let planes = planes(e, t);
                    e.at_scaled(planes, c0, image_plane as i64)
                };
                // The channel of x a block's first row of B reads.
                let block_channel = |e: &mut Emitter, group: Value, c0: Value| {
                    let first = e.mul_imm(group, g.group_in as i64);
                    e.add(first, c0)
                };
                let (b, b_stride, b_rows) = match im2col {
                    Im2col::InPlace => {
                        let block_planes = block_planes(e, zero);
                        let b = e.at(block_planes, first_column);
                        (b, e.int(NR as i64), b_scratch)
                    }
                    Im2col::LaidOut | Im2col::Gathered => {
                        let source = [block_planes(e, zero), channels];
                        let columns = [first_column, tile.panels[1]];
                        if im2col == Im2col::LaidOut {
                            pack_laid_out(e, g, &layout, source, columns, kc, b_scratch);
                        } else {
                            let to = [b_scratch, e.int(NR as i64)];
                            let computed = prologue.map(|p| (p, block_channel(e, group, c0)));
                            pack_im2col(e, g, (source, computed), columns, kc, to);
                        }
                        (b_scratch, e.mul_imm(kc, NR as i64), e.int(0))
                    }
                    Im2col::GatheredImages => {
                        e.for_loop(zero, images, 1, |e, t| {
                            let block_planes = block_planes(e, t);
                            let [col, width] = image_columns(e, g, [t, images]);
                            let to = [e.at(b_scratch, col), width];
                            let one = e.int(1);
                            let source = [block_planes, channels];
                            let computed = prologue.map(|p| (p, block_channel(e, group, c0)));
                            pack_im2col(e, g, (source, computed), [zero, one], kc, to);
                        });
                        (b_scratch, e.mul_imm(kc, NR as i64), e.int(0))
                    }
                };
                let a = e.at_scaled(panels, c0, (taps * MR) as i64);
                let block = Block {
                    kc,
                    a,
                    a_rows: e.int(0),
                    a_stride: e.int((depth * MR) as i64),
                    m_panels: tile.panels[0],
                    m_rows: rows,
                    b,
                    b_stride,
                    b_rows,
                    n_panels: tile.panels[1],
                };
                gemm::multiply(e, &block, c_tiles, ldc as i64, first);
            });
            // y[image, group * O/g + row, position], from the tile's columns at `c`, which lie
            // there as `runs` says.
            let first_row = e.mul_imm(tile.first_panel[0], MR as i64);
            let group_channels = e.mul_imm(group, g.group_out as i64);
            let channel = e.add(group_channels, first_row);
            let write_out = |e: &mut Emitter, t: Value, c: Value, first_position, cols, runs| {
                let image = e.add(first_image, t);
                let image_channels = e.mul_imm(image, (g.groups * g.group_out) as i64);
                let plane = e.add(image_channels, channel);
                let rows_start = e.at_scaled(y, plane, g.positions as i64);
                let to = e.at(rows_start, first_position);
                let inputs = epilogue.block_inputs(e, &[image, channel, first_position], 1);
                let (lds, block) = ([ldc as i64, g.positions as i64], ([rows, cols], runs));
                let sums = partials.as_ref().map(|partials| {
                    let block = e.mul_imm(image, n_tiles as i64);
                    let block = e.add(block, ni);
                    partials.at(e, block, channel)
                });
                gemm::copy_block(e, [c, to], lds, block, epilogue, &inputs, sums.as_ref());
            };
            match im2col {
                Im2col::InPlace => {
                    // The columns of each output row, and the dropped ones after it.
                    let past = e.add(first_column, cols);
                    let widths = [layout.hw[1], g.out_width];
                    let [first, last] =
                        [first_column, past].map(|c| gemm::kept_before(e, widths, c));
                    let cols = e.sub(last, first);
                    let runs = Runs::Rows {
                        widths,
                        columns: [first_column, past],
                        first,
                    };
                    write_out(e, zero, c_tiles, first, cols, runs);
                }
                Im2col::LaidOut | Im2col::Gathered => {
                    write_out(e, zero, c_tiles, first_column, cols, Runs::Together)
                }
                Im2col::GatheredImages => {
                    let positions = e.int(g.positions as i64);
                    e.for_loop(zero, images, 1, |e, t| {
                        let col = e.mul_imm(t, g.positions as i64);
                        let c = e.at(c_tiles, col);
                        write_out(e, t, c, zero, positions, Runs::Together);
                    });
                }
            }
        });
    });
    if let Some(partials) = partials {
        partials.add_up(sink, output);
    }
}

/// Packs the im2col rows of `channels` channels of x, laid out as `layout` says at `planes`,
/// into `panels` B panels as [`pack_im2col`] does (one image per panel): a tap's positions
/// along an output row are a run of that layout, which is copied.
fn pack_laid_out(
    e: &mut Emitter,
    g: &Geometry,
    layout: &PaddedLayout,
    [planes, channels]: [Value; 2],
    [first, panels]: [Value; 2],
    kc: Value,
    dst: Value,
) {
    let offsets = layout.tap_offsets(g);
    let taps = offsets.len();
    // Panels then hold whole output rows, each a run of a known length.
    let whole_rows = NR.is_multiple_of(g.out_width);
    let width = e.int(NR as i64);
    for_each_position_panel(
        e,
        g,
        [first, panels],
        kc,
        [dst, width],
        |e, panel, [lo, hi]| {
            for_each_row_span(e, g, [lo, hi], |e, span| {
                let row = e.mul_imm(span.block, layout.hw[1] as i64);
                let row = e.at(planes, row);
                let to = e.at(panel, span.col);
                let zero = e.int(0);
                e.for_loop(zero, channels, 1, |e, c| {
                    let from = e.at_scaled(row, c, layout.plane() as i64);
                    let to = e.at_scaled(to, c, (taps * NR) as i64);
                    for (t, &tap) in offsets.iter().enumerate() {
                        let tap = e.int(tap);
                        let from = e.at(from, tap);
                        let row = e.int((t * NR) as i64);
                        let to = e.at(to, row);
                        if whole_rows {
                            gemm::copy_floats(e, from, to, g.out_width);
                        } else {
                            gemm::copy_run(e, from, to, span.start, span.end);
                        }
                    }
                });
            });
        },
    );
}

/// Runs `fill(e, panel, [lo, hi])` for each of `panels` B panels of `kc` rows at `dst`, panel
/// `j` to hold positions `lo..hi` (from `first + j * NR`, at most `NR`, none past the last) in
/// its first columns; then zeros its columns past them, up to `width`.
fn for_each_position_panel(
    e: &mut Emitter,
    g: &Geometry,
    [first, panels]: [Value; 2],
    kc: Value,
    [dst, width]: [Value; 2],
    fill: impl FnOnce(&mut Emitter, Value, [Value; 2]),
) {
    let positions = e.int(g.positions as i64);
    let start = e.int(0);
    e.for_loop(start, panels, 1, |e, j| {
        let offset = e.mul_imm(j, NR as i64);
        let lo = e.add(first, offset);
        let next = e.add_imm(lo, NR as i64);
        let hi = e.min(next, positions);
        let panel_floats = e.mul_imm(kc, NR as i64);
        let panel_index = e.mul(j, panel_floats);
        let panel = e.at(dst, panel_index);
        fill(e, panel, [lo, hi]);
        let valid = e.sub(hi, lo);
        zero_columns_past(e, panel, kc, [valid, width]);
    });
}

/// Packs the im2col rows of `channels` channels (from the plane at `planes`) into `panels` B
/// panels, `kc` deep, at `dst`: panel `j` holds positions `first + j*NR ..` in its first
/// columns, zeros past the last position up to column `width` (`NR`, or less where another
/// image's positions follow in the panel). A panel spans an output row or two: the rows'
/// geometry is worked out once per panel, and the kernel columns are unrolled so that theirs is
/// constant; a panel that holds a whole image whose taps all land inside x is copied by loops
/// of constant bounds.
fn pack_im2col(
    e: &mut Emitter,
    g: &Geometry,
    ([planes, channels], computed): ([Value; 2], Option<(&Prologue, Value)>),
    [first, panels]: [Value; 2],
    kc: Value,
    [dst, width]: [Value; 2],
) {
    if g.is_pointwise() {
        // The im2col matrix is x itself (or what the prologue computes from its tensors of x's
        // shape, row `k` channel `first + k`), packed row by row.
        let positions = e.int(g.positions as i64);
        let span = e.mul_imm(panels, NR as i64);
        let end = e.add(first, span);
        let end = e.min(end, positions);
        let cols = e.sub(end, first);
        let from = e.at(planes, first);
        let row_load = computed.map(|(prologue, first)| prologue.by_channel(first));
        let row_load = row_load.as_ref().map(|r| r as &gemm::RowLoad);
        let cols = [cols, width, panels];
        gemm::pack_b_rows(e, (from, g.plane()), cols, channels, dst, row_load);
        return;
    }
    let [kh, kw] = g.kernel;
    let columns: Vec<TapColumns> = (0..kw as i64)
        .map(|q| {
            let q = e.int(q);
            TapColumns::new(e, g, q)
        })
        .collect();
    for_each_position_panel(
        e,
        g,
        [first, panels],
        kc,
        [dst, width],
        |e, panel, [lo, hi]| {
            // Channel `c`'s elements, loaded or computed.
            let channel_load = |e: &mut Emitter, c: Value| {
                computed.map(|(prologue, first)| {
                    let channel = e.add(first, c);
                    prologue.in_channel(e, channel)
                })
            };
            if g.positions <= NR && g.taps_inside() {
                // The panel holds the whole image.
                for_each_tap_row(e, g, channels, |e, c, tap, row| {
                    let plane = e.at_scaled(planes, c, g.plane() as i64);
                    let to = e.at_scaled(panel, row, NR as i64);
                    let load = channel_load(e, c);
                    for_each_image_run(e, g, tap, [plane, to], |e, from, to, j, ty| {
                        let value = gemm::load_through(e, load.as_deref(), ty, [from, j], 0);
                        e.store(Emitter::mutable(), value, to, j, 0);
                    });
                });
            } else {
                for_each_row_span(e, g, [lo, hi], |e, span| {
                    let zero = e.int(0);
                    e.for_loop(zero, channels, 1, |e, c| {
                        let plane = e.at_scaled(planes, c, g.plane() as i64);
                        let load = channel_load(e, c);
                        let load = load.as_deref();
                        e.for_range(0, kh as i64, |e, r| {
                            let top = tap_top(e, g, r);
                            let channel_row = e.mul_imm(c, kh as i64);
                            let row = e.add(channel_row, r);
                            let first_row = e.mul_imm(row, kw as i64);
                            let rows = e.at_scaled(panel, first_row, NR as i64);
                            for (q, columns) in columns.iter().enumerate() {
                                let run = Run::new(e, g, span, top, columns);
                                let offset = e.int((q * NR) as i64);
                                let to = e.at(rows, offset);
                                gather_run(e, g, (&run, load), plane, to);
                            }
                        });
                    });
                });
            }
        },
    );
}

/// The input gradient, written through `epilogue`: each task applies it to the planes it owns
/// once they are complete, while they are in cache.
/// dx, from dy (`source`, of `dy_shape`: a tensor, or computed by a prologue where
/// [`copies_computed_x_once`] allows one) and w.
pub fn emit_input_grad(
    a: &ConvAttrs,
    sink: &mut KernelSink,
    (source, dy_shape): (&Source, &[usize]),
    w: &Operand,
    output: &Operand,
    epilogue: &Epilogue,
) {
    let depthwise = depthwise::is_depthwise(a, &output.shape, &w.shape);
    let g = Geometry::new(a, &output.shape, &w.shape);
    if let Some(adjoint) = adjoint_geometry(&g, dy_shape).filter(|_| !depthwise) {
        let weights = flipped_weights(sink, &g, w.slot);
        return emit_product(sink, &adjoint, source, &weights, output, epilogue);
    }
    let Source::Tensor(slot) = *source else {
        unreachable!("internal error: a prologue computes dy for an input gradient that packs it")
    };
    let dy = &Operand {
        slot,
        shape: dy_shape.to_vec(),
    };
    if depthwise {
        let inputs = [dy.clone(), w.clone()];
        return depthwise::emit_input_grad(a, sink, &inputs, output, epilogue);
    }
    let (depth, taps, positions) = (g.depth(), g.taps(), g.positions);
    // dcol `[Kc x P]` = W_gᵀ · dy_ng, scattered into dx: A = each group's transposed weights,
    // packed once; B = dy_ng, packed per task and block of positions.
    let weights = gemm::pack_a(
        sink,
        &Matrices {
            slot: w.slot,
            count: g.groups,
            stride: g.group_out * depth,
            rows: depth,
            cols: g.group_out,
            row_stride: 1,
            col_stride: depth,
        },
    );
    let images_per_panel = g.images_per_panel();
    let image_blocks = g.batch.div_ceil(images_per_panel);
    // Tasks: blocks of input channels per block of images and group, each owning its dx planes,
    // which it zeroes and then adds every position block's dcol to, in order. A block's im2col
    // rows start on an A panel: its channel count is a multiple of `unit`, unless it is the
    // only one. Fewer blocks repack dy less often.
    let unit = MR / gcd(MR, taps);
    let most = (MOST_ROWS / taps / unit).max(1) * unit;
    let mut blocks = g.group_in.div_ceil(most);
    while image_blocks * g.groups * blocks < gemm::TASKS && blocks < g.group_in.div_ceil(unit) {
        blocks += 1;
    }
    let block_channels = (g.group_in.div_ceil(blocks).div_ceil(unit) * unit).min(g.group_in);
    let channel_blocks = g.group_in.div_ceil(block_channels);
    let (depth_panels, n_panels) = (gemm::row_panels(depth), gemm::col_panels(positions));
    let m_most = gemm::row_panels(block_channels * taps);
    let nt = n_panels.min(MOST_PANELS);
    let ldc = nt * NR;
    let b_panel_floats = g.group_out * NR;
    let phases = match g.attrs.stride {
        [1, 1] => 0,
        [sy, sx] => sy * sx * phase_extent(&g).iter().product::<usize>(),
    };
    let scratch = ScratchLayout::new(&[m_most * MR * ldc, nt * b_panel_floats, phases]);
    let k_blocks = gemm::balanced_blocks(g.group_out, KC);
    let tasks = image_blocks * g.groups * channel_blocks;
    // Whether each dcol tile holds whole images: their col2im then goes phase by phase, with
    // loops of constant bounds, and writes all of dx.
    let whole_images = n_panels <= nt;
    // Row sums per image.
    let partials = epilogue.partials(sink, g.batch, g.groups * g.group_in);
    sink.kernel(tasks, scratch.floats(), |e| {
        let (packed_w, grads, dx) = (e.buffer(weights), e.buffer(dy.slot), e.buffer(output.slot));
        let (dcol, b_panels) = (scratch.region(e, 0), scratch.region(e, 1));
        let phases = scratch.region(e, 2);
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let [image_block, group, block] =
                e.decode(task, &[image_blocks, g.groups, channel_blocks])[..]
            else {
                unreachable!()
            };
            let first_image = e.mul_imm(image_block, images_per_panel as i64);
            let batch = e.int(g.batch as i64);
            let left_images = e.sub(batch, first_image);
            let images = e.min_imm(left_images, images_per_panel as i64);
            let c0 = e.mul_imm(block, block_channels as i64);
            let left = e.int(g.group_in as i64);
            let left = e.sub(left, c0);
            let channels = e.min_imm(left, block_channels as i64);
            // The task's dx planes and dy rows in image `first_image + t`.
            let planes = |e: &mut Emitter, t: Value| {
                let image = e.add(first_image, t);
                let group_planes = g.group_planes(e, [dx, image, group], g.plane());
                e.at_scaled(group_planes, c0, g.plane() as i64)
            };
            let dy_rows = |e: &mut Emitter, t: Value| {
                let image = e.add(first_image, t);
                let images = e.mul_imm(image, g.groups as i64);
                let matrix = e.add(images, group);
                e.at_scaled(grads, matrix, (g.group_out * positions) as i64)
            };
            let zero = e.int(0);
            if !whole_images {
                e.for_loop(zero, images, 1, |e, t| {
                    let planes = planes(e, t);
                    let floats = e.mul_imm(channels, g.plane() as i64);
                    gemm::zero_run(e, planes, 1, zero, floats);
                });
            }
            // A: the block's rows of W_gᵀ; B: dy_ng.
            let m_rows = e.mul_imm(channels, taps as i64);
            let rows = e.add_imm(m_rows, MR as i64 - 1);
            let m_count = e.div_imm(rows, MR as i64);
            let group_panels = e.mul_imm(group, depth_panels as i64);
            let block_panel = e.mul_imm(c0, taps as i64);
            let block_panel = e.div_imm(block_panel, MR as i64);
            let panel = e.add(group_panels, block_panel);
            let a_panels = e.at_scaled(packed_w, panel, (g.group_out * MR) as i64);
            let multiply = |e: &mut Emitter, panels: Value| {
                gemm::for_each_k_block(e, k_blocks, g.group_out, |e, k0, kc, first| {
                    let block = Block {
                        kc,
                        a: e.at_scaled(a_panels, k0, MR as i64),
                        a_rows: e.int(0),
                        a_stride: e.int((g.group_out * MR) as i64),
                        m_panels: m_count,
                        m_rows,
                        b: e.at_scaled(b_panels, k0, NR as i64),
                        b_stride: e.int(b_panel_floats as i64),
                        b_rows: e.int(0),
                        n_panels: panels,
                    };
                    gemm::multiply(e, &block, dcol, ldc as i64, first);
                });
            };
            // col2im: every dcol row, from column `col`, back onto the taps of positions
            // `lo..hi` of the planes at `planes`.
            let col2im = |e: &mut Emitter, planes: Value, col: Value, [lo, hi]: [Value; 2]| {
                if whole_images {
                    let image = e.at(dcol, col);
                    col2im_by_phases(e, &g, channels, [planes, image, phases], ldc);
                    return;
                }
                for_each_tap_row(e, &g, channels, |e, c, tap, row| {
                    let plane = e.at_scaled(planes, c, g.plane() as i64);
                    let row_start = e.at_scaled(dcol, row, ldc as i64);
                    let src = e.at(row_start, col);
                    for_each_run(e, &g, tap, [lo, hi], |e, run| {
                        scatter_add_run(e, &g, run, plane, src)
                    });
                });
            };
            if images_per_panel == 1 {
                let (planes, dy_rows) = (planes(e, zero), dy_rows(e, zero));
                let position_blocks = n_panels.div_ceil(nt) as i64;
                e.for_range(0, position_blocks, |e, pb| {
                    let tile = Tile::new(e, [zero, pb], [1, nt], [1, n_panels]);
                    let lo = e.mul_imm(tile.first_panel[1], NR as i64);
                    let next = e.add_imm(lo, ldc as i64);
                    let hi = e.min_imm(next, positions as i64);
                    let from = e.at(dy_rows, lo);
                    let cols = e.sub(hi, lo);
                    let panel_width = e.int(NR as i64);
                    let depth = e.int(g.group_out as i64);
                    let cols = [cols, panel_width, tile.panels[1]];
                    gemm::pack_b_rows(e, (from, positions), cols, depth, b_panels, None);
                    multiply(e, tile.panels[1]);
                    col2im(e, planes, zero, [lo, hi]);
                });
            } else {
                let depth = e.int(g.group_out as i64);
                let width = e.int(positions as i64);
                e.for_loop(zero, images, 1, |e, t| {
                    let dy_rows = dy_rows(e, t);
                    let [col, owned] = image_columns(e, &g, [t, images]);
                    let to = e.at(b_panels, col);
                    gemm::pack_b_panel(e, dy_rows, [positions, 1], [width, owned], depth, to, None);
                });
                let one = e.int(1);
                multiply(e, one);
                e.for_loop(zero, images, 1, |e, t| {
                    let planes = planes(e, t);
                    let col = e.mul_imm(t, positions as i64);
                    col2im(e, planes, col, [zero, width]);
                });
            }
            if !epilogue.is_none() {
                let group_channels = e.mul_imm(group, g.group_in as i64);
                let channel = e.add(group_channels, c0);
                e.for_loop(zero, images, 1, |e, t| {
                    let image = e.add(first_image, t);
                    let planes = planes(e, t);
                    let plane = e.int(g.plane() as i64);
                    gemm::epilogue_in_place(
                        e,
                        (epilogue, partials.as_ref()),
                        (planes, g.plane() as i64),
                        [channels, plane],
                        [image, channel, zero],
                        image,
                    );
                });
            }
        });
    });
    if let Some(partials) = partials {
        partials.add_up(sink, output);
    }
}

/// With stride 1, dx is itself a convolution: of dy, padded by as much as the dilated kernel
/// reaches beyond x's padding, by the weights flipped and with input and output channels
/// exchanged. Its product writes dx once, where the general route multiplies into a column
/// matrix `taps` times dx's size and scatters that back (col2im); but it packs dy's im2col
/// matrix, `O/g * taps` rows per position. Taken where that is no more work: one tap (dy packed
/// as it is), or no more output than input channels, and no more positions in dx than in dy
/// (the padding's zeros would be multiplied). On googlenet's 3x3 and 5x5 layers, whose output
/// channels outnumber their input's 1.5 to 4 times, it was slower. `None` where not taken.
fn adjoint_attrs(g: &Geometry) -> Option<ConvAttrs> {
    let a = &g.attrs;
    let cheaper = g.taps() == 1 || (g.group_out <= g.group_in && g.plane() <= g.positions);
    if a.stride != [1, 1] || !cheaper {
        return None;
    }
    let reach = |axis: usize| a.dilation[axis] * (g.kernel[axis] - 1);
    let pad = |side: usize| reach(side / 2).checked_sub(a.pad[side]);
    Some(ConvAttrs {
        pad: [pad(0)?, pad(1)?, pad(2)?, pad(3)?],
        ..*a
    })
}

/// The geometry of the adjoint convolution over dy (`dy_shape`) that computes the input
/// gradient of the convolution of geometry `g`, where [`adjoint_attrs`] takes that route.
fn adjoint_geometry(g: &Geometry, dy_shape: &[usize]) -> Option<Geometry> {
    let adjoint = adjoint_attrs(g)?;
    let flipped_shape = [g.groups * g.group_in, g.group_out, g.kernel[0], g.kernel[1]];
    Some(Geometry::new(&adjoint, dy_shape, &flipped_shape))
}

/// Whether a convolution (`Conv2d`, or its input gradient `Conv2dInputGrad`) whose operand x
/// (dy for the input gradient) a prologue computes writes x's padded copy once, computing each
/// element of x once, given x's shape and w's: then it can store x as it goes (a chain's
/// stored prologue, `fused::check_results`). Depthwise kernels and packings compute some
/// elements several times.
pub fn copies_computed_x_once(kind: &OpKind, x: &[usize], w: &[usize]) -> bool {
    let geometry = match kind {
        OpKind::Conv2d(a) if !depthwise::is_depthwise(a, x, w) => Some(Geometry::new(a, x, w)),
        OpKind::Conv2dInputGrad(a, hw) => {
            let dx = [x[0], a.groups * w[1], hw[0], hw[1]];
            let depthwise = depthwise::is_depthwise(a, &dx, w);
            adjoint_geometry(&Geometry::new(a, &dx, w), x).filter(|_| !depthwise)
        }
        _ => None,
    };
    geometry.is_some_and(|g| ProductPlan::new(&g, true, true).copies_x_once())
}

/// Each group's weights for the adjoint convolution (see [`adjoint_attrs`]), `[C/g x O/g*taps]`:
/// element `(c, o*taps + t)` is `w[o, c]`'s tap `taps - 1 - t`. With one tap that is w itself,
/// transposed; otherwise a kernel writes it to a workspace.
fn flipped_weights(sink: &mut KernelSink, g: &Geometry, w: Slot) -> Matrices {
    let (taps, group_in, group_out) = (g.taps(), g.group_in, g.group_out);
    let group_floats = group_out * group_in * taps;
    if taps == 1 {
        return Matrices {
            slot: w,
            count: g.groups,
            stride: group_floats,
            rows: group_in,
            cols: group_out,
            row_stride: 1,
            col_stride: group_in,
        };
    }
    let row_floats = group_out * taps;
    let flipped = sink.workspace(g.groups * group_floats);
    // Tasks: rows `(group, c)` of the flipped weights.
    sink.kernel(g.groups * group_in, 0, |e| {
        let (from, to) = (e.buffer(w), e.buffer(flipped));
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, row| {
            let [group, c] = e.decode(row, &[g.groups, group_in])[..] else {
                unreachable!()
            };
            let to = e.at_scaled(to, row, row_floats as i64);
            let group_rows = e.mul_imm(group, group_out as i64);
            e.for_range(0, group_out as i64, |e, o| {
                let w_row = e.add(group_rows, o);
                let w_row = e.mul_imm(w_row, group_in as i64);
                let w_row = e.add(w_row, c);
                let from = e.at_scaled(from, w_row, taps as i64);
                let to = e.at_scaled(to, o, taps as i64);
                let zero = e.int(0);
                for tap in 0..taps {
                    let back = (taps - 1 - tap) as i64;
                    let value = e.load(F32, Emitter::frozen(), from, zero, back);
                    e.store(Emitter::mutable(), value, to, zero, tap as i64);
                }
            });
        });
    });
    Matrices {
        slot: flipped,
        count: g.groups,
        stride: group_floats,
        rows: group_in,
        cols: row_floats,
        row_stride: row_floats,
        col_stride: 1,
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The weight gradient, of x (a tensor, or computed by a prologue as the kernels read it) and
/// dy.
pub fn emit_weight_grad(
    a: &ConvAttrs,
    sink: &mut KernelSink,
    (source, x_shape): (&Source, &[usize]),
    dy: &Operand,
    output: &Operand,
) {
    if depthwise::is_depthwise(a, x_shape, &output.shape) {
        return depthwise::emit_weight_grad(a, sink, (source, x_shape), dy, output);
    }
    let g = Geometry::new(a, x_shape, &output.shape);
    // A prologue is computed where x is packed (a pointwise convolution's, pack_taps) or
    // copied channels last.
    let (x, prologue) = packed_source(source);
    let (depth, positions) = (g.depth(), g.positions);
    // dW_g `[O/g x Kc]` = sum over images of dy_ng · im2col(x_ng)ᵀ: A = dy per image and group,
    // its rows read where they lie; B = the transposed im2col matrix, its columns ordered tap
    // by tap, its panels read in x's padded channels-last copy where they are a run of it for
    // every position, else packed per task (see `pack_taps`).
    // Tasks: tiles of `[O/g x Kc]` per group and block of images, each tile as many rows as
    // fit (so the im2col matrix is packed once per image), summing its images' positions. The
    // blocks' partial sums then add up in block order: the split depends on the shape only, so
    // the result does not depend on the thread count.
    let (m_panels, n_panels) = (gemm::row_panels(g.group_out), gemm::col_panels(depth));
    let mt = m_panels.min(gemm::row_panels(MOST_ROWS));
    let most_cols = (MOST_TILE_FLOATS / (mt * MR * NR)).clamp(MOST_PANELS / 2, MOST_PANELS * 2);
    let nt = n_panels.min(most_cols);
    let (m_tiles, n_tiles) = (m_panels.div_ceil(mt), n_panels.div_ceil(nt));
    let tiles = g.groups * m_tiles * n_tiles;
    // Where B comes from, and its floats per image and per group of channels. x's padded,
    // channels-last copy is written by each task, an image at a time, to its scratch, where
    // the product reads it in cache, when one tile covers dW and the image fits; else by a
    // kernel of its own, all images, before the product.
    let [ph, pw] = padded_extent(&g);
    let padded_image = ph * pw * g.groups * g.group_in;
    let staged = !g.is_pointwise() && tiles == 1 && padded_image <= MOST_STAGED_FLOATS;
    let (source, image_stride, group_stride) = if g.is_pointwise() {
        let group = g.group_in * g.plane();
        (x, g.groups * group, group)
    } else if staged {
        (x, g.groups * g.group_in * g.plane(), g.group_in)
    } else {
        let padded = emit_channels_last(sink, &g, (x, prologue));
        (padded, padded_image, g.group_in)
    };
    let staged_floats = if staged { padded_image + NR } else { 0 };
    let image_blocks = gemm::TASKS
        .div_ceil(tiles)
        .max(MOST_BLOCK_SUM_FLOATS / output.len())
        .clamp(1, g.batch);
    let block_images = g.batch.div_ceil(image_blocks);
    let image_blocks = g.batch.div_ceil(block_images);
    // Each block's dW, columns in the tile's order, when it is not dW itself.
    let taps = g.taps();
    let block_sums =
        (image_blocks > 1 || taps > 1).then(|| sink.workspace(image_blocks * output.len()));
    let p_blocks = gemm::balanced_blocks(positions, KC);
    // Whether some B panels can lie inside one unit of taps (see `unit_taps`).
    let rows_in_place = !g.is_pointwise() && unit_taps(&g) * g.group_in >= NR;
    let ldc = nt * NR;
    // B's packed panels, the C tiles, and the offsets of B's rows in the padded copy (i64).
    let scratch = ScratchLayout::new(&[
        nt * NR * p_blocks.1,
        mt * MR * ldc,
        2 * p_blocks.1,
        staged_floats,
    ]);
    sink.kernel(image_blocks * tiles, scratch.floats(), |e| {
        let (source, grads) = (e.buffer(source), e.buffer(dy.slot));
        let dw = e.buffer(block_sums.unwrap_or(output.slot));
        let (b_panels, c_tiles) = (scratch.region(e, 0), scratch.region(e, 1));
        let (row_offsets, stage) = (scratch.region(e, 2), scratch.region(e, 3));
        if staged {
            // The padding's zeros, written once: each image writes only its values over them.
            let zero = e.int(0);
            let staged_floats = e.int(staged_floats as i64);
            gemm::zero_run(e, stage, 1, zero, staged_floats);
        }
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let [block, group, mi, ni] =
                e.decode(task, &[image_blocks, g.groups, m_tiles, n_tiles])[..]
            else {
                unreachable!()
            };
            let tile = Tile::new(e, [mi, ni], [mt, nt], [m_panels, n_panels]);
            let (rows, cols) = tile.extent(e, [g.group_out, depth]);
            let first_col = e.mul_imm(tile.first_panel[1], NR as i64);
            let first_image = e.mul_imm(block, block_images as i64);
            let images_left = e.int(g.batch as i64);
            let images_left = e.sub(images_left, first_image);
            let images = e.min_imm(images_left, block_images as i64);
            let last_image = e.add(first_image, images);
            if !rows_in_place && !g.is_pointwise() {
                // Zeros past the tile's columns in its last B panel, which every packing
                // leaves as they are.
                let last = e.add_imm(tile.panels[1], -1);
                let first_past = e.mul_imm(last, NR as i64);
                let width = e.sub(cols, first_past);
                let panel = e.mul_imm(last, (p_blocks.1 * NR) as i64);
                let panel = e.at(b_panels, panel);
                let [rows, all] = [p_blocks.1, NR].map(|n| e.int(n as i64));
                zero_columns_past(e, panel, rows, [width, all]);
            }
            e.for_loop(first_image, last_image, 1, |e, image| {
                let image_floats = e.mul_imm(image, image_stride as i64);
                let image_channels = e.at(source, image_floats);
                let image_channels = if staged {
                    channels_last_values(e, &g, ([image_channels, stage], prologue));
                    stage
                } else {
                    image_channels
                };
                let image_channels = e.at_scaled(image_channels, group, group_stride as i64);
                let images = e.mul_imm(image, g.groups as i64);
                let matrix = e.add(images, group);
                let matrix = e.mul_imm(matrix, g.group_out as i64);
                let first_row = e.mul_imm(tile.first_panel[0], MR as i64);
                let row = e.add(matrix, first_row);
                let dy_rows = e.at_scaled(grads, row, positions as i64);
                let is_first_image = e.b.ins().icmp(IntCC::Equal, image, first_image);
                gemm::for_each_k_block(e, p_blocks, positions, |e, p0, kc, first_block| {
                    let a = e.at(dy_rows, p0);
                    let first = e.b.ins().band(is_first_image, first_block);
                    let block = |e: &mut Emitter, b, b_rows, n_panels| Block {
                        kc,
                        a,
                        a_rows: e.int(positions as i64),
                        a_stride: e.int((positions * MR) as i64),
                        m_panels: tile.panels[0],
                        m_rows: rows,
                        b,
                        // Packed panels lie a whole K block apart, the last perhaps shorter.
                        b_stride: e.int((p_blocks.1 * NR) as i64),
                        b_rows,
                        n_panels,
                    };
                    if !rows_in_place {
                        let columns = [first_col, cols, tile.panels[1]];
                        let computed = prologue.map(|p| (p, e.mul_imm(group, g.group_in as i64)));
                        let image = (image_channels, computed);
                        let panels = (b_panels, p_blocks.1);
                        pack_taps(e, &g, image, columns, [p0, kc], panels);
                        let zero = e.int(0);
                        let block = block(e, b_panels, zero, tile.panels[1]);
                        gemm::multiply(e, &block, c_tiles, ldc as i64, first);
                        return;
                    }
                    // A panel inside one unit of taps is a run of the padded copy for every
                    // position: its rows are read there. The others are packed.
                    unit_row_offsets(e, &g, [p0, kc], row_offsets);
                    let zero = e.int(0);
                    e.for_loop(zero, tile.panels[1], 1, |e, j| {
                        let offset = e.mul_imm(j, NR as i64);
                        let left = e.sub(cols, offset);
                        let width = e.min_imm(left, NR as i64);
                        let lo = e.add(first_col, offset);
                        let c_panel = e.at(c_tiles, offset);
                        let one = e.int(1);
                        let unit = unit_of_column(e, &g, lo);
                        let last = e.add(lo, width);
                        let last = e.add_imm(last, -1);
                        let last_unit = unit_of_column(e, &g, last);
                        let inside = e.b.ins().icmp(IntCC::Equal, unit.index, last_unit.index);
                        e.if_else(
                            inside,
                            |_| {},
                            |e| {
                                let columns = [lo, width, one];
                                let image = (image_channels, None);
                                pack_taps(e, &g, image, columns, [p0, kc], (b_panels, 0));
                                // Other panels packed there before: zeros past this one.
                                let all = e.int(NR as i64);
                                zero_columns_past(e, b_panels, kc, [width, all]);
                            },
                        );
                        let channels = (g.groups * g.group_in) as i64;
                        let unit_image = e.at_scaled(image_channels, unit.shift, channels);
                        let within = e.sub(lo, unit.first_column);
                        let in_place = e.at(unit_image, within);
                        let b = e.b.ins().select(inside, in_place, b_panels);
                        let b_rows = e.b.ins().select(inside, row_offsets, zero);
                        let block = block(e, b, b_rows, one);
                        gemm::multiply(e, &block, c_panel, ldc as i64, first);
                    });
                });
            });
            let first_row = e.mul_imm(tile.first_panel[0], MR as i64);
            let group_rows = e.int((g.group_out) as i64);
            let group_row = e.mul(group, group_rows);
            let row = e.add(group_row, first_row);
            let blocks_before = e.mul_imm(block, output.len() as i64);
            let weights = e.at(dw, blocks_before);
            let weights = e.at_scaled(weights, row, depth as i64);
            let to = e.at(weights, first_col);
            let lds = [ldc as i64, depth as i64];
            let none = &Epilogue::none();
            let block = ([rows, cols], Runs::Together);
            gemm::copy_block(e, [c_tiles, to], lds, block, none, &[], None);
        });
    });
    match block_sums {
        Some(block_sums) if taps > 1 => {
            emit_tap_order_sum(sink, &g, [block_sums, output.slot], image_blocks)
        }
        Some(block_sums) => {
            let shape: Shape = [image_blocks]
                .iter()
                .chain(&output.shape)
                .copied()
                .collect();
            let summands = Operand {
                slot: block_sums,
                shape,
            };
            layout::emit_sum_to(sink, &[summands], output);
        }
        None => {}
    }
}

/// Adds up `blocks` weight gradients whose columns are ordered tap by tap (the B matrix's
/// order, see [`pack_taps`]) into dW, whose columns are ordered channel by channel:
/// block after block, so the sum does not depend on how tasks were dealt out. A tap's channels
/// lie side by side in the blocks, so they are added `LANES` at a time and stored lane by lane.
/// Tasks: rows of dW, each read and written whole, in cache.
fn emit_tap_order_sum(sink: &mut KernelSink, g: &Geometry, [staged, dw]: [Slot; 2], blocks: usize) {
    let (depth, taps, channels) = (g.depth(), g.taps(), g.group_in);
    let rows = g.groups * g.group_out;
    sink.kernel(rows, 0, |e| {
        let (from, to) = (e.buffer(staged), e.buffer(dw));
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, row| {
            let from = e.at_scaled(from, row, depth as i64);
            let to = e.at_scaled(to, row, depth as i64);
            e.for_range(0, taps as i64, |e, tap| {
                let from = e.at_scaled(from, tap, channels as i64);
                e.vector_range(0, channels as i64, 1, |e, c, ty| {
                    let mut total = e.load(ty, Emitter::frozen(), from, c, 0);
                    for block in 1..blocks {
                        let offset = (block * rows * depth) as i64;
                        let value = e.load(ty, Emitter::frozen(), from, c, offset);
                        total = e.b.ins().fadd(total, value);
                    }
                    let lanes = if ty == F32 { 1 } else { LANES };
                    for lane in 0..lanes {
                        let value = match lanes {
                            1 => total,
                            _ => e.b.ins().extractlane(total, lane as u8),
                        };
                        let channel = e.add_imm(c, lane);
                        let column = e.mul_imm(channel, taps as i64);
                        let column = e.add(column, tap);
                        e.store(Emitter::mutable(), value, to, column, 0);
                    }
                });
            });
        });
    });
}

/// The padded extent `[rows, columns]` of x that a convolution's taps read: the top-left
/// padding, the image, and the bottom-right padding as far as some tap reaches it.
fn padded_extent(g: &Geometry) -> [usize; 2] {
    let a = &g.attrs;
    let out_height = g.positions / g.out_width;
    let reach = |out: usize, axis: usize| {
        (out - 1) * a.stride[axis] + (g.kernel[axis] - 1) * a.dilation[axis] + 1
    };
    [reach(out_height, 0), reach(g.out_width, 1)]
}

/// Writes one row of a padded copy of an image at `to`, `width` floats: zeros, but for input
/// row `input_row` of an image `height` rows tall, floats `inside..outside`, which
/// `fill(e, input_row)` writes.
fn padded_row(
    e: &mut Emitter,
    to: Value,
    [input_row, height]: [Value; 2],
    [inside, outside, width]: [Value; 3],
    fill: impl FnOnce(&mut Emitter, Value),
) {
    // Negative rows wrap to huge unsigned values: one comparison checks both ends.
    let in_image = e.b.ins().icmp(IntCC::UnsignedLessThan, input_row, height);
    let zero = e.int(0);
    e.if_else(
        in_image,
        |e| {
            gemm::zero_run(e, to, 1, zero, inside);
            fill(e, input_row);
            gemm::zero_run(e, to, 1, outside, width);
        },
        |e| gemm::zero_run(e, to, 1, zero, width),
    );
}

/// Writes x with its zero padding (to [`padded_extent`]), channels last, to a workspace: image
/// `n`'s channel `c` at padded position `(i, j)` is float `((n * ph + i) * pw + j) * C + c`. A
/// row of the weight gradient's B panels (one position, consecutive channels of one tap) is then
/// a contiguous run of it, which the packing copies instead of gathering and transposing.
fn emit_channels_last(sink: &mut KernelSink, g: &Geometry, (x, prologue): XSource) -> Slot {
    let [ph, pw] = padded_extent(g);
    let channels = g.groups * g.group_in;
    let row_floats = pw * channels;
    let padded = sink.workspace(g.batch * ph * row_floats);
    // Tasks: padded rows.
    sink.kernel(g.batch * ph, 0, |e| {
        let (xs, out) = (e.buffer(x), e.buffer(padded));
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let [image, i] = e.decode(task, &[g.batch, ph])[..] else {
                unreachable!()
            };
            let to = e.at_scaled(out, task, row_floats as i64);
            let planes = e.at_scaled(xs, image, (channels * g.plane()) as i64);
            channels_last_row(e, g, ([planes, to], prologue), i);
        });
    });
    padded
}

/// Writes padded row `i` of one image's channels-last copy (see [`emit_channels_last`]) at
/// `to`, from the image's planes of x at `planes` (x's tensors, if a `prologue` computes it).
fn channels_last_row(
    e: &mut Emitter,
    g: &Geometry,
    ([planes, to], prologue): ([Value; 2], Option<&Prologue>),
    i: Value,
) {
    let [_, pw] = padded_extent(g);
    let channels = g.groups * g.group_in;
    let [height, width] = g.hw;
    let (top, left) = (g.attrs.pad[0], g.attrs.pad[2]);
    // Input columns inside the padded row.
    let columns = width.min(pw.saturating_sub(left));
    let input_row = e.add_imm(i, -(top as i64));
    let rows = [input_row, e.int(height as i64)];
    let [before, after, row_end] = [left, left + columns, pw].map(|c| e.int((c * channels) as i64));
    padded_row(e, to, rows, [before, after, row_end], |e, input_row| {
        channels_last_values_of_row(e, g, ([planes, to], prologue), input_row)
    });
}

/// Writes input row `input_row`'s values into its padded row of one image's channels-last
/// copy, which starts at `to`, from the image's planes of x at `planes` (x's tensors, if a
/// `prologue` computes it).
fn channels_last_values_of_row(
    e: &mut Emitter,
    g: &Geometry,
    ([planes, to], prologue): ([Value; 2], Option<&Prologue>),
    input_row: Value,
) {
    let [_, pw] = padded_extent(g);
    let channels = g.groups * g.group_in;
    let [height, width] = g.hw;
    let left = g.attrs.pad[2];
    let columns = width.min(pw.saturating_sub(left));
    let from = e.at_scaled(planes, input_row, width as i64);
    let first = e.int((left * channels) as i64);
    let to = e.at(to, first);
    transpose_row(
        e,
        ([from, to], prologue),
        [channels, columns],
        (height * width) as i64,
    );
}

/// Writes the values of one image's channels-last copy (see [`emit_channels_last`]) at `to`,
/// from its planes of x at `planes` (x's tensors, if a `prologue` computes it), and leaves its
/// padding as it is.
fn channels_last_values(e: &mut Emitter, g: &Geometry, planes_to: ([Value; 2], Option<&Prologue>)) {
    let ([planes, to], prologue) = planes_to;
    let [ph, pw] = padded_extent(g);
    let channels = g.groups * g.group_in;
    let top = g.attrs.pad[0];
    let rows = g.hw[0].min(ph.saturating_sub(top));
    e.for_range(0, rows as i64, |e, input_row| {
        let padded_row = e.add_imm(input_row, top as i64);
        let to = e.at_scaled(to, padded_row, (pw * channels) as i64);
        channels_last_values_of_row(e, g, ([planes, to], prologue), input_row);
    });
}

/// `to[w * channels + c] = from[c * plane + w]` for `c < channels` and `w < columns` (or what
/// `prologue` computes there, `c` being x's channel): 4x4 blocks transposed in registers, the
/// rest one by one.
fn transpose_row(
    e: &mut Emitter,
    ([from, to], prologue): ([Value; 2], Option<&Prologue>),
    [channels, columns]: [usize; 2],
    plane: i64,
) {
    let (channel_quads, column_quads) = (channels / 4 * 4, columns / 4 * 4);
    let stride = channels as i64;
    let zero = e.int(0);
    let channel_end = e.int(channel_quads as i64);
    e.for_loop(zero, channel_end, 4, |e, c| {
        let loads = [0, 1, 2, 3].map(|t| {
            let channel = e.add_imm(c, t);
            prologue.map(|p| p.in_channel(e, channel))
        });
        let column_end = e.int(column_quads as i64);
        e.for_loop(zero, column_end, 4, |e, w| {
            let rows = [0, 1, 2, 3].map(|t| {
                let channel = e.add_imm(c, t);
                let index = e.mul_imm(channel, plane);
                let index = e.add(index, w);
                let load = loads[t as usize].as_deref();
                gemm::load_through(e, load, F32X4, [from, index], 0)
            });
            let target = e.mul_imm(w, stride);
            let target = e.add(target, c);
            for (t, column) in gemm::transpose4(e, rows).into_iter().enumerate() {
                e.store(Emitter::mutable(), column, to, target, t as i64 * stride);
            }
        });
    });
    let one_by_one = |e: &mut Emitter, [lo, hi]: [usize; 2], first: usize| {
        e.for_range(lo as i64, hi as i64, |e, c| {
            let load = prologue.map(|p| p.in_channel(e, c));
            let load = load.as_deref();
            e.for_range(first as i64, columns as i64, |e, w| {
                let index = e.mul_imm(c, plane);
                let index = e.add(index, w);
                let value = gemm::load_through(e, load, F32, [from, index], 0);
                let target = e.mul_imm(w, stride);
                let target = e.add(target, c);
                e.store(Emitter::mutable(), value, to, target, 0);
            });
        });
    };
    one_by_one(e, [0, channel_quads], column_quads);
    one_by_one(e, [channel_quads, channels], 0);
}

/// The taps of the weight gradient's B columns that are one contiguous run of x's padded,
/// channels-last copy per position: a whole kernel row when the group is all the channels and
/// the kernel is not dilated along rows, else one tap.
fn unit_taps(g: &Geometry) -> usize {
    if g.groups == 1 && g.attrs.dilation[1] == 1 {
        g.kernel[1]
    } else {
        1
    }
}

/// The unit of taps (see [`unit_taps`]) a B column of the weight gradient falls in: its index,
/// its first column, and how far its run starts from a position's, in padded positions.
struct TapUnit {
    index: Value,
    first_column: Value,
    shift: Value,
}

fn unit_of_column(e: &mut Emitter, g: &Geometry, column: Value) -> TapUnit {
    let a = &g.attrs;
    let [_, pw] = padded_extent(g);
    let taps = unit_taps(g);
    let index = e.div_imm(column, (taps * g.group_in) as i64);
    let first_column = e.mul_imm(index, (taps * g.group_in) as i64);
    let tap = e.mul_imm(index, taps as i64);
    let r = e.div_imm(tap, g.kernel[1] as i64);
    let q = e.rem_imm(tap, g.kernel[1] as i64);
    let row_shift = e.mul_imm(r, (a.dilation[0] * pw) as i64);
    let column_shift = e.mul_imm(q, a.dilation[1] as i64);
    let shift = e.add(row_shift, column_shift);
    TapUnit {
        index,
        first_column,
        shift,
    }
}

/// Writes, for positions `p0 .. p0 + kc`, where each one's channels start in x's padded,
/// channels-last copy, in floats from its image's (i64, at `table`).
fn unit_row_offsets(e: &mut Emitter, g: &Geometry, [p0, kc]: [Value; 2], table: Value) {
    let a = &g.attrs;
    let [_, pw] = padded_extent(g);
    let channels = (g.groups * g.group_in) as i64;
    let hi = e.add(p0, kc);
    for_each_row_span(e, g, [p0, hi], |e, span| {
        let row = e.mul_imm(span.block, (a.stride[0] * pw) as i64 * channels);
        e.for_loop(span.start, span.end, 1, |e, w| {
            let column = e.mul_imm(w, a.stride[1] as i64 * channels);
            let value = e.add(row, column);
            let k = e.add(span.col, w);
            let at = e.offset_entry(table, k);
            e.b.ins().store(Emitter::mutable(), value, at, 0);
        });
    });
}

/// Packs positions `p0 .. p0 + kc` of B columns `first ..` (`cols` of them; the columns are
/// ordered tap by tap, the group's channels within a tap) as `panels` B panels at `dst`
/// (`dst[p*NR + j]`), each `panel_rows` rows after the one before (`kc` if 0). A pointwise
/// convolution's panels get zeros in the columns past `cols`; the others' are left as they
/// are. `image` is one image's group channels: of x itself for a pointwise convolution, whose
/// B matrix is x transposed; else of x's padded, channels-last copy, in which a tap's channels
/// are a contiguous run, and so are a kernel row's taps when the group is all the channels and
/// the kernel is not dilated along rows.
fn pack_taps(
    e: &mut Emitter,
    g: &Geometry,
    (image, computed): (Value, Option<(&Prologue, Value)>),
    [first, cols, panels]: [Value; 3],
    [p0, kc]: [Value; 2],
    (dst, panel_rows): (Value, usize),
) {
    let a = &g.attrs;
    let [_, pw] = padded_extent(g);
    let channels = (g.groups * g.group_in) as i64;
    let unit_taps = unit_taps(g);
    let hi = e.add(p0, kc);
    let panel_floats = match panel_rows {
        0 => e.mul_imm(kc, NR as i64),
        rows => e.int((rows * NR) as i64),
    };
    let start = e.int(0);
    e.for_loop(start, panels, 1, |e, j| {
        let offset = e.mul_imm(j, NR as i64);
        let left = e.sub(cols, offset);
        let width = e.min_imm(left, NR as i64);
        let lo = e.add(first, offset);
        let panel_index = e.mul(j, panel_floats);
        let panel = e.at(dst, panel_index);
        if g.is_pointwise() {
            // Column `j` is channel `lo + j` of the group, which starts at x's channel
            // `first` of a prologue's.
            let planes = e.at_scaled(image, lo, g.plane() as i64);
            let from = e.at(planes, p0);
            let panel_width = e.int(NR as i64);
            let cols = [width, panel_width];
            let column_load = computed.map(|(prologue, first)| {
                let first = e.add(first, lo);
                prologue.by_channel(first)
            });
            let column_load = column_load.as_ref().map(|l| l as &gemm::RowLoad);
            gemm::pack_b_panel(e, from, [1, g.plane()], cols, kc, panel, column_load);
            return;
        }
        let end = e.add(lo, width);
        // Units of `unit_taps` taps: one contiguous run of the padded copy each.
        let unit_columns = unit_taps * g.group_in;
        for_each_span(e, unit_columns, [lo, end], |e, unit| {
            let tap = e.mul_imm(unit.block, unit_taps as i64);
            let r = e.div_imm(tap, g.kernel[1] as i64);
            let q = e.rem_imm(tap, g.kernel[1] as i64);
            let row_shift = e.mul_imm(r, (a.dilation[0] * pw) as i64);
            let column_shift = e.mul_imm(q, a.dilation[1] as i64);
            let shift = e.add(row_shift, column_shift);
            let unit_image = e.at_scaled(image, shift, channels);
            let from = e.at(unit_image, unit.start);
            let column = e.add(unit.col, unit.start);
            let to = e.at(panel, column);
            let count = e.sub(unit.end, unit.start);
            gemm::copy_runs_of(e, count, unit_columns, |e, copy| {
                for_each_row_span(e, g, [p0, hi], |e, span| {
                    let row = e.mul_imm(span.block, (a.stride[0] * pw) as i64);
                    let row = e.at_scaled(from, row, channels);
                    e.for_loop(span.start, span.end, 1, |e, w| {
                        let source = e.at_scaled(row, w, a.stride[1] as i64 * channels);
                        let position = e.add(span.col, w);
                        let target = e.at_scaled(to, position, NR as i64);
                        copy(e, source, target);
                    });
                });
            });
        });
    });
}

/// Zeros columns `valid..width` of the `kc` rows of the B panel at `panel` (nothing when
/// `valid` is `width`).
fn zero_columns_past(e: &mut Emitter, panel: Value, kc: Value, [valid, width]: [Value; 2]) {
    let short = e.b.ins().icmp(IntCC::SignedLessThan, valid, width);
    let zero = e.int(0);
    let rows = e.b.ins().select(short, kc, zero);
    e.for_loop(zero, rows, 1, |e, k| {
        let to = e.at_scaled(panel, k, NR as i64);
        gemm::zero_run(e, to, 1, valid, width);
    });
}
