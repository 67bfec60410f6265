//! Code generation: an IR graph becomes native code with Cranelift, compiled in-process (JIT,
//! `compile`) or into an object file for a standalone executable (`generate` into any
//! Cranelift module, as `aot` does), and run on the runtime's thread pool.
//!
//! Every value has a buffer the memory plan (`passes::memory`) chose, allocated once when the
//! program is built: values whose lives do not overlap share one, and a reshape shares its
//! input's. Each op becomes one
//! or more kernels, built by its primitive's code-generation rule (`OpKind::emit`), each split
//! into tasks the pool runs in parallel. A generated `step` function launches the kernels in
//! graph order through `netc_parallel_for`, so the host calls one function per training step.
//! What memory the code expects is a `Layout`, which the runtime's `Program` allocates.
//!
//! The table that kernels read their buffers from holds, in slot 0, the microkernel that
//! contractions call, chosen at run time from the CPU's features (or forced).

pub mod depthwise;
pub mod emit;
pub mod gemm;
pub mod math;
pub mod prologue;
pub mod strided;

use crate::init::tensor_inits;
use crate::interp::EvalContext;
use crate::ir::ops::loss;
use crate::ir::{Graph, Op, Shape, ValueId};
use crate::passes::group_launches::{self, Launch};
use crate::passes::{self, memory, Pass, PassOptions};
use crate::pipeline::Compiled;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::Function;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, Signature, UserFuncName};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc};
use emit::{Emitter, Libcall, Slot, I64};
use netc_runtime::init::TensorInit;
use netc_runtime::microkernel::MicrokernelKind;
use netc_runtime::program::{self, Binding, KernelOrigin, Layout, OpOutput, SlotView, StepFn};
use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to build a program.
#[derive(Clone, Debug)]
pub struct CodegenOptions {
    /// Threads in the pool, the caller's included.
    pub threads: usize,
    pub microkernel: MicrokernelKind,
    /// Seeds dropout masks, as `EvalContext::seed` does in the interpreter.
    pub seed: u64,
    /// The passes run on the graph before its code is generated.
    pub passes: PassOptions,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions {
            threads: netc_runtime::pool::Pool::default_threads(),
            microkernel: MicrokernelKind::best(),
            seed: EvalContext::default().seed,
            passes: PassOptions::default(),
        }
    }
}

/// A tensor a kernel reads or writes: where it lives, and its shape.
#[derive(Clone, Debug)]
pub struct Operand {
    pub slot: Slot,
    pub shape: Shape,
}

impl Operand {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a primitive's code-generation rule builds kernels with.
pub struct KernelSink<'m> {
    module: &'m mut dyn Module,
    builder_context: FunctionBuilderContext,
    /// Functions built and not yet compiled.
    built: Vec<(FuncId, Function)>,
    libcalls: HashMap<Libcall, (FuncId, Signature)>,
    kernels: Vec<(FuncId, i64)>,
    /// The op each kernel belongs to.
    kernel_origins: Vec<KernelOrigin>,
    /// The op being built.
    origin: KernelOrigin,
    /// Floats of extra buffers asked for, in slot order after the values' slots.
    workspaces: Vec<usize>,
    first_workspace_slot: usize,
    /// Whether ops share workspaces (the first one each op asks for is the same buffer, and
    /// so on), which they may since none outlives its op.
    share_workspaces: bool,
    /// Workspaces the op being built has asked for.
    op_workspaces: usize,
    /// The most scratch any kernel asked for, per thread.
    scratch_floats: usize,
    seed: u64,
}

