//! The HTTP side: endpoints, authorization, retries and the API calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use crate::auth::{parse_challenges, Challenge, Credentials};
use crate::error::{from_response, Error, Result};
use crate::media;

/// The largest manifest accepted (Docker's limit is 4 MiB too).
const MANIFEST_MAX: usize = 4 << 20;

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct Config {
    /// Registries (host[:port]) that may be reached over plain HTTP when
    /// HTTPS does not answer. Loopback hosts always may, as in Docker.
    pub insecure: Vec<String>,
    /// Attempts for a request that fails transiently (5xx, 429, dropped
    /// connection), the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Connect timeout for one attempt.
    pub connect_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            insecure: Vec::new(),
            attempts: 5,
            backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A registry API client. Cheap to share; it caches tokens and the scheme
/// that works for each host.
pub struct Client {
    http: reqwest::Client,
    config: Config,
    /// (host, scope, whose credentials) -> Authorization header value.
    /// Keyed by the credentials too: a token got with one user's password
    /// must never serve a request made with other (or no) credentials.
    auth: Mutex<HashMap<(String, String, String), String>>,
    /// host -> "https" or "http".
    schemes: Mutex<HashMap<String, &'static str>>,
}

/// What starting a blob upload gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// The registry mounted the blob from the other repository: done.
    Mounted,
    /// An upload session: the URL to PATCH/PUT the data to.
    Session(String),
}

/// One row of `search`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchResult {
    pub name: String,
    pub description: String,
    pub stars: u64,
    pub official: bool,
}

/// Whether `host` (host[:port]) is a loopback address or name.
fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `repository:NAME:ACTIONS` scopes are joined with spaces when a request
/// needs several (a cross-repository mount).
fn scope_params(scope: &str) -> Vec<(&'static str, &str)> {
    scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| ("scope", s))
        .collect()
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

