//! Direct kernels for depthwise convolution: one input channel per group, so `w` is
//! `[O, 1, kh, kw]` with `O = C * M` for a channel multiplier `M`, and output channel `o` reads
//! input channel `o / M` only (MobileNet's separable blocks). Through the GEMM path each output
//! element would be a dot product of `kh * kw` terms, a sliver of the microkernel's tile; here
//! the loops are direct, without im2col.
//!
//! The forward op and the input gradient are the same kernel, a *gather*: every output element
//! is a sum of weights times input elements at fixed offsets from it. The forward op gathers x
//! at the convolution's stride. The input gradient gathers dy with the kernel flipped; with a
//! stride `s > 1` only one kernel tap in `s` reaches a given dx row or column, so dx splits into
//! `sh * sw` phases (rows `≡ ρ mod sh`, columns `≡ σ mod sw`), each a stride-1 gather over its
//! own taps. Each output element is written once, by one task, with its terms summed in a fixed
//! order: no zeroing, no scatter, no dependence on the thread count.
//!
//! Shapes are static, so the borders are resolved at compile time: along each axis, the output
//! positions split into runs where the same taps land inside the input (the padded edges, the
//! interior), and each run gets code with exactly its taps and no bounds checks. Rows run as
//! loops over the task's share of each run; columns run as f32x4 loops along the output row
//! (unrolled), with scalar tails. Stride-2 columns are loaded as two vectors and deinterleaved
//! with one shuffle; larger strides load lane by lane.
//!
//! Both take an epilogue (`fuse_epilogue`): a task's rows of its output plane, just written and
//! still in cache, go through it in place, with their row sums (batch norm's statistics, its
//! gradient's sums) added up block by block afterwards, as a product's write-out does.
//!
//! Where the input is computed by a prologue (`fuse_prologue`: batch norm's apply and ReLU),
//! the forward kernel and the weight gradient compute the rows of each input plane into their
//! scratch just before the first output row that reads them, so the input is never written to
//! memory.
//!
//! The weight gradient is a reduction: one task per output channel sums over the batch and the
//! output positions in order, vectorised along output rows with one f32x4 accumulator per tap
//! (taps in groups that fit the registers), then adds each accumulator's lanes in a fixed order.

use super::emit::{Emitter, Slot, F32, F32X4, LANES};
use super::gemm::{self, Epilogue, IndexMath};
use super::prologue::{Prologue, Source};
use super::{KernelSink, Operand};
use crate::ir::ops::ConvAttrs;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I64, I8X16};
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::Variable;

/// Kernels of at most this many taps (7x7) are handled here; the code for each border run
/// repeats every tap, so huge kernels are left to the GEMM path.
const MAX_TAPS: usize = 49;
/// f32x4 steps per unrolled iteration along an output row.
const UNROLL: usize = 4;
/// Tasks to aim for: a few per thread on 16 threads. Output planes are cut into row blocks
/// when there are fewer planes than this.
const TASKS: usize = 64;
/// f32x4 steps per unrolled iteration of the weight gradient's loops, whose accumulators
/// already give independent chains.
const WEIGHT_GRAD_UNROLL: usize = 2;
/// f32x4 accumulators the weight gradient keeps in registers at once, with room left for the
/// dy vector and the x vectors among Cranelift's 16.
const ACCUMULATORS: usize = 12;

/// Whether the depthwise kernels handle this convolution (`x`'s and `w`'s shapes). A
/// convolution of a single input channel is left to the contraction (its output channels
/// share every input tap, which a product uses and a per-channel kernel does not).
pub fn is_depthwise(a: &ConvAttrs, x: &[usize], w: &[usize]) -> bool {
    w[1] == 1 && a.groups == x[1] && a.groups > 1 && w[2] * w[3] <= MAX_TAPS
}

/// x's planes as a kernel computes them into its scratch: `channels` planes per image of
/// `extent` (rows, columns). A kernel stages rows just before the first output row that reads
/// them (`Staged`), a few at a time, so that their loads from memory overlap the arithmetic on
/// the rows before rather than stall a pass of their own.
struct Staging<'p> {
    prologue: &'p Prologue,
    channels: usize,
    extent: [usize; 2],
}

/// Floats to stage at least at a time (whole rows), so that a narrow plane is not staged in
/// slivers of a few vectors, each with its loop's overhead.
const STAGED_AT_ONCE: usize = 64;

/// One plane being staged: its first element in the prologue's whole inputs, the per-channel
/// inputs' values, the rows staged so far.
struct Staged<'s> {
    staging: &'s Staging<'s>,
    first: Value,
    channel: Vec<Option<Value>>,
    scratch: Value,
    rows: Variable,
}

