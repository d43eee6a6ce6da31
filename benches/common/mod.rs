//! Pieces the end-to-end benches share: the bound the primitives set on one
//! core, and the table results are printed in. Each bench uses a part.
#![allow(dead_code)]

pub mod bound;
pub mod table;
pub mod world;
