//! The engine's event log (docker's `events`): a bounded ring of past events
//! plus a live broadcast, and the `Events` service that serves both.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::gateway::v1::events_server::Events;
use berth_proto::gateway::v1::{Event as ApiEvent, EventsRequest, StringList};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::Inner;

/// How many past events are kept (docker keeps 256; `since` is more useful
/// with more).
const CAPACITY: usize = 10_000;

/// One recorded event and the namespace it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub ns: String,
    pub event: ApiEvent,
}

/// Past events and the live feed.
pub(crate) struct EventLog {
    ring: Mutex<VecDeque<Recorded>>,
    live: broadcast::Sender<Recorded>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            ring: Mutex::new(VecDeque::with_capacity(1024)),
            live: broadcast::channel(4096).0,
        }
    }
}

fn now_nanos() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or_else(|| chrono::Utc::now().timestamp() * 1_000_000_000)
}

impl EventLog {
    fn record(&self, rec: Recorded) {
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            // Times never go backwards in the log, so `since` cuts cleanly.
            let mut rec = rec;
            if let Some(last) = ring.back() {
                if rec.event.time_nano <= last.event.time_nano {
                    rec.event.time_nano = last.event.time_nano + 1;
                }
            }
            if ring.len() == CAPACITY {
                ring.pop_front();
            }
            ring.push_back(rec.clone());
            // Sent under the lock so live subscribers see the ring's order.
            let _ = self.live.send(rec);
        }
    }

    /// Subscribes to live events, and returns the past ones at the same
    /// instant (so nothing is missed or seen twice).
    fn snapshot(&self) -> (Vec<Recorded>, broadcast::Receiver<Recorded>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.live.subscribe();
        (ring.iter().cloned().collect(), rx)
    }
}

impl Inner {
    /// Records an event of `typ` ("container", "image") with `action`
    /// ("start", "pause", ...) about object `id` in namespace `ns`.
    pub(crate) fn emit(
        &self,
        ns: &str,
        typ: &str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        self.event_log.record(Recorded {
            ns: ns.to_string(),
            event: ApiEvent {
                r#type: typ.to_string(),
                action: action.to_string(),
                id: id.to_string(),
                attributes: attributes.into_iter().collect(),
                time_nano: now_nanos(),
                scope: "local".into(),
            },
        });
    }

    /// Records a container event; the attributes get the container's name,
    /// image and labels as docker's do, plus `extra` (exitCode, signal...).
    pub(crate) fn emit_container(
        &self,
        ns: &str,
        id: &str,
        action: &str,
        extra: &[(&str, String)],
    ) {
        let mut attrs = BTreeMap::new();
        if let Some(rec) = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.to_string(), id.to_string()))
        {
            for (k, v) in &rec.config.labels {
                attrs.insert(k.clone(), v.clone());
            }
            attrs.insert("name".into(), rec.name.clone());
            attrs.insert("image".into(), rec.config.image.clone());
        }
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.emit(ns, "container", action, id, attrs);
    }

    /// Records an image event with the image's `name` attribute.
    pub(crate) fn emit_image(&self, ns: &str, id: &str, action: &str, name: &str) {
        let mut attrs = BTreeMap::new();
        attrs.insert("name".to_string(), name.to_string());
        self.emit(ns, "image", action, id, attrs);
    }
}

/// Parses a Go duration such as "10m", "1h30m", "1.5s", "300ms".
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Parses a time as docker's `--since`/`--until` take it: RFC 3339, Unix
/// seconds (fractional allowed), or a duration meaning that long before
/// `now_ns`. Returns Unix nanoseconds; `None` for an empty string.
pub(crate) fn parse_time(s: &str, now_ns: i64) -> Result<Option<i64>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Some(t) = berth_common::time::parse_rfc3339(s) {
        return Ok(Some(t.timestamp_nanos_opt().unwrap_or(i64::MAX)));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(Some(t.and_utc().timestamp_nanos_opt().unwrap_or(0)));
        }
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
        let secs: i64 = secs
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("invalid timestamp: {s}")))?;
        let mut frac = frac.to_string();
        frac.truncate(9);
        while frac.len() < 9 {
            frac.push('0');
        }
        let nanos: i64 = frac.parse().unwrap_or(0);
        return Ok(Some(
            secs.saturating_mul(1_000_000_000).saturating_add(nanos),
        ));
    }
    if let Some(d) = parse_duration(s) {
        let d = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        return Ok(Some(now_ns.saturating_sub(d)));
    }
    Err(Error::InvalidArgument(format!(
        "failed to parse value as time or duration: \"{s}\""
    )))
}

/// docker's event filters: values of one key are alternatives, keys must
/// all match.
struct Filter(HashMap<String, Vec<String>>);