impl<'s> Staging<'s> {
    /// How a kernel stages x from `source`, if a prologue computes it.
    fn of(source: &Source<'s>, channels: usize, extent: [usize; 2]) -> Option<Staging<'s>> {
        match *source {
            Source::Tensor(_) => None,
            Source::Computed(prologue) => Some(Staging {
                prologue,
                channels,
                extent,
            }),
        }
    }

    /// Plane `plane` (image `n`, channel `c`: `n * C + c`), staged from row `first` on (none
    /// yet).
    fn start(&'s self, e: &mut Emitter, plane: Value, first: Value) -> Staged<'s> {
        let channel = e.b.ins().urem_imm_s(plane, self.channels as i64);
        let channel = self.prologue.channel_values(e, channel);
        let first_row = e.max_imm(first, 0);
        let first_row = e.min_imm(first_row, self.extent[0] as i64);
        Staged {
            staging: self,
            first: e
                .b
                .ins()
                .imul_imm_s(plane, (self.extent[0] * self.extent[1]) as i64),
            channel,
            scratch: e.scratch(),
            rows: e.variable(I64, first_row),
        }
    }
}

impl Staged<'_> {
    /// Stages the rows before row `end` not yet staged, and as many more (up to the plane's
    /// end) as make `STAGED_AT_ONCE` floats.
    fn up_to(&self, e: &mut Emitter, end: Value) {
        let [height, width] = self.staging.extent;
        let more = STAGED_AT_ONCE.div_ceil(width) as i64 - 1;
        let lo = e.get(self.rows);
        let needed = e.b.ins().icmp(IntCC::SignedLessThan, lo, end);
        let rows = self.rows;
        e.if_else(
            needed,
            |e| {
                let hi = e.b.ins().iadd_imm_s(end, more);
                let hi = e.min_imm(hi, height as i64);
                let [from, to] = [lo, hi].map(|row| e.b.ins().imul_imm_s(row, width as i64));
                let prologue = self.staging.prologue;
                e.vector_loop(from, to, UNROLL, |e, i, ty| {
                    let at = e.b.ins().iadd(self.first, i);
                    let x = prologue.compute(e, ty, &self.channel, |e, slot| {
                        let base = e.buffer(slot);
                        e.load(ty, Emitter::frozen(), base, at, 0)
                    });
                    e.store(Emitter::mutable(), x, self.scratch, i, 0);
                });
                e.set(rows, hi);
            },
            |_| {},
        );
    }
}

/// Where a kernel reads x: the tensor, or the scratch its planes are staged in. The loads are
/// frozen either way, though each task writes its scratch again: Cranelift may move a frozen
/// load anywhere its address is computed, and the address of every load of x depends on the
/// index of the loop along an output row, so each load stays inside that loop, which runs
/// after its rows are staged and before the next plane's are.
fn input_base(e: &mut Emitter, x: &Source) -> Value {
    match x {
        Source::Tensor(slot) => e.buffer(*slot),
        Source::Computed(_) => e.scratch(),
    }
}

pub fn emit_forward(
    a: &ConvAttrs,
    sink: &mut KernelSink,
    (x, x_shape): (&Source, &[usize]),
    w: &Operand,
    output: &Operand,
    epilogue: &Epilogue,
) {
    let g = Geometry::new(x_shape, &w.shape, &output.shape);
    let gather = Gather {
        planes: g.batch * g.outputs(),
        out_extent: g.y,
        out_step: [1, 1],
        in_extent: g.x,
        in_channels: g.channels,
        in_stride: a.stride,
        sources: 1,
        kernel: g.taps(),
        lattices: vec![Lattice {
            first: [0, 0],
            count: g.y,
            taps: forward_taps(a, g.kernel),
        }],
    };
    let [hw, taps, outputs, channels, multiplier] = [
        g.x[0] * g.x[1],
        g.taps(),
        g.outputs(),
        g.channels,
        g.multiplier,
    ]
    .map(|v| v as i64);
    emit_gather(
        sink,
        &gather,
        (x, w.slot),
        (output, epilogue),
        |e, plane| {
            // Plane `n * O + o` of y reads channel `o / M` of image `n`, and kernel `o`.
            let image = e.b.ins().udiv_imm_s(plane, outputs);
            let o = e.b.ins().urem_imm_s(plane, outputs);
            let channel = e.b.ins().udiv_imm_s(o, multiplier);
            let first = e.b.ins().imul_imm_s(image, channels);
            let x_plane = e.b.ins().iadd(first, channel);
            [
                e.b.ins().imul_imm_s(x_plane, hw),
                e.b.ins().imul_imm_s(o, taps),
            ]
        },
    );
}

pub fn emit_input_grad(
    a: &ConvAttrs,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
    epilogue: &Epilogue,
) {
    let g = Geometry::new(&output.shape, &inputs[1].shape, &inputs[0].shape);
    let mut lattices = Vec::new();
    for rho in 0..a.stride[0].min(g.x[0]) {
        for sigma in 0..a.stride[1].min(g.x[1]) {
            lattices.push(input_grad_phase(a, &g, [rho, sigma]));
        }
    }
    let gather = Gather {
        planes: g.batch * g.channels,
        out_extent: g.x,
        out_step: a.stride,
        in_extent: g.y,
        in_channels: g.outputs(),
        in_stride: [1, 1],
        sources: g.multiplier,
        kernel: g.taps(),
        lattices,
    };
    let [dy_planes, kernels] =
        [g.multiplier * g.y[0] * g.y[1], g.multiplier * g.taps()].map(|v| v as i64);
    let channels = g.channels as i64;
    emit_gather(
        sink,
        &gather,
        (&Source::Tensor(inputs[0].slot), inputs[1].slot),
        (output, epilogue),
        |e, plane| {
            // Plane `n * C + c` of dx gathers from dy planes `n * O + c * M + m` (consecutive)
            // through kernels `c * M + m`.
            let channel = e.b.ins().urem_imm_s(plane, channels);
            [
                e.b.ins().imul_imm_s(plane, dy_planes),
                e.b.ins().imul_imm_s(channel, kernels),
            ]
        },
    );
}

pub fn emit_weight_grad(
    a: &ConvAttrs,
    sink: &mut KernelSink,
    (x_source, x_shape): (&Source, &[usize]),
    dy: &Operand,
    output: &Operand,
) {
    let g = Geometry::new(x_shape, &output.shape, &dy.shape);
    let taps = forward_taps(a, g.kernel);
    let groups = taps.len().div_ceil(ACCUMULATORS);
    let per_group = taps.len().div_ceil(groups);
    let [y_plane, outputs, channels, multiplier, kernel] = [
        g.y[0] * g.y[1],
        g.outputs(),
        g.channels,
        g.multiplier,
        g.taps(),
    ]
    .map(|v| v as i64);
    let (dy_slot, dw_slot) = (dy.slot, output.slot);
    let staging = Staging::of(x_source, g.channels, g.x);
    let scratch = staging.as_ref().map_or(0, |_| g.x[0] * g.x[1]);
    sink.kernel(g.outputs(), scratch, |e| {
        let x = input_base(e, x_source);
        let [dy, dw] = [dy_slot, dw_slot].map(|s| e.buffer(s));
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, o| {
            // dw[o] sums dy planes `n * O + o` times x planes `n * C + o / M`.
            let channel = e.b.ins().udiv_imm_s(o, multiplier);
            let planes = |e: &mut Emitter, image: Value| {
                let first_x = e.b.ins().imul_imm_s(image, channels);
                let x_index = e.b.ins().iadd(first_x, channel);
                let first_dy = e.b.ins().imul_imm_s(image, outputs);
                let dy_index = e.b.ins().iadd(first_dy, o);
                [x_index, e.b.ins().imul_imm_s(dy_index, y_plane)]
            };
            let dw_kernel = e.b.ins().imul_imm_s(o, kernel);
            for group in taps.chunks(per_group) {
                let sums = weight_grad_sums(e, a, &g, group, [x, dy], (&planes, staging.as_ref()));
                for (tap, sum) in group.iter().zip(sums) {
                    let total = horizontal_sum(e, sum);
                    e.store(Emitter::mutable(), total, dw, dw_kernel, tap.weight as i64);
                }
            }
        });
    });
}

