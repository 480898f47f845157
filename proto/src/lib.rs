//! Rust code generated from berth's `.proto` files (see `proto/berth`).
#![allow(clippy::all, missing_docs)]

pub mod types {
    pub mod v1 {
        tonic::include_proto!("berth.types.v1");
    }
}
pub mod content {
    pub mod v1 {
        tonic::include_proto!("berth.content.v1");
    }
}
pub mod snapshots {
    pub mod v1 {
        tonic::include_proto!("berth.snapshots.v1");
    }
}
pub mod tasks {
    pub mod v1 {
        tonic::include_proto!("berth.tasks.v1");
    }
}
pub mod network {
    pub mod v1 {
        tonic::include_proto!("berth.network.v1");
    }
}
pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("berth.gateway.v1");
    }
}