impl Client {
    pub fn new(config: Config) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            config,
            auth: Mutex::default(),
            schemes: Mutex::default(),
        })
    }

    fn insecure(&self, host: &str) -> bool {
        is_loopback(host) || self.config.insecure.iter().any(|h| h == host)
    }

    /// `scheme://host` for a host; an explicit scheme in `host` wins.
    async fn base(&self, host: &str) -> String {
        if host.starts_with("http://") || host.starts_with("https://") {
            return host.trim_end_matches('/').to_string();
        }
        if let Some(s) = self.schemes.lock().unwrap().get(host) {
            return format!("{s}://{host}");
        }
        let scheme = if !self.insecure(host) {
            "https"
        } else {
            // Docker tries HTTPS first for insecure registries, then HTTP.
            let probe = self
                .http
                .get(format!("https://{host}/v2/"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if probe.is_ok() {
                "https"
            } else {
                "http"
            }
        };
        self.schemes
            .lock()
            .unwrap()
            .insert(host.to_string(), scheme);
        format!("{scheme}://{host}")
    }

    fn host_key(host: &str) -> String {
        host.trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// Answers a 401's challenge: a Bearer token for `scope`, or Basic.
    async fn authorize(
        &self,
        host: &str,
        scope: &str,
        creds: &Credentials,
        challenges: &[Challenge],
    ) -> Result<String> {
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            return self.fetch_token(b, scope, creds).await;
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return creds
                .basic()
                .ok_or_else(|| Error::Unauthorized(format!("authentication required by {host}")));
        }
        Err(Error::Unauthorized(format!(
            "{host} asked for authentication without a challenge berth understands"
        )))
    }

    /// The token flow: GET the realm with service and scope, with the
    /// user's Basic credentials if any; or, with an identity token, the
    /// OAuth2 refresh-token grant.
    async fn fetch_token(
        &self,
        ch: &Challenge,
        scope: &str,
        creds: &Credentials,
    ) -> Result<String> {
        let realm = ch
            .params
            .get("realm")
            .ok_or_else(|| Error::Protocol("Bearer challenge without a realm".into()))?;
        let service = ch.params.get("service").cloned().unwrap_or_default();
        let scope = if scope.is_empty() {
            ch.params.get("scope").cloned().unwrap_or_default()
        } else {
            scope.to_string()
        };
        let req = if !creds.identity_token.is_empty() {
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("refresh_token", creds.identity_token.clone()),
                ("client_id", "berth".to_string()),
                ("service", service.clone()),
            ];
            form.extend(
                scope_params(&scope)
                    .into_iter()
                    .map(|(k, v)| (k, v.to_string())),
            );
            self.http.post(realm).form(&form)
        } else {
            let mut q = vec![("service", service.as_str())];
            q.extend(scope_params(&scope));
            let mut req = self.http.get(realm).query(&q);
            if let Some(b) = creds.basic() {
                req = req.header(AUTHORIZATION, b);
            }
            req
        };
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Transport(format!("token request to {realm}: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::Transport(format!("token request to {realm}: {e}")))?;
        if !status.is_success() {
            return Err(match from_response(status, &body) {
                Error::Unauthorized(m) | Error::Denied(m) => Error::Unauthorized(m),
                e => e,
            });
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("token answer of {realm}: {e}")))?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(Error::Protocol(format!("{realm} returned no token")));
        }
        Ok(format!("Bearer {token}"))
    }

    /// Sends the request `make` builds for the host's base URL, answering
    /// one authentication challenge and, when `retry` is set, retrying
    /// transient failures with back-off. Returns any non-401 response; the
    /// caller checks its status.
    async fn send(
        &self,
        host: &str,
        scope: &str,
        creds: &Credentials,
        retry: bool,
        make: &(dyn Fn(&str) -> RequestBuilder + Sync),
    ) -> Result<Response> {
        let base = self.base(host).await;
        let key = (Self::host_key(host), scope.to_string(), creds.fingerprint());
        let mut attempt = 1;
        let mut challenged = false;
        loop {
            let mut req = make(&base);
            if let Some(a) = self.auth.lock().unwrap().get(&key).cloned() {
                req = req.header(AUTHORIZATION, a);
            }
            let failure = match req.send().await {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    challenged = true;
                    let challenges: Vec<Challenge> = r
                        .headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(parse_challenges)
                        .collect();
                    let value = self.authorize(host, scope, creds, &challenges).await?;
                    self.auth.lock().unwrap().insert(key.clone(), value);
                    continue;
                }
                Ok(r) if retry && (r.status().is_server_error() || r.status().as_u16() == 429) => {
                    let status = r.status();
                    let body = r.bytes().await.unwrap_or_default();
                    from_response(status, &body)
                }
                Ok(r) => return Ok(r),
                Err(e) => Error::Transport(describe_transport(&e)),
            };
            if !retry || attempt >= self.config.attempts || !failure.is_transient() {
                return Err(failure);
            }
            let delay = self.config.backoff * 2u32.saturating_pow(attempt - 1);
            tracing::debug!(
                host,
                attempt,
                ?delay,
                "registry request failed, retrying: {failure}"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Reads an error answer into an [`Error`].
    async fn fail(resp: Response) -> Error {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        from_response(status, &body)
    }

    /// `GET /v2/`: checks that the registry answers and accepts the
    /// credentials (what `login` does).
    pub async fn ping(&self, host: &str, creds: &Credentials) -> Result<()> {
        let http = self.http.clone();
        let resp = self
            .send(host, "", creds, true, &move |b| {
                http.get(format!("{b}/v2/"))
            })
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        let base = self.base(host).await;
        let status = resp.status();
        Err(match Self::fail(resp).await {
            Error::Unauthorized(_) => Error::Unauthorized(format!(
                "login attempt to {base}/v2/ failed with status: {status}"
            )),
            e => e,
        })
    }

    /// Fetches a manifest (or index) by tag or digest: its bytes, media
    /// type and digest. A digest reference is verified against the bytes.
    pub async fn manifest(
        &self,
        host: &str,
        repo: &str,
        reference: &str,
        creds: &Credentials,
    ) -> Result<(Bytes, String, String)> {
        let scope = format!("repository:{repo}:pull");
        let http = self.http.clone();
        let url_tail = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .send(host, &scope, creds, true, &move |b| {
                http.get(format!("{b}{url_tail}"))
                    .header(ACCEPT, media::MANIFEST_ACCEPT)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(match Self::fail(resp).await {
                Error::NotFound(m) => {
                    Error::NotFound(format!("manifest for {repo}:{reference} not found: {m}"))
                }
                e => e,
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MANIFEST_MAX)
        {
            return Err(Error::Protocol(format!(
                "manifest of {repo}:{reference} is larger than {MANIFEST_MAX} bytes"
            )));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let body = read_limited(resp, MANIFEST_MAX).await?;
        let digest = crate::sha256_digest(&body);
        if reference.contains(':') && reference != digest {
            return Err(Error::Protocol(format!(
                "manifest of {repo}@{reference} does not match its digest (got {digest})"
            )));
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::Protocol(format!("manifest of {repo}:{reference} is not JSON: {e}"))
        })?;
        // The document's own mediaType wins over a generic Content-Type.
        let media_type = match media::sniff_manifest(&doc) {
            Some(m) => m.to_string(),
            None if media::is_index(&content_type) || media::is_manifest(&content_type) => {
                content_type
            }
            None => {
                return Err(Error::Protocol(format!(
                    "unsupported manifest media type {content_type:?} for {repo}:{reference}"
                )))
            }
        };
        Ok((body, media_type, digest))
    }

    /// Starts fetching a blob at `offset`. Returns the response (its body
    /// streams the data) and the offset the data really starts at: 0 when
    /// the registry ignored the Range.
    pub async fn blob(
        &self,
        host: &str,
        repo: &str,
        digest: &str,
        offset: u64,
        creds: &Credentials,
    ) -> Result<(Response, u64)> {
        let scope = format!("repository:{repo}:pull");
        let http = self.http.clone();
        let tail = format!("/v2/{repo}/blobs/{digest}");
        let resp = self
            .send(host, &scope, creds, true, &move |b| {
                let r = http.get(format!("{b}{tail}"));
                if offset > 0 {
                    r.header("Range", format!("bytes={offset}-"))
                } else {
                    r
                }
            })
            .await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => Ok((resp, offset)),
            s if s.is_success() => Ok((resp, 0)),
            _ => Err(match Self::fail(resp).await {
                Error::NotFound(m) => Error::NotFound(format!("blob {digest} of {repo}: {m}")),
                e => e,
            }),
        }
    }

    /// Starts fetching a blob from a plain URL (a foreign layer's `urls`),
    /// without credentials, from `offset`. Like [`Client::blob`], returns
    /// where the data really starts.
    pub async fn fetch_url(&self, url: &str, offset: u64) -> Result<(Response, u64)> {
        let mut req = self.http.get(url);
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Transport(describe_transport(&e)))?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => Ok((resp, offset)),
            s if s.is_success() => Ok((resp, 0)),
            _ => Err(Self::fail(resp).await),
        }
    }

    /// Fetches a small blob (a config) whole and checks its digest.
    pub async fn blob_bytes(
        &self,
        host: &str,
        repo: &str,
        digest: &str,
        limit: usize,
        creds: &Credentials,
    ) -> Result<Bytes> {
        let (resp, _) = self.blob(host, repo, digest, 0, creds).await?;
        let body = read_limited(resp, limit).await?;
        let got = crate::sha256_digest(&body);
        if got != digest {
            return Err(Error::Protocol(format!(
                "blob {digest} of {repo} does not match its digest (got {got})"
            )));
        }
        Ok(body)
    }

    /// `HEAD` a blob: its size if the repository has it.
    pub async fn blob_exists(
        &self,
        host: &str,
        repo: &str,
        digest: &str,
        creds: &Credentials,
    ) -> Result<Option<u64>> {
        let scope = format!("repository:{repo}:pull,push");
        let http = self.http.clone();
        let tail = format!("/v2/{repo}/blobs/{digest}");
        let resp = self
            .send(host, &scope, creds, true, &move |b| {
                http.head(format!("{b}{tail}"))
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(resp.content_length().unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::fail(resp).await),
        }
    }

    /// Starts an upload, asking to mount `digest` from `from` (another
    /// repository of the same registry) when given.
    pub async fn start_upload(
        &self,
        host: &str,
        repo: &str,
        mount: Option<(&str, &str)>,
        creds: &Credentials,
    ) -> Result<Upload> {
        let mut scope = format!("repository:{repo}:pull,push");
        if let Some((_, from)) = mount {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        let http = self.http.clone();
        let mut tail = format!("/v2/{repo}/blobs/uploads/");
        if let Some((digest, from)) = mount {
            tail.push_str(&format!("?mount={digest}&from={from}"));
        }
        let resp = self
            .send(host, &scope, creds, true, &move |b| {
                http.post(format!("{b}{tail}"))
                    .header(reqwest::header::CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Upload::Mounted),
            StatusCode::ACCEPTED | StatusCode::CREATED => {
                let base = self.base(host).await;
                Ok(Upload::Session(location(&base, resp.headers())?))
            }
            _ => Err(Self::fail(resp).await),
        }
    }

    /// Sends one chunk of an upload session (`PATCH`); returns the URL for
    /// the next request.
    pub async fn upload_chunk(
        &self,
        host: &str,
        repo: &str,
        session: &str,
        start: u64,
        data: Bytes,
        creds: &Credentials,
    ) -> Result<String> {
        let scope = format!("repository:{repo}:pull,push");
        let http = self.http.clone();
        let url = session.to_string();
        let end = start + data.len() as u64 - 1;
        let resp = self
            .send(host, &scope, creds, false, &move |_| {
                http.patch(url.as_str())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("Content-Range", format!("{start}-{end}"))
                    .body(data.clone())
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Self::fail(resp).await);
        }
        let base = self.base(host).await;
        location(&base, resp.headers())
    }

    /// Finishes an upload session with its last data (may be empty): `PUT
    /// ?digest=`. The registry checks the digest.
    pub async fn finish_upload(
        &self,
        host: &str,
        repo: &str,
        session: &str,
        digest: &str,
        data: Bytes,
        creds: &Credentials,
    ) -> Result<()> {
        let scope = format!("repository:{repo}:pull,push");
        let http = self.http.clone();
        let sep = if session.contains('?') { '&' } else { '?' };
        let url = format!("{session}{sep}digest={digest}");
        let resp = self
            .send(host, &scope, creds, false, &move |_| {
                http.put(url.as_str())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(data.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::fail(resp).await);
        }
        Ok(())
    }

    /// Uploads a manifest under a tag or digest; returns its digest.
    pub async fn put_manifest(
        &self,
        host: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
        creds: &Credentials,
    ) -> Result<String> {
        let scope = format!("repository:{repo}:pull,push");
        let http = self.http.clone();
        let tail = format!("/v2/{repo}/manifests/{reference}");
        let mt = media_type.to_string();
        let digest = crate::sha256_digest(&body);
        let resp = self
            .send(host, &scope, creds, true, &move |b| {
                http.put(format!("{b}{tail}"))
                    .header(CONTENT_TYPE, mt.as_str())
                    .body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Self::fail(resp).await);
        }
        Ok(digest)
    }

    /// Fetches every page of a paginated listing (`Link: <...>; rel="next"`)
    /// and gives each page's JSON to `take`.
    async fn pages(
        &self,
        host: &str,
        scope: &str,
        creds: &Credentials,
        first: String,
        mut take: impl FnMut(serde_json::Value),
    ) -> Result<()> {
        let mut next = Some(first);
        while let Some(tail) = next.take() {
            let http = self.http.clone();
            let t = tail.clone();
            let resp = self
                .send(host, scope, creds, true, &move |b| {
                    http.get(format!("{b}{t}"))
                })
                .await?;
            if !resp.status().is_success() {
                return Err(Self::fail(resp).await);
            }
            next = next_link(resp.headers());
            let page = serde_json::from_slice(&read_limited(resp, 16 << 20).await?)
                .map_err(|e| Error::Protocol(format!("{tail} of {host}: {e}")))?;
            take(page);
        }
        Ok(())
    }

    /// Tags of a repository (`/v2/NAME/tags/list`, every page).
    pub async fn tags(&self, host: &str, repo: &str, creds: &Credentials) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let scope = format!("repository:{repo}:pull");
        let first = format!("/v2/{repo}/tags/list?n=1000");
        self.pages(host, &scope, creds, first, |page| {
            out.extend(strings(&page["tags"]));
        })
        .await?;
        Ok(out)
    }

    /// Repository names of the registry (`/v2/_catalog`, every page).
    pub async fn catalog(&self, host: &str, creds: &Credentials) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let first = "/v2/_catalog?n=1000".to_string();
        self.pages(host, "registry:catalog:*", creds, first, |page| {
            out.extend(strings(&page["repositories"]));
        })
        .await?;
        Ok(out)
    }

    /// Searches the registry: Docker Hub's `/v1/search` when the registry
    /// has it (descriptions, stars, official), else the catalog filtered by
    /// `term`.
    pub async fn search(
        &self,
        host: &str,
        term: &str,
        limit: usize,
        creds: &Credentials,
    ) -> Result<Vec<SearchResult>> {
        #[derive(Deserialize)]
        struct V1 {
            #[serde(default)]
            results: Vec<V1Result>,
        }
        #[derive(Deserialize)]
        struct V1Result {
            #[serde(default)]
            name: String,
            #[serde(default)]
            description: String,
            #[serde(default)]
            star_count: u64,
            #[serde(default)]
            is_official: bool,
        }
        let http = self.http.clone();
        let q = [("q", term.to_string()), ("n", limit.to_string())];
        let v1 = self
            .send(host, "", creds, true, &move |b| {
                http.get(format!("{b}/v1/search")).query(&q)
            })
            .await;
        if let Ok(resp) = v1 {
            if resp.status().is_success() {
                if let Ok(page) = serde_json::from_slice::<V1>(&read_limited(resp, 16 << 20).await?)
                {
                    return Ok(page
                        .results
                        .into_iter()
                        .take(limit)
                        .map(|r| SearchResult {
                            name: r.name,
                            description: r.description,
                            stars: r.star_count,
                            official: r.is_official,
                        })
                        .collect());
                }
            }
        }
        let term = term.to_lowercase();
        Ok(self
            .catalog(host, creds)
            .await?
            .into_iter()
            .filter(|n| n.to_lowercase().contains(&term))
            .take(limit)
            .map(|name| SearchResult {
                name,
                ..Default::default()
            })
            .collect())
    }
}

/// The strings of a JSON array (none for null or anything else).
fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The next page of a paginated answer (`Link: </v2/...>; rel="next"`).
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get(reqwest::header::LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.split(';').next())
        .map(|u| {
            u.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .filter(|u| u.starts_with('/'))
}

/// The absolute URL of a `Location` header.
fn location(base: &str, headers: &HeaderMap) -> Result<String> {
    let loc = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Protocol("upload answer without a Location".into()))?;
    Ok(
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{base}{loc}")
        } else {
            format!("{base}/{loc}")
        },
    )
}

/// Reads a body, refusing more than `limit` bytes.
async fn read_limited(mut resp: Response, limit: usize) -> Result<Bytes> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::Transport(describe_transport(&e)))?
    {
        if out.len() + chunk.len() > limit {
            return Err(Error::Protocol(format!("answer larger than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// A transport error with its causes ("connection refused" is deep inside).
pub(crate) fn describe_transport(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_insecure_by_default() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.4.5",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "registry.example:443"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn upload_locations() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LOCATION,
            "/v2/r/blobs/uploads/u?_state=x".parse().unwrap(),
        );
        assert_eq!(
            location("http://h:5000", &h).unwrap(),
            "http://h:5000/v2/r/blobs/uploads/u?_state=x"
        );
        h.insert(
            reqwest::header::LOCATION,
            "https://other/up".parse().unwrap(),
        );
        assert_eq!(location("http://h", &h).unwrap(), "https://other/up");
    }

    #[test]
    fn scopes() {
        assert_eq!(
            scope_params("repository:a:pull,push repository:b:pull"),
            vec![
                ("scope", "repository:a:pull,push"),
                ("scope", "repository:b:pull")
            ]
        );
    }
}