impl Filter {
    fn parse(filters: HashMap<String, StringList>) -> Result<Self> {
        const KEYS: [&str; 6] = ["type", "event", "container", "image", "label", "scope"];
        let mut out = HashMap::new();
        for (k, v) in filters {
            if !KEYS.contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!("invalid filter '{k}'")));
            }
            if !v.values.is_empty() {
                out.insert(k, v.values);
            }
        }
        Ok(Filter(out))
    }

    fn matches(&self, e: &ApiEvent) -> bool {
        self.0.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "type" => e.r#type == *v,
                "event" => e.action == *v || e.action.split(':').next() == Some(v.as_str()),
                "scope" => e.scope == *v,
                "container" => {
                    e.r#type == "container"
                        && (e.id == *v
                            || (v.len() >= 2 && e.id.starts_with(v.as_str()))
                            || e.attributes.get("name") == Some(v))
                }
                "image" => {
                    let image = if e.r#type == "image" {
                        e.attributes.get("name").cloned().unwrap_or_default()
                    } else {
                        e.attributes.get("image").cloned().unwrap_or_default()
                    };
                    let strip = |s: &str| s.strip_suffix(":latest").unwrap_or(s).to_string();
                    (e.r#type == "image"
                        && e.id
                            .trim_start_matches("sha256:")
                            .starts_with(v.trim_start_matches("sha256:"))
                        && v.len() >= 4)
                        || (!image.is_empty() && strip(&image) == strip(v))
                }
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => e.attributes.get(lk) == Some(&lv.to_string()),
                    None => e.attributes.contains_key(v.as_str()),
                },
                _ => false,
            })
        })
    }
}

type EventStream = ReceiverStream<std::result::Result<ApiEvent, Status>>;

/// Serves `berth.gateway.v1.Events`.
pub struct EventsApi(pub(crate) Arc<Inner>);

#[tonic::async_trait]
impl Events for EventsApi {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        req: Request<EventsRequest>,
    ) -> std::result::Result<Response<Self::SubscribeStream>, Status> {
        let ns = berth_common::namespace_of(&req)?;
        let r = req.into_inner();
        let now = now_nanos();
        let since = parse_time(&r.since, now)?;
        let until = parse_time(&r.until, now)?;
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(Error::InvalidArgument(
                    "`since` time cannot be after `until` time".into(),
                )
                .into());
            }
        }
        let filter = Filter::parse(r.filters)?;
        let (past, mut live) = self.0.event_log.snapshot();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let wanted = |rec: &Recorded| rec.ns == ns && filter.matches(&rec.event);
            let mut last = i64::MIN;
            if let Some(since) = since {
                for rec in past.iter().filter(|r| r.event.time_nano >= since) {
                    if until.is_some_and(|u| rec.event.time_nano > u) {
                        return;
                    }
                    last = rec.event.time_nano;
                    if wanted(rec) && tx.send(Ok(rec.event.clone())).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let deadline = until.map(|u| {
                    let left = u.saturating_sub(now_nanos()).max(0);
                    tokio::time::Instant::now() + Duration::from_nanos(left as u64)
                });
                let next = async {
                    match deadline {
                        Some(d) => tokio::time::timeout_at(d, live.recv()).await.ok(),
                        None => Some(live.recv().await),
                    }
                };
                let got = tokio::select! {
                    got = next => got,
                    _ = tx.closed() => return,
                };
                match got {
                    None => return, // until reached
                    Some(Ok(rec)) => {
                        if rec.event.time_nano <= last
                            || since.is_some_and(|s| rec.event.time_nano < s)
                        {
                            continue;
                        }
                        if until.is_some_and(|u| rec.event.time_nano > u) {
                            return;
                        }
                        if wanted(&rec) && tx.send(Ok(rec.event)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(broadcast::error::RecvError::Lagged(n))) => {
                        tracing::warn!("events subscriber lagged; {n} events skipped");
                    }
                    Some(Err(broadcast::error::RecvError::Closed)) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn times() {
        let now = 2_000_000_000 * 1_000_000_000i64;
        assert_eq!(parse_time("", now).unwrap(), None);
        assert_eq!(
            parse_time("1700000000.5", now).unwrap(),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now).unwrap(),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("10s", now).unwrap(), Some(now - 10_000_000_000));
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn filters() {
        let ev = ApiEvent {
            r#type: "container".into(),
            action: "die".into(),
            id: "abcdef".into(),
            attributes: [
                ("name".to_string(), "web".to_string()),
                ("image".to_string(), "busybox".to_string()),
                ("tier".to_string(), "front".to_string()),
            ]
            .into_iter()
            .collect(),
            time_nano: 1,
            scope: "local".into(),
        };
        let f = |pairs: &[(&str, &str)]| {
            let mut m: HashMap<String, StringList> = HashMap::new();
            for (k, v) in pairs {
                m.entry(k.to_string())
                    .or_default()
                    .values
                    .push(v.to_string());
            }
            Filter::parse(m).unwrap()
        };
        assert!(f(&[]).matches(&ev));
        assert!(f(&[("type", "container"), ("event", "die")]).matches(&ev));
        assert!(f(&[("event", "start"), ("event", "die")]).matches(&ev));
        assert!(!f(&[("event", "start")]).matches(&ev));
        assert!(f(&[("container", "web")]).matches(&ev));
        assert!(f(&[("container", "abc")]).matches(&ev));
        assert!(f(&[("image", "busybox:latest")]).matches(&ev));
        assert!(f(&[("label", "tier=front")]).matches(&ev));
        assert!(f(&[("label", "tier")]).matches(&ev));
        assert!(!f(&[("label", "tier=back")]).matches(&ev));
        assert!(Filter::parse(
            [("bogus".to_string(), StringList::default())]
                .into_iter()
                .collect()
        )
        .is_err());
    }
}