/// One output channel's gradient for a group of taps, as an f32x4 of partial sums per tap:
/// dy times x at each tap's offset, over the images in order (`planes(n)` gives image `n`'s x
/// plane's index and dy plane's first element) and the output positions where the tap lands
/// inside x, row by row; x's rows staged as they are reached where `staging` computes them.
fn weight_grad_sums(
    e: &mut Emitter,
    a: &ConvAttrs,
    g: &Geometry,
    group: &[Tap],
    [x, dy]: [Value; 2],
    (planes, staging): (
        &impl Fn(&mut Emitter, Value) -> [Value; 2],
        Option<&Staging>,
    ),
) -> Vec<Value> {
    let reach = group.iter().map(|tap| tap.offset[0]).max().unwrap_or(0) + 1;
    let [row_runs, column_runs] =
        [0, 1].map(|axis| runs(g.y[axis], g.x[axis], a.stride[axis], group, axis));
    let zero = e.constant(F32X4, 0.0);
    let sums: Vec<_> = group.iter().map(|_| e.variable(F32X4, zero)).collect();
    e.for_range(0, g.batch as i64, |e, image| {
        let [x_index, dy_plane] = planes(e, image);
        let staged = staging.map(|staging| {
            let zero = e.int(0);
            staging.start(e, x_index, zero)
        });
        let x_plane = match staged {
            Some(_) => e.int(0),
            None => e.b.ins().imul_imm_s(x_index, (g.x[0] * g.x[1]) as i64),
        };
        for rows in &row_runs {
            e.for_range(rows.start as i64, rows.end as i64, |e, i| {
                if let Some(staged) = &staged {
                    let end = e.b.ins().imul_imm_s(i, a.stride[0] as i64);
                    let end = e.b.ins().iadd_imm_s(end, reach);
                    staged.up_to(e, end);
                }
                let dy_row = e.b.ins().imul_imm_s(i, g.y[1] as i64);
                let dy_row = e.b.ins().iadd(dy_plane, dy_row);
                let x_rows: Vec<Value> = group
                    .iter()
                    .map(|tap| input_row(e, x_plane, i, a.stride[0], tap, g.x[1]))
                    .collect();
                for columns in &column_runs {
                    let live: Vec<usize> = (0..group.len())
                        .filter(|&t| rows.valid[t] && columns.valid[t])
                        .collect();
                    if live.is_empty() {
                        continue;
                    }
                    let (lo, hi) = (columns.start as i64, columns.end as i64);
                    e.vector_range(lo, hi, WEIGHT_GRAD_UNROLL, |e, j, ty| {
                        let at = e.b.ins().iadd(dy_row, j);
                        let d = e.load(ty, Emitter::frozen(), dy, at, 0);
                        for &t in &live {
                            let index = input_index(e, x_rows[t], j, a.stride[1]);
                            let offset = group[t].offset[1];
                            let v = load_lanes(e, ty, x, index, offset, a.stride[1]);
                            let product = e.b.ins().fmul(d, v);
                            let product = widen(e, product);
                            let sum = e.get(sums[t]);
                            let sum = e.b.ins().fadd(sum, product);
                            e.set(sums[t], sum);
                        }
                    });
                }
            });
        }
    });
    sums.into_iter().map(|sum| e.get(sum)).collect()
}