impl KernelSink<'_> {
    /// The seed of dropout masks.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Starts building the kernels of an op (or of ops built as one), named for profiles.
    fn begin_op(&mut self, op: &str, layer: Option<&str>) {
        self.op_workspaces = 0;
        self.origin = KernelOrigin {
            op: op.to_string(),
            layer: layer.unwrap_or_default().to_string(),
        };
    }

    /// A buffer of `floats` floats for the op's kernels (packed weights, partial sums). Its
    /// contents do not survive from one op to the next.
    pub fn workspace(&mut self, floats: usize) -> Slot {
        let index = if self.share_workspaces {
            self.op_workspaces
        } else {
            self.workspaces.len()
        };
        self.op_workspaces += 1;
        match self.workspaces.get_mut(index) {
            Some(size) => *size = (*size).max(floats),
            None => self.workspaces.push(floats),
        }
        Slot(self.first_workspace_slot + index)
    }

    /// Builds a kernel of `tasks` tasks, each thread needing `scratch_floats` of scratch, and
    /// appends it to the program: kernels run in the order they are built. A kernel of no
    /// tasks is left out.
    pub fn kernel(&mut self, tasks: usize, scratch_floats: usize, body: impl FnOnce(&mut Emitter)) {
        if tasks == 0 {
            return;
        }
        let id = self.define(4, body);
        self.scratch_floats = self.scratch_floats.max(scratch_floats);
        self.kernels.push((id, tasks as i64));
        self.kernel_origins.push(self.origin.clone());
    }

    /// Defines a function of `params` i64 parameters without scheduling it: kernels have four;
    /// the generated microkernel, called through a pointer, has eight.
    pub(crate) fn define(&mut self, params: usize, body: impl FnOnce(&mut Emitter)) -> FuncId {
        let mut signature = self.module.make_signature();
        signature.params = vec![AbiParam::new(I64); params];
        let config = self.module.isa().frontend_config();
        self.define_with(signature, |b, libcalls| {
            let mut emitter = Emitter::new(b, libcalls);
            body(&mut emitter);
            emitter.finish(config);
        })
    }

    /// Defines a local function of this signature, built by `build`.
    pub(crate) fn define_with(
        &mut self,
        signature: Signature,
        build: impl FnOnce(FunctionBuilder, &HashMap<Libcall, (FuncId, Signature)>),
    ) -> FuncId {
        // Named after the op, so that profilers (perf reads the JIT's map) show what runs.
        let count = self.module.declarations().get_functions().count();
        let name: String = format!("{}.{}.{count}", self.origin.op, self.origin.layer)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &signature)
            .unwrap_or_else(|e| panic!("internal error: declaring {name}: {e}"));
        let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), signature);
        build(
            FunctionBuilder::new(&mut func, &mut self.builder_context),
            &self.libcalls,
        );
        self.built.push((id, func));
        id
    }

    /// Compiles every function built, on as many threads as the machine has (Cranelift
    /// compiles one function at a time), and defines them in the module.
    fn compile_built(&mut self) {
        let isa = self.module.isa();
        let count = self.built.len();
        let queue = Mutex::new(std::mem::take(&mut self.built).into_iter().enumerate());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut compiled: Vec<(usize, FuncId, CompiledFunction)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.min(count))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let next = queue.lock().expect("no worker panics holding it").next();
                            let Some((index, (id, func))) = next else {
                                return done;
                            };
                            done.push((index, id, compile_function(isa, id, func)));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join()
                        .expect("internal error: a compiling thread panicked")
                })
                .collect()
        });
        // Defined in the order built, so the module lays the code out the same every time.
        compiled.sort_unstable_by_key(|&(index, _, _)| index);
        for (_, id, code) in compiled {
            self.module
                .define_function_bytes(id, code.alignment, &code.bytes, &code.relocs)
                .unwrap_or_else(|e| panic!("internal error: defining a function: {e}"));
        }
    }
}

/// A function's machine code, ready for the module.
struct CompiledFunction {
    alignment: u64,
    bytes: Vec<u8>,
    relocs: Vec<ModuleReloc>,
}

fn compile_function(isa: &dyn TargetIsa, id: FuncId, func: Function) -> CompiledFunction {
    let mut context = Context::for_function(func);
    if let Err(e) = context.compile(isa, &mut ControlPlane::default()) {
        panic!(
            "internal error: Cranelift rejected {id}: {:?}\n{}",
            e.inner,
            e.func.display()
        );
    }
    let code = context.compiled_code().expect("compiled above");
    CompiledFunction {
        alignment: u64::from(code.buffer.alignment),
        bytes: code.code_buffer().to_vec(),
        relocs: code
            .buffer
            .relocs()
            .iter()
            .map(|reloc| ModuleReloc::from_mach_reloc(reloc, &context.func, id))
            .collect(),
    }
}

/// Why a graph could not be compiled. Every graph netc builds compiles, so these are about
/// the machine: memory, or a forced microkernel this CPU lacks.
#[derive(Debug)]
pub enum CodegenError {
    MicrokernelUnavailable(MicrokernelKind),
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodegenError::MicrokernelUnavailable(kind) => write!(
                f,
                "this CPU cannot run the {} microkernel; use --microkernel {} (the best it has)",
                kind.name(),
                MicrokernelKind::best().name()
            ),
        }
    }
}

