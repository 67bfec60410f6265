//! The vocabulary kernels are written in: a thin layer over Cranelift's `FunctionBuilder` for
//! counted loops, tensor loads and stores, f32x4 vector bodies with scalar tails, and calls to
//! the runtime. Every primitive's code-generation rule (in `ir/ops/`) builds its kernels with it.
//!
//! A kernel has the signature `(table, begin, end, scratch)` (`netc_runtime::Kernel`): `table`
//! holds one pointer per buffer, `begin..end` is the share of the op's tasks this call runs,
//! `scratch` is memory private to the calling thread.
//!
//! Cranelift neither vectorises, unrolls nor schedules (see `shared/notes/cranelift.md`), so the
//! generated code says all of it: `vector_loop` runs an unrolled f32x4 body, then single f32x4
//! steps, then a scalar tail, with the same body closure written once for any lane type.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, Endianness, ExtFuncData, ExternalName, FuncRef, Function, InstBuilder,
    MemFlagsData, SigRef, Signature, Type, UserExternalName, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_module::FuncId;
use std::collections::HashMap;

/// f32 lanes in a Cranelift vector on x86-64 (it has no wider vectors).
pub const LANES: i64 = 4;
pub const F32X4: Type = types::F32X4;
pub const F32: Type = types::F32;
pub const I64: Type = types::I64;

/// Which buffer of the table, by slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot(pub usize);

/// Runtime functions a kernel may call, declared in every function that uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Libcall {
    /// `f32 -> f32` functions Cranelift has no instruction for (`exp` is inline:
    /// `codegen::math`).
    Log,
    Tanh,
}

impl Libcall {
    pub const ALL: [Libcall; 2] = [Libcall::Log, Libcall::Tanh];

    /// The exported runtime symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Libcall::Log => "netc_logf",
            Libcall::Tanh => "netc_tanhf",
        }
    }
}

/// Builds one kernel's body.
pub struct Emitter<'f> {
    pub b: FunctionBuilder<'f>,
    /// The function's parameters: `(table, begin, end, scratch)` for a kernel.
    pub params: Vec<Value>,
    /// The runtime functions declared in the module, and those imported into this function.
    libcalls: &'f HashMap<Libcall, (FuncId, Signature)>,
    imported: HashMap<Libcall, FuncRef>,
    microkernel_sig: Option<SigRef>,
}