/// The extents of a depthwise convolution, from x, w and y's shapes.
struct Geometry {
    batch: usize,
    channels: usize,
    /// Output channels per input channel.
    multiplier: usize,
    /// x's and y's spatial extents.
    x: [usize; 2],
    y: [usize; 2],
    kernel: [usize; 2],
}

impl Geometry {
    fn new(x: &[usize], w: &[usize], y: &[usize]) -> Geometry {
        Geometry {
            batch: x[0],
            channels: x[1],
            multiplier: w[0] / x[1],
            x: [x[2], x[3]],
            y: [y[2], y[3]],
            kernel: [w[2], w[3]],
        }
    }

    fn outputs(&self) -> usize {
        self.channels * self.multiplier
    }

    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
}

/// One term of a gathered sum: kernel element `weight` (flat `p * kw + q`) times the input
/// element `offset` (rows, columns) from where the output element's lattice position lands in
/// the input.
#[derive(Clone, Copy, Debug)]
struct Tap {
    weight: usize,
    offset: [i64; 2],
}

/// The forward op's taps: tap `(p, q)` of output `(i, j)` reads x at
/// `(i * sh + p * dh - top, j * sw + q * dw - left)`.
fn forward_taps(a: &ConvAttrs, kernel: [usize; 2]) -> Vec<Tap> {
    let offset = |k: usize, axis: usize| (k * a.dilation[axis]) as i64 - a.pad[2 * axis] as i64;
    (0..kernel[0])
        .flat_map(|p| {
            (0..kernel[1]).map(move |q| Tap {
                weight: p * kernel[1] + q,
                offset: [offset(p, 0), offset(q, 1)],
            })
        })
        .collect()
}