impl std::error::Error for CodegenError {}

/// One graph's code in a module, and the memory it expects.
pub struct Generated {
    pub layout: Layout,
    /// `step(table, pool)`.
    pub step: FuncId,
    /// The Cranelift-generated microkernel, for CPUs without a native one.
    pub microkernel: FuncId,
    /// The graph the code computes: the one given, after the passes.
    pub graph: Graph,
    /// Each value's slot.
    pub slots: Vec<Slot>,
}

/// Defines `graph`'s kernels and step function in `module`, after the passes `passes`
/// enables. `initial` describes its parameters and state (empty for a bare graph); `seed` keys
/// dropout's masks.
pub fn generate(
    graph: &Graph,
    initial: Vec<TensorInit>,
    module: &mut dyn Module,
    seed: u64,
    passes: &PassOptions,
) -> Generated {
    let graph = passes::run(graph, passes);
    let graph = &graph;
    let plan = memory::plan(
        graph,
        passes.enabled(Pass::ReuseBuffers),
        passes.enabled(Pass::UpdateInPlace),
        passes.keep_gradients,
    );
    // Slot 0 is the microkernel; then the plan's buffers; then workspaces.
    let slots: Vec<Slot> = plan.buffer_of.iter().map(|&b| Slot(b + 1)).collect();
    let mut sizes = vec![0usize];
    sizes.extend(&plan.buffer_floats);

    let mut libcalls = HashMap::new();
    for call in Libcall::ALL {
        let mut signature = module.make_signature();
        signature.params.push(AbiParam::new(types::F32));
        signature.returns.push(AbiParam::new(types::F32));
        let id = module
            .declare_function(call.symbol(), Linkage::Import, &signature)
            .unwrap_or_else(|e| panic!("internal error: declaring {}: {e}", call.symbol()));
        libcalls.insert(call, (id, signature));
    }
    let mut sink = KernelSink {
        module,
        builder_context: FunctionBuilderContext::new(),
        built: Vec::new(),
        libcalls,
        kernels: Vec::new(),
        kernel_origins: Vec::new(),
        origin: KernelOrigin {
            op: String::new(),
            layer: String::new(),
        },
        workspaces: Vec::new(),
        first_workspace_slot: sizes.len(),
        share_workspaces: passes.enabled(Pass::ReuseBuffers),
        op_workspaces: 0,
        scratch_floats: 0,
        seed,
    };
    let launches = if passes.enabled(Pass::GroupLaunches) {
        group_launches::launches(graph, &plan)
    } else {
        (0..graph.ops.len()).map(Launch::Op).collect()
    };
    for launch in &launches {
        match launch {
            Launch::Op(index) => emit_op(&mut sink, graph, &slots, &graph.ops[*index]),
            Launch::Group(segments) => emit_group(&mut sink, graph, &slots, segments),
            Launch::LossWithGradient { loss, gradient } => {
                let [loss, gradient] = [*loss, *gradient].map(|i| &graph.ops[i]);
                sink.begin_op("softmax_cross_entropy_with_grad", loss.layer.as_deref());
                let (loss, gradient) = (
                    operands(graph, &slots, loss),
                    operands(graph, &slots, gradient),
                );
                loss::emit_softmax_cross_entropy_with_grad(
                    &mut sink,
                    (&loss.0, &loss.1),
                    (&gradient.0, &gradient.1),
                );
            }
        }
    }
    let microkernel = gemm::define_microkernel(&mut sink);
    let kernels = std::mem::take(&mut sink.kernels);
    sizes.extend(&sink.workspaces);
    let scratch_floats = sink.scratch_floats;
    let step = define_step(&mut sink, &kernels);
    sink.compile_built();

    fn binding<K>(
        graph: &Graph,
        slots: &[Slot],
        name: &str,
        kind: K,
        value: ValueId,
    ) -> Binding<K> {
        Binding {
            name: name.to_string(),
            kind,
            slot: slots[value.0].0,
            shape: graph.shape(value).clone(),
        }
    }
    let intact = memory::intact_at_end(graph, &plan);
    let layout = Layout {
        buffer_floats: sizes,
        views: plan
            .inside
            .iter()
            .enumerate()
            .filter_map(|(buffer, inside)| {
                inside.map(|(arena, offset)| SlotView {
                    slot: buffer + 1,
                    of: arena + 1,
                    offset,
                })
            })
            .collect(),
        inputs: graph
            .inputs()
            .map(|(id, input)| binding(graph, &slots, &input.name, input.kind, id))
            .collect(),
        // A gradient another value took the buffer of (see `memory::host_reads`) is not there
        // to read after the step.
        outputs: graph
            .outputs
            .iter()
            .filter(|output| intact[output.value.0])
            .map(|output| binding(graph, &slots, &output.name, output.role, output.value))
            .collect(),
        op_outputs: graph
            .ops
            .iter()
            .filter(|op| intact[op.output.0])
            .map(|op| OpOutput {
                layer: op
                    .layer
                    .clone()
                    .unwrap_or_else(|| op.kind.name().to_string()),
                slot: slots[op.output.0].0,
                len: graph.shape(op.output).iter().product(),
            })
            .collect(),
        initial,
        scratch_floats,
        kernels: std::mem::take(&mut sink.kernel_origins),
    };
    Generated {
        layout,
        step,
        microkernel,
        graph: graph.clone(),
        slots,
    }
}

