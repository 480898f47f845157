//! `docker push`, `docker login` and `docker search` against registries.

use berth_common::reference;
use berth_common::request;
use berth_proto::content::v1::ReadRequest;
use berth_proto::gateway::v1::{
    LoginRequest, LoginResponse, Progress, PushRequest, SearchRequest, SearchResponse, SearchResult,
};
use berth_proto::types::v1::Descriptor;
use berth_registry::{media, Credentials, Upload};
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::images::familiar;
use crate::pull::{credentials, registry_error, ProgressTx};
use crate::Inner;

/// Blobs up to this size go up in one request; larger ones in chunks of
/// this size.
const CHUNK: usize = 16 << 20;
/// Docker Hub's search endpoint.
const HUB_INDEX: &str = "index.docker.io";

fn line(id: &str, status: impl Into<String>) -> Progress {
    Progress {
        id: id.to_string(),
        status: status.into(),
        ..Default::default()
    }
}

impl Inner {
    /// Pushes a local image to the registry its name points at.
    pub(crate) async fn push(&self, ns: &str, req: PushRequest, tx: ProgressTx) -> Result<()> {
        let r =
            reference::parse(&req.reference).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if r.digest().is_some() {
            return Err(Error::InvalidArgument(
                "cannot push a digest reference".into(),
            ));
        }
        let full = r.full();
        let target = self.current_target(ns, &full).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "An image does not exist locally with the tag: {}",
                r.familiar_name()
            ))
        })?;
        let info = self.image_info(ns, &target).await?;
        let creds = credentials(req.auth.as_ref());
        let host = berth_registry::endpoint_host(r.domain()).to_string();
        let repo = r.path().to_string();
        let tag = r.tag().unwrap_or(reference::DEFAULT_TAG).to_string();
        let send = |p: Progress| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Ok(p)).await;
            }
        };
        send(line(
            "",
            format!("The push refers to repository [{}]", r.familiar_name()),
        ))
        .await;

        // Other repositories of the same registry that hold this image:
        // blobs can be mounted from them instead of uploaded.
        let mount_from: Vec<String> = self
            .image_records(ns)
            .await?
            .into_iter()
            .filter(|rec| {
                rec.target
                    .as_ref()
                    .is_some_and(|t| t.digest == target.digest)
            })
            .filter_map(|rec| reference::parse(&rec.name).ok())
            .filter(|o| o.domain() == r.domain() && o.path() != r.path())
            .map(|o| o.path().to_string())
            .collect();

        // Layers top first, like docker prints them.
        for layer in info.layers.iter().rev() {
            let id = layer.digest.trim_start_matches("sha256:")[..12].to_string();
            send(line(&id, "Preparing")).await;
        }
        for layer in info.layers.iter().rev() {
            let id = layer.digest.trim_start_matches("sha256:")[..12].to_string();
            if media::is_foreign_layer(&layer.media_type) {
                send(line(&id, "Skipped foreign layer")).await;
                continue;
            }
            let status = self
                .push_blob(ns, &host, &repo, layer, &mount_from, &creds, &id, &tx)
                .await?;
            send(line(&id, status)).await;
        }
        self.push_blob(
            ns,
            &host,
            &repo,
            &info.config_desc,
            &mount_from,
            &creds,
            "",
            &tx,
        )
        .await?;
        let manifest = self.read_blob(ns, &target.digest).await?;
        let size = manifest.len() as i64;
        let digest = self
            .registry
            .put_manifest(
                &host,
                &repo,
                &tag,
                &target.media_type,
                Bytes::from(manifest),
                &creds,
            )
            .await
            .map_err(registry_error)?;
        send(Progress {
            id: String::new(),
            status: format!("{tag}: digest: {digest} size: {size}"),
            digest,
            size,
            ..Default::default()
        })
        .await;
        self.emit_image(ns, &info.id, "push", &familiar(&full));
        Ok(())
    }

    /// Makes sure the repository has the blob: already there, mounted from
    /// another repository, or uploaded. Returns docker's status text.
    #[allow(clippy::too_many_arguments)]
    async fn push_blob(
        &self,
        ns: &str,
        host: &str,
        repo: &str,
        blob: &Descriptor,
        mount_from: &[String],
        creds: &Credentials,
        id: &str,
        tx: &ProgressTx,
    ) -> Result<String> {
        let reg = &self.registry;
        if reg
            .blob_exists(host, repo, &blob.digest, creds)
            .await
            .map_err(registry_error)?
            .is_some()
        {
            return Ok("Layer already exists".into());
        }
        // One mount attempt: a registry that cannot mount opens a plain
        // upload session instead, which is used.
        if let Some(from) = mount_from.first() {
            match reg
                .start_upload(host, repo, Some((&blob.digest, from)), creds)
                .await
                .map_err(registry_error)?
            {
                Upload::Mounted => return Ok(format!("Mounted from {from}")),
                // The registry opened a plain upload instead: use it.
                Upload::Session(url) => {
                    self.upload(ns, host, repo, blob, url, creds, id, tx)
                        .await?;
                    return Ok("Pushed".into());
                }
            }
        }
        let url = match reg
            .start_upload(host, repo, None, creds)
            .await
            .map_err(registry_error)?
        {
            Upload::Session(url) => url,
            Upload::Mounted => return Ok("Layer already exists".into()),
        };
        self.upload(ns, host, repo, blob, url, creds, id, tx)
            .await?;
        Ok("Pushed".into())
    }

    /// Sends a blob from berth-content: in one request when small, else in
    /// chunks, reporting progress.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        ns: &str,
        host: &str,
        repo: &str,
        blob: &Descriptor,
        mut url: String,
        creds: &Credentials,
        id: &str,
        tx: &ProgressTx,
    ) -> Result<()> {
        let mut stream = self
            .content
            .clone()
            .read(request(
                ns,
                ReadRequest {
                    digest: blob.digest.clone(),
                    offset: 0,
                    size: 0,
                },
            ))
            .await
            .map_err(Error::service("content"))?
            .into_inner();
        let mut pending: Vec<u8> = Vec::new();
        let mut sent: u64 = 0;
        loop {
            let next = stream.message().await.map_err(Error::service("content"))?;
            let done = next.is_none();
            if let Some(m) = next {
                pending.extend_from_slice(&m.data);
            }
            if pending.len() >= CHUNK || (done && sent > 0 && !pending.is_empty()) {
                let chunk = Bytes::from(std::mem::take(&mut pending));
                let len = chunk.len() as u64;
                url = self
                    .registry
                    .upload_chunk(host, repo, &url, sent, chunk, creds)
                    .await
                    .map_err(registry_error)?;
                sent += len;
                if !id.is_empty() {
                    let _ = tx
                        .send(Ok(Progress {
                            id: id.to_string(),
                            status: "Pushing".into(),
                            current: sent as i64,
                            total: blob.size,
                            ..Default::default()
                        }))
                        .await;
                }
            }
            if done {
                break;
            }
        }
        // Small blobs: everything in the closing PUT (monolithic upload).
        self.registry
            .finish_upload(host, repo, &url, &blob.digest, Bytes::from(pending), creds)
            .await
            .map_err(registry_error)
    }

    /// Checks credentials against a registry.
    pub(crate) async fn login(&self, req: LoginRequest) -> Result<LoginResponse> {
        let server = req
            .server
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .trim_end_matches("/v2");
        let domain = if server.is_empty() {
            "docker.io"
        } else {
            server
        };
        let host = berth_registry::endpoint_host(domain);
        let creds = credentials(req.auth.as_ref());
        if creds.username.is_empty() && creds.identity_token.is_empty() {
            return Err(Error::InvalidArgument("Username is required".into()));
        }
        self.registry
            .ping(host, &creds)
            .await
            .map_err(registry_error)?;
        Ok(LoginResponse {
            status: "Login Succeeded".into(),
            identity_token: String::new(),
        })
    }

    /// Searches Docker Hub, or the registry named in `HOST/TERM`.
    pub(crate) async fn search(&self, req: SearchRequest) -> Result<SearchResponse> {
        let (host, term) = match req.term.split_once('/') {
            Some((h, t)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (berth_registry::endpoint_host(h).to_string(), t.to_string())
            }
            _ => (HUB_INDEX.to_string(), req.term.clone()),
        };
        if term.is_empty() {
            return Err(Error::InvalidArgument(
                "search term must not be empty".into(),
            ));
        }
        let limit = match req.limit {
            0 => 25,
            n if (1..=100).contains(&n) => n as usize,
            n => {
                return Err(Error::InvalidArgument(format!(
                    "limit {n} is outside the range of [1, 100]"
                )))
            }
        };
        let creds = credentials(req.auth.as_ref());
        let found = self
            .registry
            .search(&host, &term, limit, &creds)
            .await
            .map_err(registry_error)?;
        Ok(SearchResponse {
            results: found
                .into_iter()
                .map(|r| SearchResult {
                    name: r.name,
                    description: r.description,
                    stars: r.stars as i64,
                    official: r.official,
                })
                .collect(),
        })
    }
}