/// The dx elements of phase `(ρ, σ)`, rows `ρ + sh * k` and columns `σ + sw * l`. Forward tap
/// `(p, q)` of dy row `i` reads x row `i * sh + p * dh - top`, which is `ρ + sh * k` for
/// `i = k + (ρ + top - p * dh) / sh` when that division is exact, and for no `i` otherwise:
/// the phase's taps are those whose divisions are exact on both axes.
fn input_grad_phase(a: &ConvAttrs, g: &Geometry, phase: [usize; 2]) -> Lattice {
    let offset = |k: usize, axis: usize| {
        let reach = (phase[axis] + a.pad[2 * axis]) as i64 - (k * a.dilation[axis]) as i64;
        let stride = a.stride[axis] as i64;
        (reach.rem_euclid(stride) == 0).then(|| reach.div_euclid(stride))
    };
    let mut taps = Vec::new();
    for p in 0..g.kernel[0] {
        for q in 0..g.kernel[1] {
            if let (Some(row), Some(column)) = (offset(p, 0), offset(q, 1)) {
                taps.push(Tap {
                    weight: p * g.kernel[1] + q,
                    offset: [row, column],
                });
            }
        }
    }
    Lattice {
        first: phase,
        count: [0, 1].map(|axis| (g.x[axis] - phase[axis]).div_ceil(a.stride[axis])),
        taps,
    }
}

/// Output elements `(first[0] + step[0] * k, first[1] + step[1] * l)` for `k < count[0]` and
/// `l < count[1]` (`step` is the `Gather`'s), each the sum over its taps that land inside the
/// input.
struct Lattice {
    first: [usize; 2],
    count: [usize; 2],
    taps: Vec<Tap>,
}

/// A kernel computing each output plane as sums of weights times input elements: lattice
/// element `(k, l)` sums `w[tap.weight] * in[k * in_stride[0] + tap.offset[0],
/// l * in_stride[1] + tap.offset[1]]` over its taps and over `sources` consecutive input planes
/// (each with its own kernel), in that order, sources outermost.
struct Gather {
    /// Output planes, each a task or a few (row blocks).
    planes: usize,
    /// Output and input planes' (rows, columns).
    out_extent: [usize; 2],
    in_extent: [usize; 2],
    /// Input planes per image.
    in_channels: usize,
    /// Output elements from one lattice position to the next.
    out_step: [usize; 2],
    /// Input elements from one lattice position to the next.
    in_stride: [usize; 2],
    sources: usize,
    /// Elements of each source's kernel: the distance from one to the next.
    kernel: usize,
    /// Together they cover each output plane exactly once.
    lattices: Vec<Lattice>,
}