/// A graph compiled in-process, its memory allocated, ready to run.
pub struct Program {
    host: program::Program,
    graph: Graph,
    /// Each value's slot.
    slots: Vec<Slot>,
    /// The time to run the passes and generate and compile the code (not to allocate the
    /// program's memory).
    pub compile_time: Duration,
    pub microkernel: MicrokernelKind,
}

/// Compiles `graph`, after the passes `options` enables, into a runnable program.
pub fn compile(graph: &Graph, options: &CodegenOptions) -> Result<Program, CodegenError> {
    compile_with(graph, Vec::new(), options)
}

/// Compiles a network's graph into a runnable program that knows how its parameters and
/// state start (`program::Program::initialize`).
pub fn compile_network(
    compiled: &Compiled,
    options: &CodegenOptions,
) -> Result<Program, CodegenError> {
    compile_with(&compiled.graph, tensor_inits(compiled), options)
}

fn compile_with(
    graph: &Graph,
    initial: Vec<TensorInit>,
    options: &CodegenOptions,
) -> Result<Program, CodegenError> {
    let started = Instant::now();
    if !options.microkernel.available() {
        return Err(CodegenError::MicrokernelUnavailable(options.microkernel));
    }

    let mut jit = JITBuilder::with_isa(host_isa(), cranelift_module::default_libcall_names());
    for call in Libcall::ALL {
        jit.symbol(call.symbol(), libcall_address(call));
    }
    jit.symbol(
        "netc_parallel_for",
        netc_runtime::pool::netc_parallel_for as *const u8,
    );
    for (name, address) in cranelift_libcalls() {
        jit.symbol(name, address);
    }
    let mut module = JITModule::new(jit);
    let generated = generate(graph, initial, &mut module, options.seed, &options.passes);
    module
        .finalize_definitions()
        .unwrap_or_else(|e| panic!("internal error: linking generated code: {e}"));
    let microkernel = match options.microkernel.native() {
        Some(kernel) => kernel as *const u8,
        None => module.get_finalized_function(generated.microkernel),
    };
    // SAFETY: the function was defined with `StepFn`'s signature by `define_step`.
    let step = unsafe {
        std::mem::transmute::<*const u8, StepFn>(module.get_finalized_function(generated.step))
    };
    let compile_time = started.elapsed();
    // SAFETY: `step` and the microkernel are the code generated for this layout, and the
    // module that holds them lives in the program.
    let host = unsafe {
        program::Program::new(
            generated.layout,
            step,
            microkernel,
            options.threads,
            Some(Box::new(module)),
        )
    };
    Ok(Program {
        host,
        graph: generated.graph,
        slots: generated.slots,
        compile_time,
        microkernel: options.microkernel,
    })
}

/// Cranelift's settings for generated code: optimised for speed; position-independent where
/// the code goes into an object for a default (PIE) link. Cranelift's IR verifier runs in debug
/// builds (the tests) only: it costs a tenth of the compile time, and what it checks is how
/// netc builds functions, not the user's input.
pub fn flags(position_independent: bool) -> settings::Flags {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, name: &str, value: &str| {
        flags
            .set(name, value)
            .unwrap_or_else(|e| panic!("internal error: Cranelift setting {name}: {e}"))
    };
    set(&mut flags, "opt_level", "speed");
    let verify = if cfg!(debug_assertions) {
        "true"
    } else {
        "false"
    };
    set(&mut flags, "enable_verifier", verify);
    if position_independent {
        set(&mut flags, "is_pic", "true");
    }
    settings::Flags::new(flags)
}

