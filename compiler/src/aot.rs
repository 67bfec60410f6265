//! Ahead-of-time compilation (`netc compile`): every program a recipe's run needs (a training
//! step per set of frozen layers, and the inference pass) generated into one relocatable
//! object with cranelift-object, with the manifest the runtime reads them by, then linked with
//! the runtime into a standalone executable (`link`).
//!
//! The object defines three symbols the runtime's `main` (crate `netc-standalone`) reads:
//! `netc_manifest` and `netc_manifest_len`, the manifest as JSON, and `netc_entry_points`, two
//! function pointers per program (its step, its generated microkernel) in the manifest's order.

use crate::codegen::{self, generate};
use crate::front::Network;
use crate::init::tensor_inits;
use crate::ir::OpKind;
use crate::passes::{Pass, PassOptions};
use crate::pipeline::{self, Compiled, TrainingOptions};
use crate::summary;
use crate::train::{model_shape, optimizer};
use cranelift_codegen::isa::{self, TargetIsa};
use cranelift_codegen::settings::Configurable;
use cranelift_module::{DataDescription, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use netc_runtime::driver::ModelIdentity;
use netc_runtime::linked::{LinkedProgram, Manifest};
use netc_runtime::recipe::Recipe;
use std::sync::Arc;

/// The CPU generated code may assume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetCpu {
    /// Any x86-64 CPU with AVX (every one since 2011); contractions still use the best
    /// microkernel found at run time. Not plain SSE2: without AVX's VEX encoding, Cranelift
    /// 0.135 folds unaligned vector loads into SSE memory operands (`cmpps`), which fault.
    Portable,
    /// This CPU: every vector extension it has.
    Native,
}

impl TargetCpu {
    pub const NAMES: [&str; 2] = ["x86-64-avx", "native"];

    pub fn from_name(name: &str) -> Option<TargetCpu> {
        match name {
            "x86-64-avx" => Some(TargetCpu::Portable),
            "native" => Some(TargetCpu::Native),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TargetCpu::Portable => Self::NAMES[0],
            TargetCpu::Native => Self::NAMES[1],
        }
    }
}

/// `network`'s programs for `recipe`, after the passes `passes` enables, as an object file,
/// and the manifest inside it.
pub fn compile_object(
    network: &Network,
    recipe: &Recipe,
    model: ModelIdentity,
    target: TargetCpu,
    passes: &PassOptions,
) -> Result<(Vec<u8>, Manifest), String> {
    let isa = object_isa(target)?;
    let cpu_features = isa
        .isa_flags()
        .iter()
        .filter(|flag| flag.as_bool() == Some(true))
        .filter_map(|flag| flag.name.strip_prefix("has_").map(str::to_string))
        .collect();
    let builder = ObjectBuilder::new(
        isa,
        model.name.as_bytes(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| format!("internal error: Cranelift's object writer: {e}"))?;
    let mut module = ObjectModule::new(builder);

    let mut entry_points: Vec<(FuncId, FuncId)> = Vec::new();
    let mut generate_program = |compiled: &Compiled, frozen: Vec<String>| {
        let generated = generate(
            &compiled.graph,
            tensor_inits(compiled),
            &mut module,
            recipe.seed,
            passes,
        );
        entry_points.push((generated.step, generated.microkernel));
        LinkedProgram {
            frozen,
            layout: generated.layout,
        }
    };
    let mut training = Vec::new();
    let mut dropout = false;
    for frozen in recipe.frozen_sets() {
        let compiled = pipeline::training(
            network,
            &TrainingOptions {
                batch: recipe.batch,
                optimizer: optimizer(&recipe.optimizer),
                frozen: frozen.clone(),
            },
        )?;
        dropout |= compiled
            .graph
            .ops
            .iter()
            .any(|op| matches!(op.kind, OpKind::DropoutMask { .. }));
        training.push(generate_program(&compiled, frozen));
    }
    let inference = generate_program(&pipeline::inference(network, recipe.batch)?, Vec::new());
    let manifest = Manifest {
        model,
        shape: model_shape(network),
        netc_version: env!("CARGO_PKG_VERSION").to_string(),
        target_cpu: target.name().to_string(),
        cpu_features,
        passes_off: Pass::ALL
            .into_iter()
            .filter(|&pass| !passes.enabled(pass))
            .map(|pass| pass.name().to_string())
            .collect(),
        recipe: recipe.to_yaml(),
        summary: summary::table(network, false),
        macs_per_example: network.cost().macs,
        dropout,
        training,
        inference,
    };
    let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let len = (json.len() as u64).to_le_bytes().to_vec();
    define_data(&mut module, "netc_manifest", json, |_, _| {});
    define_data(&mut module, "netc_manifest_len", len, |_, _| {});
    let pointers = vec![0u8; entry_points.len() * 2 * 8];
    define_data(
        &mut module,
        "netc_entry_points",
        pointers,
        |module, data| {
            for (index, &(step, microkernel)) in entry_points.iter().enumerate() {
                for (offset, function) in [(0, step), (8, microkernel)] {
                    let reference = module.declare_func_in_data(function, data);
                    data.write_function_addr((index * 16 + offset) as u32, reference);
                }
            }
        },
    );
    let product = module.finish();
    let bytes = product
        .emit()
        .map_err(|e| format!("internal error: writing the object file: {e}"))?;
    Ok((bytes, manifest))
}

/// Defines an exported, read-only, 8-byte-aligned data object of `bytes`, which `relocate` may
/// fill with addresses.
fn define_data(
    module: &mut ObjectModule,
    name: &str,
    bytes: Vec<u8>,
    relocate: impl FnOnce(&mut ObjectModule, &mut DataDescription),
) {
    let id = module
        .declare_data(name, Linkage::Export, false, false)
        .unwrap_or_else(|e| panic!("internal error: declaring {name}: {e}"));
    let mut data = DataDescription::new();
    data.define(bytes.into_boxed_slice());
    data.set_align(8);
    relocate(module, &mut data);
    module
        .define_data(id, &data)
        .unwrap_or_else(|e| panic!("internal error: defining {name}: {e}"));
}

/// Cranelift for an object: this machine's triple, position-independent code (executables are
/// linked as PIE by default), with `target`'s vector extensions.
fn object_isa(target: TargetCpu) -> Result<Arc<dyn TargetIsa>, String> {
    let host = cranelift_native::builder()
        .map_err(|e| format!("Cranelift does not support this machine: {e}"))?;
    let builder = match target {
        TargetCpu::Native => host,
        TargetCpu::Portable => {
            let mut portable = isa::lookup(host.triple().clone())
                .map_err(|e| format!("Cranelift does not support this machine: {e}"))?;
            for feature in ["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_avx"] {
                portable
                    .enable(feature)
                    .unwrap_or_else(|e| panic!("internal error: Cranelift's {feature}: {e}"));
            }
            portable
        }
    };
    builder
        .finish(codegen::flags(true))
        .map_err(|e| format!("internal error: building Cranelift's target: {e}"))
}
