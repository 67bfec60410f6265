//! netc, the compiler: the front end (checking and elaborating `.net` networks), lowering to
//! the IR, symbolic differentiation and optimizer updates, the reference interpreter, the
//! summary, training and evaluation with the runtime's driver, and the command line.

pub mod aot;
pub mod autodiff;
pub mod bench;
pub mod cli;
pub mod codegen;
pub mod front;
pub mod init;
pub mod interp;
pub mod ir;
pub mod link;
pub mod lower;
pub mod optim;
pub mod passes;
pub mod pipeline;
pub mod summary;
pub mod train;