/// Cranelift for this CPU (vector extensions detected).
fn host_isa() -> Arc<dyn TargetIsa> {
    let isa = cranelift_native::builder()
        .unwrap_or_else(|e| panic!("internal error: Cranelift does not support this machine: {e}"));
    isa.finish(flags(false))
        .unwrap_or_else(|e| panic!("internal error: building Cranelift's target: {e}"))
}

fn operand(graph: &Graph, slots: &[Slot], value: ValueId) -> Operand {
    Operand {
        slot: slots[value.0],
        shape: graph.shape(value).clone(),
    }
}

/// Builds `op`'s kernels, in order after those built before.
fn emit_op(sink: &mut KernelSink, graph: &Graph, slots: &[Slot], op: &Op) {
    if memory::view_of(graph, op).is_some() {
        return;
    }
    sink.begin_op(op.kind.name(), op.layer.as_deref());
    let (inputs, output) = operands(graph, slots, op);
    op.kind.emit(sink, &inputs, &output);
}

/// What `op` reads and writes.
fn operands(graph: &Graph, slots: &[Slot], op: &Op) -> (Vec<Operand>, Operand) {
    let inputs = op.inputs.iter().map(|&v| operand(graph, slots, v));
    (inputs.collect(), operand(graph, slots, op.output))
}

/// The most floats a launch group's ops may write for it to run as one task.
const SERIAL_GROUP_FLOATS: usize = 4096;

/// Builds the kernels of a launch group's ops, then one kernel that runs them all: its tasks
/// are the segments' tasks one after the other (or, where the ops write little, one task that
/// runs them all), and a call for some of a segment's tasks runs those tasks of each of its ops
/// in turn.
fn emit_group(sink: &mut KernelSink, graph: &Graph, slots: &[Slot], group: &[Vec<usize>]) {
    let mut segments: Vec<(Vec<FuncId>, i64)> = Vec::new();
    for segment in group {
        let mut kernels: Vec<FuncId> = Vec::new();
        let mut tasks = None;
        for &index in segment {
            let before = sink.kernels.len();
            emit_op(sink, graph, slots, &graph.ops[index]);
            sink.kernel_origins.truncate(before);
            let built: Vec<(FuncId, i64)> = sink.kernels.drain(before..).collect();
            // The grouping relies on the task of an element being the same in every op of a
            // segment, which holds for the strided kernels pointwise ops build.
            match built[..] {
                [(kernel, count)] if tasks.is_none_or(|t| t == count) => {
                    tasks = Some(count);
                    kernels.push(kernel);
                }
                _ => panic!(
                    "internal error: grouped `{}` built {built:?}, not one kernel of {tasks:?} tasks",
                    graph.ops[index].kind.name()
                ),
            }
        }
        segments.push((kernels, tasks.expect("a segment has ops")));
    }
    let ops = format!("{} ops", group.iter().map(Vec::len).sum::<usize>());
    sink.begin_op("group", Some(&ops));
    let total: i64 = segments.iter().map(|(_, tasks)| tasks).sum();
    let written: usize = group
        .iter()
        .flatten()
        .map(|&index| {
            graph
                .shape(graph.ops[index].output)
                .iter()
                .product::<usize>()
        })
        .sum();
    // A group of small ops (batch norm's per-channel arithmetic) runs as one task, on the
    // calling thread: waking the pool for it costs more than the work.
    let serial = written <= SERIAL_GROUP_FLOATS;
    sink.kernel(if serial { 1 } else { total as usize }, 0, |e| {
        let signature = e.b.func.signature.clone();
        let (table, scratch) = (e.table(), e.scratch());
        let (begin, end) = if serial {
            (e.int(0), e.int(total))
        } else {
            (e.begin(), e.end())
        };
        let mut first = 0;
        for (kernels, tasks) in &segments {
            let (from, to) = (e.int(first), e.int(first + tasks));
            let lo = e.b.ins().smax(begin, from);
            let hi = e.b.ins().smin(end, to);
            let overlaps = e.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
            e.if_else(
                overlaps,
                |e| {
                    let lo = e.b.ins().isub(lo, from);
                    let hi = e.b.ins().isub(hi, from);
                    for &kernel in kernels {
                        let callee = emit::import_function(e.b.func, kernel, &signature, true);
                        e.b.ins().call(callee, &[table, lo, hi, scratch]);
                    }
                },
                |_| {},
            );
            first += tasks;
        }
    });
}

