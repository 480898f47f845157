//! The gRPC face of berth-network: requests in, [`Error`]s mapped to
//! status codes in one place.

use berth_common::grpc::namespace_of;
use berth_proto::network::v1::network_server::Network;
use berth_proto::network::v1::{
    AttachRequest, AttachResponse, ConnectRequest, CreateNetworkRequest, DetachRequest,
    DetachResponse, DisconnectRequest, DisconnectResponse, EndpointInfo, ListNetworksRequest,
    ListNetworksResponse, NetworkInfo, NetworkRef, RemoveNetworkResponse,
};
use tonic::{Request, Response, Status};

use crate::{Error, NetworkService};

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::NotFound(_) => Status::not_found(msg),
            Error::AlreadyExists(_) => Status::already_exists(msg),
            Error::FailedPrecondition(_) => Status::failed_precondition(msg),
            Error::Kernel(_) | Error::Io { .. } | Error::Store(_) => Status::internal(msg),
        }
    }
}

#[tonic::async_trait]
impl Network for NetworkService {
    async fn create_network(
        &self,
        req: Request<CreateNetworkRequest>,
    ) -> Result<Response<NetworkInfo>, Status> {
        let ns = namespace_of(&req)?;
        Ok(Response::new(
            NetworkService::create_network(self, &ns, req.get_ref()).await?,
        ))
    }

    async fn inspect_network(
        &self,
        req: Request<NetworkRef>,
    ) -> Result<Response<NetworkInfo>, Status> {
        let ns = namespace_of(&req)?;
        Ok(Response::new(
            NetworkService::inspect_network(self, &ns, &req.get_ref().name_or_id).await?,
        ))
    }

    async fn list_networks(
        &self,
        req: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let ns = namespace_of(&req)?;
        Ok(Response::new(ListNetworksResponse {
            networks: NetworkService::list_networks(self, &ns).await?,
        }))
    }

    async fn remove_network(
        &self,
        req: Request<NetworkRef>,
    ) -> Result<Response<RemoveNetworkResponse>, Status> {
        let ns = namespace_of(&req)?;
        let id = NetworkService::remove_network(self, &ns, &req.get_ref().name_or_id).await?;
        Ok(Response::new(RemoveNetworkResponse { id }))
    }

    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let ns = namespace_of(&req)?;
        let r = req.get_ref();
        berth_common::grpc::record_container(&r.container_id);
        Ok(Response::new(
            NetworkService::attach(
                self,
                &ns,
                &r.container_id,
                &r.container_name,
                &r.mode,
                &r.endpoints,
                &r.ports,
            )
            .await?,
        ))
    }

    async fn detach(
        &self,
        req: Request<DetachRequest>,
    ) -> Result<Response<DetachResponse>, Status> {
        berth_common::grpc::record_container(&req.get_ref().container_id);
        NetworkService::detach(self, &req.get_ref().container_id).await?;
        Ok(Response::new(DetachResponse {}))
    }

    async fn connect_network(
        &self,
        req: Request<ConnectRequest>,
    ) -> Result<Response<EndpointInfo>, Status> {
        let ns = namespace_of(&req)?;
        let r = req.get_ref();
        let ep = r
            .endpoint
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("no endpoint given"))?;
        Ok(Response::new(
            NetworkService::connect(self, &ns, &r.container_id, &r.container_name, ep).await?,
        ))
    }

    async fn disconnect_network(
        &self,
        req: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectResponse>, Status> {
        let ns = namespace_of(&req)?;
        let r = req.get_ref();
        NetworkService::disconnect(self, &ns, &r.container_id, &r.network).await?;
        Ok(Response::new(DisconnectResponse {}))
    }
}
