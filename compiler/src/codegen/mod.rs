//! Code generation: an IR graph becomes native code with Cranelift, compiled in-process (JIT)
//! and run on the runtime's thread pool.
//!
//! Every value gets its own buffer, allocated once when the program is built (memory planning
//! and buffer reuse are a later pass); a reshape shares its input's buffer. Each op becomes one
//! or more kernels, built by its primitive's code-generation rule (`OpKind::emit`), each split
//! into tasks the pool runs in parallel. A generated `step` function launches the kernels in
//! graph order through `netc_parallel_for`, so the host calls one function per training step.
//!
//! The table that kernels read their buffers from holds, in slot 0, the microkernel that
//! contractions call, chosen at run time from the CPU's features (or forced).

pub mod depthwise;
pub mod emit;
pub mod gemm;
pub mod math;
pub mod strided;

use crate::interp::EvalContext;
use crate::ir::{Definition, Graph, OpKind, OutputRole, Shape, ValueId};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, Signature, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use emit::{Emitter, Libcall, Slot, I64};
use netc_runtime::microkernel::MicrokernelKind;
use netc_runtime::pool::Pool;
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// How to build a program.
#[derive(Clone, Copy, Debug)]
pub struct CodegenOptions {
    /// Threads in the pool, the caller's included.
    pub threads: usize,
    pub microkernel: MicrokernelKind,
    /// Seeds dropout masks, as `EvalContext::seed` does in the interpreter.
    pub seed: u64,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            microkernel: MicrokernelKind::best(),
            seed: EvalContext::default().seed,
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
    module: &'m mut JITModule,
    context: Context,
    builder_context: FunctionBuilderContext,
    libcalls: HashMap<Libcall, (FuncId, Signature)>,
    kernels: Vec<(FuncId, i64)>,
    /// Floats of extra buffers asked for, in slot order after the values' slots.
    workspaces: Vec<usize>,
    first_workspace_slot: usize,
    /// The most scratch any kernel asked for, per thread.
    scratch_floats: usize,
    seed: u64,
}

impl KernelSink<'_> {
    /// The seed of dropout masks.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A buffer of `floats` floats for the op's kernels (packed weights, partial sums). Its
    /// contents do not survive from one op to the next.
    pub fn workspace(&mut self, floats: usize) -> Slot {
        self.workspaces.push(floats);
        Slot(self.first_workspace_slot + self.workspaces.len() - 1)
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
    }

    /// Defines a function of `params` i64 parameters without scheduling it: kernels have four;
    /// the generated microkernel, called through a pointer, has six.
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
        let name = format!("f{}", self.module.declarations().get_functions().count());
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &signature)
            .unwrap_or_else(|e| panic!("internal error: declaring {name}: {e}"));
        self.context.func.signature = signature;
        self.context.func.name = UserFuncName::user(0, id.as_u32());
        let builder = FunctionBuilder::new(&mut self.context.func, &mut self.builder_context);
        build(builder, &self.libcalls);
        if let Err(e) = self.module.define_function(id, &mut self.context) {
            panic!(
                "internal error: Cranelift rejected {name}: {e:?}\n{}",
                self.context.func.display()
            );
        }
        self.module.clear_context(&mut self.context);
        id
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

