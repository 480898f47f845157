//! One module per group of commands.

pub mod containers;
pub mod context;
pub mod files;
pub mod images;
pub mod imagestore;
pub mod inspect;
pub mod lifecycle;
pub mod networks;
pub mod processes;
pub mod registry;
pub mod system;
pub mod volumes;