/// Builds a gather kernel reading `slots` `[input, weights, output]`. `locate(plane)` gives
/// where output plane `plane`'s first source plane and kernel start (element indices); the
/// other sources follow each at one plane's and one kernel's distance.
fn emit_gather(
    sink: &mut KernelSink,
    g: &Gather,
    (source, weights): (&Source, Slot),
    (result, epilogue): (&Operand, &Epilogue),
    locate: impl Fn(&mut Emitter, Value) -> [Value; 2],
) {
    // Tasks are row blocks of output planes, the same block of lattice rows in every lattice.
    let rows = g.lattices.iter().map(|l| l.count[0]).max().unwrap_or(0);
    if rows == 0 || g.planes == 0 {
        return;
    }
    let blocks = rows.min(TASKS.div_ceil(g.planes));
    let block_rows = rows.div_ceil(blocks);
    let blocks = rows.div_ceil(block_rows);
    let channels = result.shape[1];
    // Each channel's sums, block by block: `blocks` row blocks of each image's plane.
    let partials = epilogue.partials(sink, g.planes / channels * blocks, channels);
    let in_size = g.in_extent[0] * g.in_extent[1];
    let staging = Staging::of(source, g.in_channels, g.in_extent);
    let scratch = staging.as_ref().map_or(0, |_| in_size);
    sink.kernel(g.planes * blocks, scratch, |e| {
        let input = input_base(e, source);
        let weights = e.buffer(weights);
        let output = e.buffer(result.slot);
        let (begin, end) = (e.begin(), e.end());
        e.for_loop(begin, end, 1, |e, task| {
            let plane = e.b.ins().udiv_imm_s(task, blocks as i64);
            let block = e.b.ins().urem_imm_s(task, blocks as i64);
            let first_row = e.b.ins().imul_imm_s(block, block_rows as i64);
            let end_row = e.b.ins().iadd_imm_s(first_row, block_rows as i64);
            let [mut in_plane, kernel] = locate(e, plane);
            // The block's input rows, staged as its lattice rows reach them (one source plane:
            // the forward op's).
            let taps = g.lattices.iter().flat_map(|l| &l.taps).map(|t| t.offset[0]);
            let (top, reach) = (taps.clone().min().unwrap_or(0), taps.max().unwrap_or(0) + 1);
            let staged = staging.as_ref().map(|staging| {
                let x_plane = e.b.ins().udiv_imm_s(in_plane, in_size as i64);
                let first = e.b.ins().imul_imm_s(first_row, g.in_stride[0] as i64);
                let first = e.b.ins().iadd_imm_s(first, top);
                staging.start(e, x_plane, first)
            });
            if staged.is_some() {
                in_plane = e.int(0);
            }
            let out_size = (g.out_extent[0] * g.out_extent[1]) as i64;
            let out_plane = e.b.ins().imul_imm_s(plane, out_size);
            let bases = Bases {
                input,
                weights,
                output,
                in_plane,
                kernel,
                out_plane,
            };
            for lattice in &g.lattices {
                let [row_runs, column_runs] = [0, 1].map(|axis| {
                    let (count, extent) = (lattice.count[axis], g.in_extent[axis]);
                    runs(count, extent, g.in_stride[axis], &lattice.taps, axis)
                });
                for rows in &row_runs {
                    let start = e.int(rows.start as i64);
                    let lo = e.b.ins().smax(first_row, start);
                    let stop = e.int(rows.end as i64);
                    let hi = e.b.ins().smin(end_row, stop);
                    // Border rows are a few per plane: no unrolled code for them.
                    let unroll = if rows.valid.iter().all(|&v| v) {
                        UNROLL
                    } else {
                        1
                    };
                    e.for_loop(lo, hi, 1, |e, k| {
                        if let Some(staged) = &staged {
                            let end = e.b.ins().imul_imm_s(k, g.in_stride[0] as i64);
                            let end = e.b.ins().iadd_imm_s(end, reach);
                            staged.up_to(e, end);
                        }
                        let row = Row {
                            k,
                            valid: &rows.valid,
                            unroll,
                        };
                        gather_row(e, g, lattice, &bases, &row, &column_runs);
                    });
                }
            }
            if epilogue.is_none() {
                return;
            }
            // The block's rows of the plane, just written, through the epilogue in place: the
            // lattices' rows `first_row..end_row` are output rows `step * first_row` on.
            let [height, width] = g.out_extent.map(|v| v as i64);
            let lo = e.b.ins().imul_imm_s(first_row, g.out_step[0] as i64);
            let hi = e.b.ins().imul_imm_s(end_row, g.out_step[0] as i64);
            let hi = e.min_imm(hi, height);
            let first = e.b.ins().imul_imm_s(lo, width);
            let rows = e.b.ins().isub(hi, lo);
            let floats = e.b.ins().imul_imm_s(rows, width);
            let image = e.b.ins().udiv_imm_s(plane, channels as i64);
            let channel = e.b.ins().urem_imm_s(plane, channels as i64);
            let start = e.b.ins().iadd(out_plane, first);
            let start = e.at(output, start);
            let images = e.b.ins().imul_imm_s(image, blocks as i64);
            let index = e.b.ins().iadd(images, block);
            let one = e.int(1);
            gemm::epilogue_in_place(
                e,
                (epilogue, partials.as_ref()),
                (start, 0),
                [one, floats],
                [image, channel, first],
                index,
            );
        });
    });
    if let Some(partials) = partials {
        partials.add_up(sink, result);
    }
}

/// Where a gather task reads and writes: buffer addresses, and the element indices of its
/// first source plane, first kernel and output plane.
struct Bases {
    input: Value,
    weights: Value,
    output: Value,
    in_plane: Value,
    kernel: Value,
    out_plane: Value,
}

/// A lattice row to gather: its index, which taps stay inside the input along rows, and the
/// f32x4 steps per unrolled iteration along it.
struct Row<'r> {
    k: Value,
    valid: &'r [bool],
    unroll: usize,
}

