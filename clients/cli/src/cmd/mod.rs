//! One module per group of commands.

pub mod containers;
pub mod images;
pub mod inspect;
pub mod system;
