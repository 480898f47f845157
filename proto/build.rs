fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "berth/types/v1/types.proto",
        "berth/content/v1/content.proto",
        "berth/snapshots/v1/snapshots.proto",
        "berth/tasks/v1/tasks.proto",
        "berth/network/v1/network.proto",
        "berth/gateway/v1/gateway.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        // Layer bytes pass through the gateway to two services: as Bytes
        // they are shared, and decoded without a copy.
        .bytes(".berth.content.v1.WriteRequest.data")
        .bytes(".berth.content.v1.ReadResponse.data")
        .bytes(".berth.snapshots.v1.ApplyStreamRequest.data")
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["."])?;
    Ok(())
}