/// A 64-byte-aligned run of floats, zeroed.
struct Buffer(Vec<Align64>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([f32; 16]);

impl Buffer {
    fn new(floats: usize) -> Buffer {
        Buffer(vec![Align64([0.0; 16]); floats.div_ceil(16).max(1)])
    }

    fn pointer(&mut self) -> *mut f32 {
        self.0.as_mut_ptr() as *mut f32
    }
}

type StepFn = unsafe extern "C" fn(table: *const *mut f32, pool: *const Pool);

/// A compiled graph, its memory allocated, ready to run.
pub struct Program {
    graph: Graph,
    /// Keeps the generated code alive.
    _module: JITModule,
    /// The table's buffers; pointers into them are in `table`.
    _buffers: Vec<Buffer>,
    table: Vec<*mut f32>,
    /// Each value's slot.
    slots: Vec<Slot>,
    step: StepFn,
    pool: Pool,
    /// `(update output, its input)` pairs.
    updates: Vec<(ValueId, ValueId)>,
    /// Kernels launched per step.
    pub kernel_count: usize,
    /// The time to generate and compile the code.
    pub compile_time: Duration,
    pub microkernel: MicrokernelKind,
}

/// Compiles `graph` into a runnable program.
pub fn compile(graph: &Graph, options: &CodegenOptions) -> Result<Program, CodegenError> {
    let started = Instant::now();
    if !options.microkernel.available() {
        return Err(CodegenError::MicrokernelUnavailable(options.microkernel));
    }
    let isa = isa();
    let mut jit = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
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

    // Slot 0 is the microkernel; then one slot per value that owns memory; then workspaces.
    let mut slots = Vec::with_capacity(graph.values.len());
    let mut sizes = vec![0usize];
    for (index, value) in graph.values.iter().enumerate() {
        let alias = match &value.definition {
            Definition::Op(op) => match graph.ops[*op].kind {
                OpKind::Reshape(_) => Some(slots[graph.ops[*op].inputs[0].0]),
                _ => None,
            },
            Definition::Input(_) => None,
        };
        slots.push(alias.unwrap_or_else(|| {
            sizes.push(value.shape.iter().product());
            Slot(sizes.len() - 1)
        }));
        debug_assert_eq!(slots.len(), index + 1);
    }

    let mut libcalls = HashMap::new();
    for call in Libcall::ALL {
        let mut signature = module.make_signature();
        signature.params.push(AbiParam::new(types::F32));
        signature.returns.push(AbiParam::new(types::F32));
        let id = module
            .declare_function(call.symbol(), Linkage::Import, &signature)
            .expect("internal error: libcall declared twice");
        libcalls.insert(call, (id, signature));
    }
    let mut sink = KernelSink {
        context: module.make_context(),
        module: &mut module,
        builder_context: FunctionBuilderContext::new(),
        libcalls,
        kernels: Vec::new(),
        workspaces: Vec::new(),
        first_workspace_slot: sizes.len(),
        scratch_floats: 0,
        seed: options.seed,
    };
    for op in &graph.ops {
        if matches!(op.kind, OpKind::Reshape(_)) {
            continue;
        }
        let inputs: Vec<Operand> = op
            .inputs
            .iter()
            .map(|&v| operand(graph, &slots, v))
            .collect();
        let output = operand(graph, &slots, op.output);
        op.kind.emit(&mut sink, &inputs, &output);
    }
    let generated_microkernel = gemm::define_microkernel(&mut sink);
    let kernels = std::mem::take(&mut sink.kernels);
    let scratch_floats = sink.scratch_floats;
    sizes.extend(&sink.workspaces);
    let step_id = define_step(&mut sink, &kernels);
    drop(sink);
    module
        .finalize_definitions()
        .unwrap_or_else(|e| panic!("internal error: linking generated code: {e}"));

    let mut buffers: Vec<Buffer> = sizes.iter().map(|&n| Buffer::new(n)).collect();
    let mut table: Vec<*mut f32> = buffers.iter_mut().map(Buffer::pointer).collect();
    table[0] = match options.microkernel.native() {
        Some(kernel) => kernel as *mut f32,
        None => module.get_finalized_function(generated_microkernel) as *mut f32,
    };
    // SAFETY: the function was defined with `StepFn`'s signature by `define_step`.
    let step =
        unsafe { std::mem::transmute::<*const u8, StepFn>(module.get_finalized_function(step_id)) };
    let updates = graph
        .outputs
        .iter()
        .filter(|o| o.role == OutputRole::Update)
        .filter_map(|o| graph.find_input(&o.name).map(|input| (o.value, input)))
        .collect();
    Ok(Program {
        updates,
        graph: graph.clone(),
        _module: module,
        _buffers: buffers,
        table,
        slots,
        step,
        pool: Pool::new(options.threads, scratch_floats),
        kernel_count: kernels.len(),
        compile_time: started.elapsed(),
        microkernel: options.microkernel,
    })
}

/// Cranelift for this CPU (vector extensions detected), optimising for speed.
fn isa() -> std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa> {
    let mut flags = settings::builder();
    flags
        .set("opt_level", "speed")
        .expect("internal error: Cranelift lacks opt_level");
    let isa = cranelift_native::builder()
        .unwrap_or_else(|e| panic!("internal error: Cranelift does not support this machine: {e}"));
    isa.finish(settings::Flags::new(flags))
        .unwrap_or_else(|e| panic!("internal error: building Cranelift's target: {e}"))
}

fn operand(graph: &Graph, slots: &[Slot], value: ValueId) -> Operand {
    Operand {
        slot: slots[value.0],
        shape: graph.shape(value).clone(),
    }
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
    extern "C" fn logf(x: f32) -> f32 {
        x.ln()
    }
    extern "C" fn tanhf(x: f32) -> f32 {
        x.tanh()
    }
    match call {
        Libcall::Log => logf as *const u8,
        Libcall::Tanh => tanhf as *const u8,
    }
}

impl Program {
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The memory of a value.
    pub fn value(&self, value: ValueId) -> &[f32] {
        let len = self.graph.shape(value).iter().product();
        // SAFETY: the slot's buffer holds at least the value's elements, and no step runs
        // while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.table[self.slots[value.0].0], len) }
    }

    fn value_mut(&mut self, value: ValueId) -> &mut [f32] {
        let len = self.graph.shape(value).iter().product();
        // SAFETY: as in `value`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.table[self.slots[value.0].0], len) }
    }

    /// The memory of the input of this name (data, targets, parameters, state, scalars).
    pub fn input(&self, name: &str) -> Option<&[f32]> {
        let id = self.graph.find_input(name)?;
        Some(self.value(id))
    }

    /// The memory of the input of this name, to fill before a step.
    pub fn input_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let id = self.graph.find_input(name)?;
        Some(self.value_mut(id))
    }

    /// The output of this role and name after a step.
    pub fn output(&self, role: OutputRole, name: &str) -> Option<&[f32]> {
        let id = self.graph.find_output(role, name)?;
        Some(self.value(id))
    }

    /// Runs the graph once.
    pub fn run(&mut self) {
        // SAFETY: the table points to buffers sized for every value and workspace, alive as
        // long as `self`; the pool was created with the scratch the kernels asked for.
        unsafe { (self.step)(self.table.as_ptr(), &self.pool) }
    }

    /// Copies each `update` output into the input of its name, so the next step starts from
    /// the new parameters and state.
    pub fn apply_updates(&mut self) {
        for &(from, to) in &self.updates {
            let len = self.graph.shape(from).iter().product();
            let (source, target) = (
                self.table[self.slots[from.0].0],
                self.table[self.slots[to.0].0],
            );
            if source == target {
                continue;
            }
            // SAFETY: both buffers hold `len` floats (an update has its input's shape, which the
            // verifier checked), and distinct buffers never overlap.
            unsafe { std::ptr::copy_nonoverlapping(source, target, len) };
        }
    }
}