impl<'f> Emitter<'f> {
    pub(crate) fn new(
        mut b: FunctionBuilder<'f>,
        libcalls: &'f HashMap<Libcall, (FuncId, Signature)>,
    ) -> Emitter<'f> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let params = b.block_params(entry).to_vec();
        Emitter {
            b,
            params,
            libcalls,
            imported: HashMap::new(),
            microkernel_sig: None,
        }
    }

    pub fn table(&self) -> Value {
        self.params[0]
    }

    /// The first task of this call.
    pub fn begin(&self) -> Value {
        self.params[1]
    }

    /// One past the last task of this call.
    pub fn end(&self) -> Value {
        self.params[2]
    }

    /// The calling thread's scratch memory.
    pub fn scratch(&self) -> Value {
        self.params[3]
    }

    pub(crate) fn finish(mut self, config: TargetFrontendConfig) {
        self.b.ins().return_(&[]);
        self.b.finalize(config);
    }

    /// Flags for a load from a tensor nothing writes while the kernel runs: it may be hoisted,
    /// sunk or merged.
    pub fn frozen() -> MemFlagsData {
        Self::mutable().with_readonly().with_can_move()
    }

    /// Flags for memory the kernel itself writes. Not `aligned`: vectors start anywhere in a
    /// tensor, and without AVX an access Cranelift believes aligned may become an SSE memory
    /// operand, which faults when it is not.
    pub fn mutable() -> MemFlagsData {
        MemFlagsData::new().with_notrap()
    }

    /// The base address of a buffer.
    pub fn buffer(&mut self, slot: Slot) -> Value {
        let offset = i32::try_from(8 * slot.0).expect("internal error: table slot out of range");
        let table = self.table();
        self.b.ins().load(I64, Self::frozen(), table, offset)
    }

    pub fn int(&mut self, value: i64) -> Value {
        self.b.ins().iconst(I64, value)
    }

    pub fn float(&mut self, value: f32) -> Value {
        self.b.ins().f32const(value)
    }

    /// `value` in every lane of `ty` (F32 or F32X4).
    pub fn constant(&mut self, ty: Type, value: f32) -> Value {
        let x = self.float(value);
        self.splat(ty, x)
    }

    /// A scalar f32 in every lane of `ty`; itself when `ty` is F32.
    pub fn splat(&mut self, ty: Type, x: Value) -> Value {
        if ty == F32 {
            x
        } else {
            self.b.ins().splat(ty, x)
        }
    }

    /// The address of f32 element `index` (an i64 value) of `base`.
    pub fn element(&mut self, base: Value, index: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_s(index, 2);
        self.b.ins().iadd(base, bytes)
    }

    /// The address of i64 element `index` of `base`: an entry of a table of offsets (the
    /// microkernel's B rows).
    pub fn offset_entry(&mut self, base: Value, index: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_s(index, 3);
        self.b.ins().iadd(base, bytes)
    }

    /// Loads `ty` (F32 or F32X4) at element `index` of `base` plus `offset` elements.
    pub fn load(
        &mut self,
        ty: Type,
        flags: MemFlagsData,
        base: Value,
        index: Value,
        offset: i64,
    ) -> Value {
        let address = self.element(base, index);
        self.b.ins().load(ty, flags, address, byte_offset(offset))
    }

    pub fn store(
        &mut self,
        flags: MemFlagsData,
        value: Value,
        base: Value,
        index: Value,
        offset: i64,
    ) {
        let address = self.element(base, index);
        self.b
            .ins()
            .store(flags, value, address, byte_offset(offset));
    }

    /// A mutable variable (for accumulators and loop-carried values) holding `init`.
    pub fn variable(&mut self, ty: Type, init: Value) -> Variable {
        let var = self.b.declare_var(ty);
        self.b.def_var(var, init);
        var
    }

    pub fn get(&mut self, var: Variable) -> Value {
        self.b.use_var(var)
    }

    pub fn set(&mut self, var: Variable, value: Value) {
        self.b.def_var(var, value);
    }

    /// `for i in (lo..hi).step_by(step) { body(i) }`, with i64 bounds.
    pub fn for_loop(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) {
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[lo.into()]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        // Exit first: with the body as the fall-through successor, Cranelift's elaboration sees
        // the body inside the loop and hoists invariants out of it (it does not, the other way
        // round, in cranelift 0.135).
        let done = self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, i, hi);
        self.b.ins().brif(done, exit, &[], inner, &[]);
        self.b.switch_to_block(inner);
        self.b.seal_block(inner);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[next.into()]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// `for_loop` over constant bounds; nothing at all when the range is empty.
    pub fn for_range(&mut self, lo: i64, hi: i64, body: impl FnOnce(&mut Self, Value)) {
        if lo >= hi {
            return;
        }
        let (lo, hi) = (self.int(lo), self.int(hi));
        self.for_loop(lo, hi, 1, body);
    }

    /// Runs `body(index, ty)` over `lo..hi`: `unroll` f32x4 steps at a time, then f32x4 steps,
    /// then f32 steps for the tail. `body` handles `LANES` elements from `index` when `ty` is
    /// F32X4, and one when it is F32.
    pub fn vector_loop(
        &mut self,
        lo: Value,
        hi: Value,
        unroll: usize,
        body: impl FnMut(&mut Self, Value, Type),
    ) {
        let unroll = unroll.max(1) as i64;
        let wide = LANES * unroll;
        let count = self.b.ins().isub(hi, lo);
        let wide_end = if wide.count_ones() == 1 {
            let wide_count = self.b.ins().band_imm_s(count, !(wide - 1));
            self.b.ins().iadd(lo, wide_count)
        } else {
            let whole = self.b.ins().sdiv_imm_s(count, wide);
            let span = self.b.ins().imul_imm_s(whole, wide);
            self.b.ins().iadd(lo, span)
        };
        let rest = self.b.ins().isub(hi, wide_end);
        let vector_count = self.b.ins().band_imm_s(rest, !(LANES - 1));
        let vector_end = self.b.ins().iadd(wide_end, vector_count);
        let parts = [
            Steps::Loop,
            if unroll > 1 { Steps::Loop } else { Steps::Zero },
            Steps::Loop,
        ];
        self.vector_parts([lo, wide_end, vector_end, hi], parts, unroll, body);
    }

    /// `vector_loop` over constant bounds, emitting only the parts that run.
    pub fn vector_range(
        &mut self,
        lo: i64,
        hi: i64,
        unroll: usize,
        body: impl FnMut(&mut Self, Value, Type),
    ) {
        let unroll = unroll.max(1) as i64;
        let wide = LANES * unroll;
        let wide_end = lo + (hi - lo).max(0) / wide * wide;
        let vector_end = wide_end + (hi - wide_end).max(0) / LANES * LANES;
        let steps = |from: i64, to: i64, step: i64| match (to - from).max(0) / step {
            0 => Steps::Zero,
            1 => Steps::One,
            _ => Steps::Loop,
        };
        let parts = [
            steps(lo, wide_end, wide),
            steps(wide_end, vector_end, LANES),
            steps(vector_end, hi, 1),
        ];
        let bounds = [lo, wide_end, vector_end, hi].map(|b| self.int(b));
        self.vector_parts(bounds, parts, unroll, body);
    }

    /// The three loops of a vector loop between `bounds`: unrolled f32x4, f32x4, f32; each
    /// only where it has steps, and a part of one step without its loop.
    fn vector_parts(
        &mut self,
        bounds: [Value; 4],
        parts: [Steps; 3],
        unroll: i64,
        mut body: impl FnMut(&mut Self, Value, Type),
    ) {
        let [lo, wide_end, vector_end, hi] = bounds;
        self.vector_part(parts[0], [lo, wide_end], LANES * unroll, |e, i| {
            for u in 0..unroll {
                let index = e.b.ins().iadd_imm_s(i, u * LANES);
                body(e, index, F32X4);
            }
        });
        self.vector_part(parts[1], [wide_end, vector_end], LANES, |e, i| {
            body(e, i, F32X4)
        });
        self.vector_part(parts[2], [vector_end, hi], 1, |e, i| body(e, i, F32));
    }

    /// One part of a vector loop: `body(index)` for `from..to` by `step`.
    fn vector_part(
        &mut self,
        steps: Steps,
        [from, to]: [Value; 2],
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) {
        match steps {
            Steps::Zero => {}
            Steps::One => body(self, from),
            Steps::Loop => self.for_loop(from, to, step, body),
        }
    }

    /// Applies an `f32 -> f32` runtime function to every lane of `x`.
    pub fn libcall(&mut self, call: Libcall, x: Value) -> Value {
        let func = self.import(call);
        let ty = self.b.func.dfg.value_type(x);
        if ty == F32 {
            let result = self.b.ins().call(func, &[x]);
            return self.b.inst_results(result)[0];
        }
        let mut out = x;
        for lane in 0..ty.lane_count() as u8 {
            let element = self.b.ins().extractlane(x, lane);
            let result = self.b.ins().call(func, &[element]);
            let result = self.b.inst_results(result)[0];
            out = self.b.ins().insertlane(out, result, lane);
        }
        out
    }

    /// The function's reference to a runtime function, imported on first use.
    fn import(&mut self, call: Libcall) -> FuncRef {
        if let Some(&func) = self.imported.get(&call) {
            return func;
        }
        let (id, signature) = &self.libcalls[&call];
        let func = import_function(self.b.func, *id, signature, false);
        self.imported.insert(call, func);
        func
    }

    /// Calls the microkernel (table slot 0): `c (+)= a · b` on the first `height` rows of one
    /// `MR x NR` tile, A's rows `a_rows` floats apart (0: a packed panel), B's rows found
    /// through the offsets at `rows` (0: a packed panel).
    pub fn microkernel(
        &mut self,
        [kc, height]: [Value; 2],
        [a, a_rows]: [Value; 2],
        [b, rows]: [Value; 2],
        c: Value,
        ldc: Value,
        accumulate: bool,
    ) {
        let sig = match self.microkernel_sig {
            Some(sig) => sig,
            None => {
                let mut signature = self.b.func.signature.clone();
                signature.params = vec![AbiParam::new(I64); 9];
                signature.returns.clear();
                let sig = self.b.import_signature(signature);
                self.microkernel_sig = Some(sig);
                sig
            }
        };
        let callee = self.buffer(Slot(0));
        let accumulate = self.int(accumulate as i64);
        self.b.ins().call_indirect(
            sig,
            callee,
            &[kc, height, a, a_rows, b, rows, c, ldc, accumulate],
        );
    }

    /// `if condition { then } else { otherwise }`, for an integer truth value.
    pub fn if_else(
        &mut self,
        condition: Value,
        then: impl FnOnce(&mut Self),
        otherwise: impl FnOnce(&mut Self),
    ) {
        let [yes, no, join] = [(); 3].map(|_| self.b.create_block());
        self.b.ins().brif(condition, yes, &[], no, &[]);
        self.b.switch_to_block(yes);
        self.b.seal_block(yes);
        then(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(no);
        self.b.seal_block(no);
        otherwise(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
    }

    /// `x` where `a cc b`, else +0.0: for vectors, `x` and-ed with the comparison's mask,
    /// cheaper than a select.
    pub fn keep_where(&mut self, cc: FloatCC, [a, b]: [Value; 2], x: Value) -> Value {
        if self.b.func.dfg.value_type(a) == F32 {
            let zero = self.constant(F32, 0.0);
            return self.select_cmp(cc, a, b, x, zero);
        }
        let mask = self.lane_mask(cc, a, b);
        self.b.ins().band(x, mask)
    }

    /// `cmp(a, b) ? x : y` lane-wise on floats (F32 or F32X4).
    pub fn select_cmp(&mut self, cc: FloatCC, a: Value, b: Value, x: Value, y: Value) -> Value {
        if self.b.func.dfg.value_type(a) == F32 {
            let holds = self.b.ins().fcmp(cc, a, b);
            return self.b.ins().select(holds, x, y);
        }
        let mask = self.lane_mask(cc, a, b);
        self.b.ins().bitselect(mask, x, y)
    }

    /// `a cc b` for vectors, as lanes of all ones or all zeros of `a`'s float type.
    fn lane_mask(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let mask = self.b.ins().fcmp(cc, a, b);
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(ty, little, mask)
    }
}

/// Makes function `id` of the module callable from `func`, as `Module::declare_func_in_func`
/// does, for builders that cannot borrow the module they are building into. `colocated` is
/// for functions defined in the same module.
pub(crate) fn import_function(
    func: &mut Function,
    id: FuncId,
    signature: &Signature,
    colocated: bool,
) -> FuncRef {
    let signature = func.import_signature(signature.clone());
    let name = func.declare_imported_user_function(UserExternalName {
        namespace: 0,
        index: id.as_u32(),
    });
    func.import_function(ExtFuncData {
        name: ExternalName::user(name),
        signature,
        colocated,
        patchable: false,
    })
}

fn byte_offset(elements: i64) -> i32 {
    i32::try_from(elements * 4).expect("internal error: constant offset beyond 2 GiB")
}

/// How many steps one part of a vector loop takes, where the emitter knows.
#[derive(Clone, Copy)]
enum Steps {
    Zero,
    One,
    /// A loop: any number, or more than one.
    Loop,
}