/// `step(table, pool)`: every kernel in order, each through the pool.
fn define_step(sink: &mut KernelSink, kernels: &[(FuncId, i64)]) -> FuncId {
    let mut signature = sink.module.make_signature();
    signature.params = vec![AbiParam::new(I64); 2];
    let mut launch = sink.module.make_signature();
    launch.params = vec![AbiParam::new(I64); 4];
    let launcher = sink
        .module
        .declare_function("netc_parallel_for", Linkage::Import, &launch)
        .expect("internal error: netc_parallel_for declared twice");
    let config = sink.module.isa().frontend_config();
    let mut kernel_signature = sink.module.make_signature();
    kernel_signature.params = vec![AbiParam::new(I64); 4];
    sink.define_with(signature, |mut b, _| {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let (table, pool) = (b.block_params(entry)[0], b.block_params(entry)[1]);
        let launcher = emit::import_function(b.func, launcher, &launch, false);
        for &(kernel, tasks) in kernels {
            let kernel = emit::import_function(b.func, kernel, &kernel_signature, true);
            let address = b.ins().func_addr(I64, kernel);
            let tasks = b.ins().iconst(I64, tasks);
            b.ins().call(launcher, &[pool, address, table, tasks]);
        }
        b.ins().return_(&[]);
        b.finalize(config);
    })
}

/// What Cranelift's lowering may call for float instructions without a native encoding on
/// this CPU (`fma` without FMA, rounding without SSE4.1). The process may not link libm, so the
/// JIT gets them from here rather than from the dynamic linker.
fn cranelift_libcalls() -> [(&'static str, *const u8); 10] {
    extern "C" fn fmaf(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    extern "C" fn fma(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
    extern "C" fn ceilf(x: f32) -> f32 {
        x.ceil()
    }
    extern "C" fn ceil(x: f64) -> f64 {
        x.ceil()
    }
    extern "C" fn floorf(x: f32) -> f32 {
        x.floor()
    }
    extern "C" fn floor(x: f64) -> f64 {
        x.floor()
    }
    extern "C" fn truncf(x: f32) -> f32 {
        x.trunc()
    }
    extern "C" fn trunc(x: f64) -> f64 {
        x.trunc()
    }
    extern "C" fn nearbyintf(x: f32) -> f32 {
        x.round_ties_even()
    }
    extern "C" fn nearbyint(x: f64) -> f64 {
        x.round_ties_even()
    }
    [
        ("fmaf", fmaf as *const u8),
        ("fma", fma as *const u8),
        ("ceilf", ceilf as *const u8),
        ("ceil", ceil as *const u8),
        ("floorf", floorf as *const u8),
        ("floor", floor as *const u8),
        ("truncf", truncf as *const u8),
        ("trunc", trunc as *const u8),
        ("nearbyintf", nearbyintf as *const u8),
        ("nearbyint", nearbyint as *const u8),
    ]
}

fn libcall_address(call: Libcall) -> *const u8 {
    match call {
        Libcall::Log => netc_runtime::netc_logf as *const u8,
        Libcall::Tanh => netc_runtime::netc_tanhf as *const u8,
    }
}

impl Program {
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The runnable program, for the training driver.
    pub fn into_host(self) -> program::Program {
        self.host
    }

    /// The table slot of a value's buffer.
    pub fn slot_of(&self, value: ValueId) -> usize {
        self.slots[value.0].0
    }

    /// The memory of a value.
    pub fn value(&self, value: ValueId) -> &[f32] {
        self.host.slot(
            self.slots[value.0].0,
            self.graph.shape(value).iter().product(),
        )
    }
}

/// The runtime's program, with the graph alongside for tests that read any value.
impl Deref for Program {
    type Target = program::Program;

    fn deref(&self) -> &program::Program {
        &self.host
    }
}

impl DerefMut for Program {
    fn deref_mut(&mut self) -> &mut program::Program {
        &mut self.host
    }
}
