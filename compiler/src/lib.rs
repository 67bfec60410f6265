//! netc, the compiler: the front end (checking and elaborating `.net` networks), the summary,
//! and the command line.

pub mod cli;
pub mod front;
pub mod summary;