/// Lattice row `row.k`: every column run as f32x4 steps and a scalar tail.
fn gather_row(
    e: &mut Emitter,
    g: &Gather,
    lattice: &Lattice,
    bases: &Bases,
    row: &Row,
    column_runs: &[Run],
) {
    let k = row.k;
    let out_row =
        e.b.ins()
            .imul_imm_s(k, (g.out_step[0] * g.out_extent[1]) as i64);
    let first = (lattice.first[0] * g.out_extent[1] + lattice.first[1]) as i64;
    let out_row = e.b.ins().iadd_imm_s(out_row, first);
    let out_row = e.b.ins().iadd(bases.out_plane, out_row);
    // Each tap's input row, relative to the source plane.
    let zero = e.int(0);
    let in_rows: Vec<Value> = lattice
        .taps
        .iter()
        .map(|tap| input_row(e, zero, k, g.in_stride[0], tap, g.in_extent[1]))
        .collect();
    for columns in column_runs {
        let live: Vec<usize> = (0..lattice.taps.len())
            .filter(|&t| row.valid[t] && columns.valid[t])
            .collect();
        let (lo, hi) = (columns.start as i64, columns.end as i64);
        e.vector_range(lo, hi, row.unroll, |e, l, ty| {
            let sum = for_each_source(e, g, bases, ty, |e, mut sum, plane, kernel| {
                for &t in &live {
                    let tap = lattice.taps[t];
                    let in_row = e.b.ins().iadd(plane, in_rows[t]);
                    let index = input_index(e, in_row, l, g.in_stride[1]);
                    let v = load_lanes(e, ty, bases.input, index, tap.offset[1], g.in_stride[1]);
                    let w = weight(e, ty, bases.weights, kernel, tap.weight);
                    let product = e.b.ins().fmul(w, v);
                    sum = Some(add(e, sum, product));
                }
                sum
            });
            let sum = sum.unwrap_or_else(|| e.constant(ty, 0.0));
            let step = e.b.ins().imul_imm_s(l, g.out_step[1] as i64);
            let index = e.b.ins().iadd(out_row, step);
            store_lanes(e, ty, sum, bases.output, index, g.out_step[1]);
        });
    }
}

/// Folds `add_terms(e, sum, input plane, kernel)` over the sources, from no sum at all: inline
/// for one source, else as a loop from zero. `None` is an empty sum.
fn for_each_source(
    e: &mut Emitter,
    g: &Gather,
    bases: &Bases,
    ty: Type,
    add_terms: impl Fn(&mut Emitter, Option<Value>, Value, Value) -> Option<Value>,
) -> Option<Value> {
    if g.sources == 1 {
        return add_terms(e, None, bases.in_plane, bases.kernel);
    }
    let zero = e.constant(ty, 0.0);
    let sum = e.variable(ty, zero);
    let in_plane = (g.in_extent[0] * g.in_extent[1]) as i64;
    e.for_range(0, g.sources as i64, |e, m| {
        let plane = e.b.ins().imul_imm_s(m, in_plane);
        let plane = e.b.ins().iadd(bases.in_plane, plane);
        let kernel = e.b.ins().imul_imm_s(m, g.kernel as i64);
        let kernel = e.b.ins().iadd(bases.kernel, kernel);
        let before = e.get(sum);
        let after = add_terms(e, Some(before), plane, kernel).unwrap_or(before);
        e.set(sum, after);
    });
    Some(e.get(sum))
}

/// `sum + term`, or `term` where there is no sum yet. Products are added with their own
/// rounding rather than fused: Cranelift's `fma` overwrites a multiplicand, which costs a copy
/// of each weight, and elaborates every load of a chain before its first `fma`, which runs out
/// of registers; `fadd(sum, fmul(w, x))` places each load just before its product.
fn add(e: &mut Emitter, sum: Option<Value>, term: Value) -> Value {
    match sum {
        Some(sum) => e.b.ins().fadd(sum, term),
        None => term,
    }
}

/// Kernel element `tap` of the kernel at `kernel` in every lane of `ty`. The scalar is lane 0
/// of the vector (no instruction on x86-64), so that the f32x4 loop and its scalar tail use
/// one loop-invariant register per weight.
fn weight(e: &mut Emitter, ty: Type, weights: Value, kernel: Value, tap: usize) -> Value {
    let w = e.load(F32, Emitter::frozen(), weights, kernel, tap as i64);
    let lanes = e.splat(F32X4, w);
    if ty == F32 {
        e.b.ins().extractlane(lanes, 0)
    } else {
        lanes
    }
}

/// The element index of input row `k * stride + tap.offset[0]` of the plane that starts at
/// element `plane`, whose rows are `width` long.
fn input_row(
    e: &mut Emitter,
    plane: Value,
    k: Value,
    stride: usize,
    tap: &Tap,
    width: usize,
) -> Value {
    let row = e.b.ins().imul_imm_s(k, stride as i64);
    let row = e.b.ins().iadd_imm_s(row, tap.offset[0]);
    let row = e.b.ins().imul_imm_s(row, width as i64);
    e.b.ins().iadd(plane, row)
}

/// The element index of lattice column `l` in the input row at `row` (the tap's column offset
/// left out, to be added as a constant).
fn input_index(e: &mut Emitter, row: Value, l: Value, stride: usize) -> Value {
    let column = e.b.ins().imul_imm_s(l, stride as i64);
    e.b.ins().iadd(row, column)
}

/// A run of positions `start..end` along one axis of a lattice where the same taps land inside
/// the input: `valid[t]` for tap `t`.
struct Run {
    start: usize,
    end: usize,
    valid: Vec<bool>,
}

/// Splits `0..count` into runs of positions `k` where the same taps are inside the input:
/// tap `t` is when `0 <= k * stride + taps[t].offset[axis] < extent`. Each tap is inside on an
/// interval of positions, so there are at most `2 * taps + 1` runs.
fn runs(count: usize, extent: usize, stride: usize, taps: &[Tap], axis: usize) -> Vec<Run> {
    let valid = |k: usize| -> Vec<bool> {
        taps.iter()
            .map(|tap| {
                let at = (k * stride) as i64 + tap.offset[axis];
                (0..extent as i64).contains(&at)
            })
            .collect()
    };
    let mut runs: Vec<Run> = Vec::new();
    for k in 0..count {
        let here = valid(k);
        match runs.last_mut() {
            Some(run) if run.valid == here => run.end = k + 1,
            _ => runs.push(Run {
                start: k,
                end: k + 1,
                valid: here,
            }),
        }
    }
    runs
}

/// Loads `ty` (F32, or F32X4 for four lanes `stride` apart) from element `index + offset` of
/// `base`, reading no element past the last lane.
fn load_lanes(
    e: &mut Emitter,
    ty: Type,
    base: Value,
    index: Value,
    offset: i64,
    stride: usize,
) -> Value {
    let flags = Emitter::frozen();
    match (ty == F32, stride) {
        (true, _) | (false, 1) => e.load(ty, flags, base, index, offset),
        (false, 2) => {
            // Elements 0 and 2 of the vector at `offset`, 1 and 3 of the one at `offset + 3`.
            let low = e.load(F32X4, flags, base, index, offset);
            let high = e.load(F32X4, flags, base, index, offset + 3);
            let lanes = [0u8, 2, 5, 7];
            let bytes: Vec<u8> = lanes
                .iter()
                .flat_map(|&l| (0..4).map(move |b| 4 * l + b))
                .collect();
            let mask = e.b.func.dfg.immediates.push(ConstantData::from(bytes));
            // Cranelift shuffles bytes; this pattern lowers to one `shufps`.
            let little = MemFlagsData::new().with_endianness(Endianness::Little);
            let [low, high] = [low, high].map(|v| e.b.ins().bitcast(I8X16, little, v));
            let evens = e.b.ins().shuffle(low, high, mask);
            e.b.ins().bitcast(F32X4, little, evens)
        }
        (false, _) => {
            let first = e.load(F32, flags, base, index, offset);
            let mut vector = e.b.ins().scalar_to_vector(F32X4, first);
            for lane in 1..LANES {
                let x = e.load(F32, flags, base, index, offset + lane * stride as i64);
                vector = e.b.ins().insertlane(vector, x, lane as u8);
            }
            vector
        }
    }
}

/// Stores `value` (F32, or F32X4 to four elements `step` apart) at element `index` of `base`.
fn store_lanes(e: &mut Emitter, ty: Type, value: Value, base: Value, index: Value, step: usize) {
    let flags = Emitter::mutable();
    if ty == F32 || step == 1 {
        e.store(flags, value, base, index, 0);
        return;
    }
    for lane in 0..LANES {
        let x = e.b.ins().extractlane(value, lane as u8);
        e.store(flags, x, base, index, lane * step as i64);
    }
}

/// An f32x4: `x` itself, or a scalar in lane 0 with zeros beside it, so that a scalar tail
/// step adds to lane 0 of a vector accumulator.
fn widen(e: &mut Emitter, x: Value) -> Value {
    if e.b.func.dfg.value_type(x) == F32 {
        e.b.ins().scalar_to_vector(F32X4, x)
    } else {
        x
    }
}

/// `(x0 + x1) + (x2 + x3)`.
fn horizontal_sum(e: &mut Emitter, x: Value) -> Value {
    let lanes: Vec<Value> = (0..LANES as u8)
        .map(|l| e.b.ins().extractlane(x, l))
        .collect();
    let low = e.b.ins().fadd(lanes[0], lanes[1]);
    let high = e.b.ins().fadd(lanes[2], lanes[3]);
    e.b.ins().fadd(low, high)
}
