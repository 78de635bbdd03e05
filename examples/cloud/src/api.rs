//! The HTTP API, on axum, and the HTTP ingest devices post frames to.
//!
//! Every `/v1` request but the ingest carries `Authorization: Bearer
//! TOKEN`: the admin token of the settings, or one made through
//! `/v1/tokens`, whose role and group say what it may do
//! ([`crate::access`]). Bodies and answers are JSON; every error is
//! `application/problem+json` (RFC 9457) with a `detail` that says what
//! was wrong.
//!
//! | method and path | what it does |
//! | --- | --- |
//! | `GET /healthz` | 200 when the database answers, 503 when not |
//! | `GET /metrics` | ingest counters and commit latency, Prometheus text |
//! | `POST /v1/up` | a device's frame (`telemark-http`); the response frame back |
//! | `GET /v1/devices` | every device |
//! | `POST /v1/devices` | `{"name", "group"}`: a new device and its key (admin) |
//! | `GET /v1/devices/{id}` | one device, with its reading count and config |
//! | `POST /v1/devices/{id}/revoke` | its frames are refused from now on |
//! | `POST /v1/devices/{id}/rotate` | a new key, sent to the device (sealed with its current one) until it uses it; a device with a flash store keeps it |
//! | `GET /v1/devices/{id}/readings` | `?channel=&from=&to=` (Unix ms; the last day by default), `&points=N` to downsample |
//! | `GET /v1/devices/{id}/alerts` | `?limit=N` (100 by default, at most 10,000): the latest alerts |
//! | `GET /v1/stream` | `?device=ID`: server-sent events of each record stored from now on ([`crate::stream`]) |
//! | `GET /v1/whoami` | the token's role and scope |
//! | `GET /v1/devices/{id}/health` | its latest heartbeat: uptime, readings sampled and sent, bytes on air, retries, evictions, sensor faults, store depth, reset reason, wake-ups |
//! | `GET /v1/devices/{id}/outputs` | the device's outputs, as named: `{"outputs": [{"output": 1, "name": "burner"}]}` |
//! | `PUT /v1/devices/{id}/outputs` (operate) | names them, in place of the names they had |
//! | `GET /v1/devices/{id}/channels` | what each channel measures, as the device reported it: unit, kind, decimals, and the `scale` of a scaled channel's readings |
//! | `GET /v1/devices/{id}/commands` | the commands queued, with their results |
//! | `POST /v1/devices/{id}/commands` | `{"command": "ping" \| "flush" \| "reboot" \| "set_output", "output", "value"}` |
//! | `GET /v1/devices/{id}/config` | the config it should run, and where delivery stands |
//! | `PUT /v1/devices/{id}/group` | `{"group": ID}` or `{"group": null}` (admin) |
//! | `GET /v1/groups` | the groups the token sees |
//! | `POST /v1/groups` | `{"name", "parent"}`: a new group (unscoped admin) |
//! | `GET /v1/tokens` | every token, without its secret (unscoped admin) |
//! | `POST /v1/tokens` | `{"name", "role": "read" \| "operate" \| "admin", "group"}`: a new token; its secret is in the answer, once (unscoped admin) |
//! | `DELETE /v1/tokens/{id}` | revokes it (unscoped admin) |
//! | `PUT /v1/devices/{id}/config` | `{"cbor": "HEX"}`: a config update, checked by the core's validator (a refusal carries the device's `config` code and detail) |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use telemark_core::wire::frame::Command;
use telemark_server::{ConfigState, Refusal};

use crate::access::{self, Caller, Role};
use crate::downsample::downsample;
use crate::hub::{Arrival, Hub, HubError, HubHandle, NotAcknowledged, COMMIT_BOUNDS};
use crate::store::Device;
use crate::store::{ChannelRow, CloudStore, OutputRow, ReadingQuery, StoreError};
use crate::unix_ms;

/// The largest request body: a frame or a JSON document.
pub const MAX_BODY: usize = 64 * 1024;
/// The most readings one answer carries; ask for `points` past it.
pub const MAX_READINGS: usize = 100_000;
/// The most points a downsampled answer carries.
pub const MAX_POINTS: usize = 10_000;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    hub: HubHandle,
    admin_token: Arc<str>,
    events: Option<tokio::sync::broadcast::Sender<crate::stream::Event>>,
    /// Turns true when the service stops: streams end, so that the
    /// server's graceful shutdown does not wait on them.
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Api {
    /// The API over `hub`, opened by `admin_token`.
    pub fn new(hub: HubHandle, admin_token: &str) -> Api {
        Api {
            hub,
            admin_token: admin_token.into(),
            events: None,
            closing: None,
        }
    }

    /// Serves `GET /v1/stream` from `events` ([`crate::stream::channel`],
    /// its watcher on the hub), each stream ending when `closing` turns
    /// true.
    pub fn with_stream(
        mut self,
        events: tokio::sync::broadcast::Sender<crate::stream::Event>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Api {
        self.events = Some(events);
        self.closing = Some(closing);
        self
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route(
                "/openapi.json",
                get(|| async { Json(crate::openapi::document()) }),
            )
            .route(telemark_http::exchange::PATH, post(up))
            .route("/v1/devices", get(devices).post(add_device))
            .route("/v1/devices/{id}", get(device))
            .route("/v1/devices/{id}/revoke", post(revoke))
            .route("/v1/devices/{id}/rotate", post(rotate))
            .route("/v1/devices/{id}/group", axum::routing::put(set_group))
            .route("/v1/groups", get(groups).post(add_group))
            .route(
                "/v1/groups/{id}/silence",
                get(group_silence).put(set_group_silence),
            )
            .route("/v1/tokens", get(tokens).post(add_token))
            .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
            .route("/v1/deliveries", get(deliveries))
            .route("/v1/rules", get(rules).post(add_rule))
            .route("/v1/rules/{id}", axum::routing::delete(remove_rule))
            .route("/v1/devices/{id}/readings", get(readings))
            .route("/v1/devices/{id}/alerts", get(alerts))
            .route("/v1/devices/{id}/channels", get(channels))
            .route("/v1/stream", get(stream))
            .route("/v1/whoami", get(whoami))
            .route("/v1/devices/{id}/health", get(health))
            .route("/v1/devices/{id}/outputs", get(outputs).put(set_outputs))
            .route("/v1/devices/{id}/events", get(events))
            .route("/v1/devices/{id}/commands", get(commands).post(command))
            .route("/v1/devices/{id}/config", get(config).put(set_config))
            .merge(crate::dashboard::router())
            .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such resource") })
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    /// Runs `f` on the hub's thread.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Hub) -> Result<T, Problem> + Send + 'static,
    ) -> Result<T, Problem> {
        self.hub.call(f).await.unwrap_or_else(|| {
            Err(Problem {
                retry_after_s: Some(5),
                ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping")
            })
        })
    }

    /// The caller its bearer token names: the admin token of the
    /// settings, or a token kept in the store.
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Problem::new(
                StatusCode::UNAUTHORIZED,
                "an Authorization: Bearer TOKEN header is needed",
            ))?;
        if same(given.as_bytes(), self.admin_token.as_bytes()) {
            return Ok(Caller::ROOT);
        }
        let digest = access::digest(given);
        let token = self.run(move |hub| Ok(hub.store().token(&digest)?)).await?;
        match token {
            Some(t) => Ok(Caller {
                role: t.role,
                scope: t.group,
            }),
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "the token is not valid",
            )),
        }
    }
}

/// Compares two secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error answer: `application/problem+json`.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
    retry_after_s: Option<u32>,
    /// A refused config's code and detail, the numbers the device's own
    /// config report would carry.
    config: Option<(u8, u16)>,
}

impl Problem {
    fn new(status: StatusCode, detail: &str) -> Problem {
        Problem {
            status,
            detail: detail.to_string(),
            retry_after_s: None,
            config: None,
        }
    }

    fn bad(detail: impl std::fmt::Display) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, &detail.to_string())
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::Taken(_) => Problem::new(StatusCode::CONFLICT, &e.to_string()),
            e if e.is_transient() => Problem {
                retry_after_s: Some(5),
                ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
            },
            e => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }
}

impl From<HubError> for Problem {
    fn from(e: HubError) -> Problem {
        match e {
            HubError::Store(e) => e.into(),
            HubError::UnknownDevice(_) => Problem::new(StatusCode::NOT_FOUND, &e.to_string()),
            HubError::Revoked(_) => Problem::new(StatusCode::CONFLICT, &e.to_string()),
            HubError::Config(c) => Problem {
                config: Some((c.code(), c.detail())),
                ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
            },
            HubError::Invalid(_) | HubError::Rotate(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string())
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Some((code, detail)), Some(fields)) = (self.config, body.as_object_mut()) {
            fields.insert("config".into(), json!({"code": code, "detail": detail}));
        }
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        response
    }
}

/// The role a route needs.
pub trait Needs {
    /// The least role that may call it.
    const ROLE: Role;
}

/// Routes that read.
pub struct ToRead;
/// Routes that send commands and config.
pub struct ToOperate;
/// Routes that add, revoke and move devices, groups and tokens.
pub struct ToAdminister;

impl Needs for ToRead {
    const ROLE: Role = Role::Read;
}
impl Needs for ToOperate {
    const ROLE: Role = Role::Operate;
}
impl Needs for ToAdminister {
    const ROLE: Role = Role::Admin;
}

/// A caller whose bearer token holds at least the role `N` needs.
pub struct Allowed<N>(Caller, std::marker::PhantomData<N>);

impl<N: Needs> FromRequestParts<Api> for Allowed<N> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Allowed<N>, Problem> {
        let caller = api.caller(&parts.headers).await?;
        if !caller.role.allows(N::ROLE) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                &format!(
                    "a {} token may not do this: it needs {}",
                    caller.role,
                    N::ROLE
                ),
            ));
        }
        Ok(Allowed(caller, std::marker::PhantomData))
    }
}

/// Device `id` if `caller` may see it; one outside its scope is answered
/// as one that does not exist.
fn visible(hub: &mut Hub, caller: Caller, id: u64) -> Result<Device, HubError> {
    let d = hub.known(id)?;
    if caller.scope.is_some() {
        let groups = hub.store().groups()?;
        if !caller.sees(&groups, d.group) {
            return Err(HubError::UnknownDevice(id));
        }
    }
    Ok(d)
}

/// An unscoped caller (groups and tokens are the whole service's).
fn unscoped(caller: Caller) -> Result<(), Problem> {
    match caller.scope {
        None => Ok(()),
        Some(_) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "a token scoped to a group may not manage groups or tokens",
        )),
    }
}

/// The device id of the path, decimal or 0x-hexadecimal.
struct DeviceId(u64);

impl<S: Send + Sync> FromRequestParts<S> for DeviceId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<DeviceId, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::bad(e.body_text()))?;
        crate::settings::device_id(&id)
            .map(DeviceId)
            .map_err(Problem::bad)
    }
}

/// The id of the path of a row the service numbers (a token, a rule).
struct RowId(i64);

impl<S: Send + Sync> FromRequestParts<S> for RowId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<RowId, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::bad(e.body_text()))?;
        id.parse()
            .map(RowId)
            .map_err(|e| Problem::bad(format!("id {id}: {e}")))
    }
}

/// A JSON body; one that does not parse is a problem.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Body<T>, Problem> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(Problem {
                status: e.status(),
                ..Problem::bad(e.body_text())
            }),
        }
    }
}

/// The query string; one that does not parse is a problem.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params<T>, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e| Problem::bad(e.body_text()))
    }
}

async fn healthz(State(api): State<Api>) -> Response {
    let probe = api.run(|hub| Ok(hub.store().device(0)?)).await;
    match probe {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(p) => Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..p
        }
        .into_response(),
    }
}

async fn metrics(State(api): State<Api>) -> Result<Response, Problem> {
    let (c, f) = api.run(|hub| Ok((hub.counters(), hub.figures()))).await?;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
    };
    counter(
        "telemark_frames_total",
        "Frames committed and answered.",
        c.frames,
    );
    counter("telemark_records_total", "New records stored.", c.records);
    counter(
        "telemark_readings_total",
        "Readings in new records.",
        c.readings,
    );
    counter(
        "telemark_duplicates_total",
        "Records received again and not stored again.",
        c.duplicates,
    );
    counter(
        "telemark_conflicts_total",
        "Records whose name another payload holds: kept and counted.",
        c.conflicts,
    );
    counter(
        "telemark_store_failures_total",
        "Frames the store failed to commit (not acknowledged).",
        c.store_failures,
    );
    counter(
        "telemark_wrong_device_total",
        "Frames of another device than their topic names.",
        f.wrong_device,
    );
    counter(
        "telemark_frames_throttled_total",
        "Frames of a device over its rate, not taken (its device sends them again).",
        f.throttled,
    );
    if let Some(k) = api.hub.cluster_figures() {
        counter(
            "telemark_cluster_batches_total",
            "Messages this instance's front-ends published to the cluster's stream, each a batch of frames.",
            k.batches,
        );
        counter(
            "telemark_cluster_published_total",
            "Frames this instance's front-ends published to the cluster's stream.",
            k.published,
        );
        counter(
            "telemark_cluster_duplicates_total",
            "Of those, frames in a message the stream held already (the same bytes published again).",
            k.duplicates,
        );
        counter(
            "telemark_cluster_unpublished_total",
            "Frames the stream did not confirm (not acknowledged; their devices send again).",
            k.unpublished,
        );
        counter(
            "telemark_cluster_answered_total",
            "Frames a worker answered in time.",
            k.answered,
        );
        counter(
            "telemark_cluster_unanswered_total",
            "Frames no worker answered in time (they wait in the stream).",
            k.unanswered,
        );
        counter(
            "telemark_cluster_late_answers_total",
            "Answers that came after their frame stopped waiting.",
            k.late,
        );
        out += &format!(
            "# HELP telemark_cluster_devices_followed Devices whose answers this instance follows (a NATS subscription each, until 15 minutes after the device's last frame).\n# TYPE telemark_cluster_devices_followed gauge\ntelemark_cluster_devices_followed {}\n",
            k.following
        );
    }
    out += "# HELP telemark_refused_total Frames refused, by cause.\n# TYPE telemark_refused_total counter\n";
    let r = c.refused;
    for (cause, n) in [
        ("malformed", r.malformed),
        ("unsupported_version", r.unsupported_version),
        ("unknown_device", r.unknown_device),
        ("unknown_key", r.unknown_key),
        ("retired_key", r.retired_key),
        ("bad_tag", r.bad_tag),
        ("unauthenticated", r.unauthenticated),
        ("replayed", r.replayed),
        ("invalid_block", r.invalid_block),
    ] {
        out += &format!("telemark_refused_total{{cause=\"{cause}\"}} {n}\n");
    }
    out += "# HELP telemark_commit_seconds Receive and commit of one group of frames (telemark_frames_total over its count is the mean group).\n# TYPE telemark_commit_seconds histogram\n";
    let mut cumulative = 0;
    for (bound, n) in COMMIT_BOUNDS.iter().zip(f.commit_buckets) {
        cumulative += n;
        out += &format!("telemark_commit_seconds_bucket{{le=\"{bound}\"}} {cumulative}\n");
    }
    out += &format!(
        "telemark_commit_seconds_bucket{{le=\"+Inf\"}} {}\ntelemark_commit_seconds_sum {}\ntelemark_commit_seconds_count {}\n",
        f.commits, f.commit_seconds, f.commits
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// `POST /v1/up`: the frame is the body; the response frame is the
/// answer's, sent only after the commit.
async fn up(State(api): State<Api>, frame: Bytes) -> Response {
    let arrival = Arrival {
        device: None,
        frame: frame.to_vec(),
        received_unix_ms: unix_ms(),
    };
    match api.hub.receive(arrival).await {
        Ok(response) => (
            [(header::CONTENT_TYPE, telemark_http::exchange::CONTENT_TYPE)],
            response,
        )
            .into_response(),
        Err(NotAcknowledged::Refused(r)) => {
            let status = match r {
                Refusal::UnknownDevice(_)
                | Refusal::UnknownKey { .. }
                | Refusal::RetiredKey { .. }
                | Refusal::BadTag
                | Refusal::Unauthenticated(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            Problem::new(status, &format!("frame refused: {r}")).into_response()
        }
        Err(NotAcknowledged::Unstored(e)) => Problem::from(e).into_response(),
        Err(e @ NotAcknowledged::Throttled { retry_after_ms }) => Problem {
            retry_after_s: Some(u32::try_from(retry_after_ms.div_ceil(1000)).unwrap_or(u32::MAX)),
            ..Problem::new(StatusCode::TOO_MANY_REQUESTS, &e.to_string())
        }
        .into_response(),
        Err(e) => Problem::bad(e).into_response(),
    }
}

#[derive(Serialize)]
struct DeviceView {
    id: u64,
    name: String,
    group: Option<i64>,
    created_ms: i64,
    revoked_ms: Option<i64>,
    last_seen_ms: Option<i64>,
    /// `unseen` (never heard), `online`, `offline` (silent too long) or
    /// `revoked`.
    state: &'static str,
    offline_ms: Option<i64>,
}

impl From<crate::Device> for DeviceView {
    fn from(d: crate::Device) -> Self {
        let state = d.state();
        DeviceView {
            id: d.id,
            name: d.name,
            group: d.group,
            created_ms: d.created_ms,
            revoked_ms: d.revoked_ms,
            last_seen_ms: d.last_seen_ms,
            state,
            offline_ms: d.offline_ms,
        }
    }
}

async fn devices(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
) -> Result<Response, Problem> {
    let devices = api
        .run(move |hub| {
            let groups = hub.store().groups()?;
            let all = hub.store().devices()?;
            Ok(all
                .into_iter()
                .filter(|d| caller.sees(&groups, d.group))
                .collect::<Vec<_>>())
        })
        .await?;
    let devices: Vec<DeviceView> = devices.into_iter().map(DeviceView::from).collect();
    Ok(Json(json!({ "devices": devices })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    name: String,
    group: Option<i64>,
}

async fn add_device(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(new): Body<NewDevice>,
) -> Result<Response, Problem> {
    let now = unix_ms() as i64;
    // A scoped admin adds into its own group unless it names one below.
    let group = new.group.or(caller.scope);
    let p = api
        .run(move |hub| {
            if caller.scope.is_some() {
                let groups = hub.store().groups()?;
                if !caller.sees(&groups, group) {
                    return Err(Problem::new(
                        StatusCode::FORBIDDEN,
                        "the group is outside the token's group",
                    ));
                }
            }
            Ok(hub.add_device_in(&new.name, group, now)?)
        })
        .await?;
    let view = json!({
        "device": DeviceView::from(p.device.clone()),
        "key_id": p.key_id,
        "key": p.key_hex(),
        "keys_line": p.keys_line(),
    });
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn config_view(c: &telemark_server::DesiredConfig) -> serde_json::Value {
    let (state, code, detail) = match c.state {
        ConfigState::Pending => ("pending", None, None),
        ConfigState::Applied => ("applied", None, None),
        ConfigState::Refused { code, detail } => ("refused", Some(code), Some(detail)),
    };
    let hex: String = c.cbor.iter().map(|b| format!("{b:02x}")).collect();
    json!({"version": c.version, "cbor": hex, "state": state, "code": code, "detail": detail})
}

async fn device(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
) -> Result<Response, Problem> {
    let (d, count, config, reported) = api
        .run(move |hub| {
            let d = visible(hub, caller, id)?;
            let count = hub.store().reading_count(id)?;
            let config = hub.store().desired_config(id)?;
            Ok((d, count, config, hub.store().reported_config(id)?))
        })
        .await?;
    Ok(Json(json!({
        "device": DeviceView::from(d),
        "readings": count,
        "config": config.as_ref().map(config_view),
        "reported_config": reported,
    }))
    .into_response())
}

async fn revoke(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    DeviceId(id): DeviceId,
) -> Result<Response, Problem> {
    let now = unix_ms() as i64;
    api.run(move |hub| {
        visible(hub, caller, id)?;
        Ok(hub.revoke(id, now)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    DeviceId(id): DeviceId,
) -> Result<Response, Problem> {
    let p = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok(hub.rotate(id)?)
        })
        .await?;
    let view = json!({
        "key_id": p.key_id,
        "key": p.key_hex(),
        "keys_line": p.keys_line(),
    });
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    channel: Option<u16>,
    from: Option<i64>,
    to: Option<i64>,
    points: Option<usize>,
}

async fn readings(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
    Params(q): Params<RangeQuery>,
) -> Result<Response, Problem> {
    let to = q.to.unwrap_or(unix_ms() as i64);
    let from = q.from.unwrap_or(to.saturating_sub(24 * 3600 * 1000));
    if from >= to {
        return Err(Problem::bad(format!(
            "from ({from}) must be before to ({to})"
        )));
    }
    if let Some(p) = q.points {
        if p == 0 || p > MAX_POINTS {
            return Err(Problem::bad(format!("points is 1 to {MAX_POINTS}")));
        }
    }
    let query = ReadingQuery {
        device: id,
        channel: q.channel,
        from_ms: from,
        to_ms: to,
    };
    let readings = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok(hub.store().readings(&query)?)
        })
        .await?;
    if let Some(points) = q.points {
        let points = downsample(&readings, from, to, points);
        return Ok(
            Json(json!({"device": id, "from": from, "to": to, "points": points})).into_response(),
        );
    }
    if readings.len() > MAX_READINGS {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "the range holds {} readings, more than {MAX_READINGS}: narrow it or ask for points=N",
                readings.len()
            ),
        ));
    }
    Ok(Json(json!({"device": id, "from": from, "to": to, "readings": readings})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<u32>,
}

impl Limit {
    /// The limit asked for, 100 if none: 1 to 10,000.
    fn get(&self) -> Result<u32, Problem> {
        match self.limit.unwrap_or(100) {
            limit @ 1..=10_000 => Ok(limit),
            _ => Err(Problem::bad("limit is 1 to 10000")),
        }
    }
}

async fn alerts(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
    Params(q): Params<Limit>,
) -> Result<Response, Problem> {
    latest(api, caller, id, q, "alerts", |store, id, limit| {
        store.alerts(id, limit)
    })
    .await
}

/// A channel as the API shows it: a scaled channel's readings are in
/// steps of `scale` units.
pub fn channel_view(c: &ChannelRow) -> serde_json::Value {
    let (kind, decimals) = c.kind_columns();
    json!({
        "channel": c.channel,
        "unit": format!("{:?}", c.unit),
        "symbol": c.unit.symbol(),
        "kind": kind,
        "decimals": decimals,
        "scale": 10f64.powi(-i32::from(decimals)),
    })
}

/// What the token may do, so that a page shows only what it may use.
async fn whoami(Allowed(caller, _): Allowed<ToRead>) -> Response {
    Json(json!({"role": caller.role.as_str(), "scope": caller.scope})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    device: Option<u64>,
}

/// Server-sent events of every record stored from now on, of the devices
/// the caller sees (or of `?device=ID` alone): [`crate::stream`].
async fn stream(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    Params(q): Params<StreamQuery>,
) -> Result<Response, Problem> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let (Some(events), Some(closing)) = (api.events.clone(), api.closing.clone()) else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no stream on this service",
        ));
    };
    if let Some(id) = q.device {
        api.run(move |hub| Ok(visible(hub, caller, id).map(drop)?))
            .await?;
    }
    let only = q.device;
    // Whether the caller sees a device, asked once per device.
    let seen: std::collections::HashMap<u64, bool> = std::collections::HashMap::new();
    let state = (events.subscribe(), api.hub.clone(), seen, closing);
    let stream = futures_util::stream::unfold(
        state,
        move |(mut rx, hub, mut seen, mut closing)| async move {
            loop {
                if *closing.borrow() {
                    return None;
                }
                let received = tokio::select! {
                    received = rx.recv() => received,
                    _ = closing.changed() => return None,
                };
                let event = match received {
                    Ok(event) => event,
                    Err(RecvError::Lagged(n)) => {
                        let lagged = Event::default().event("lagged").data(n.to_string());
                        return Some((
                            Ok::<_, std::convert::Infallible>(lagged),
                            (rx, hub, seen, closing),
                        ));
                    }
                    Err(RecvError::Closed) => return None,
                };
                let device = event.0;
                if only.is_some_and(|id| id != device) {
                    continue;
                }
                let sees = match (caller.scope, seen.get(&device)) {
                    (None, _) => true,
                    (Some(_), Some(&sees)) => sees,
                    (Some(_), None) => {
                        let sees = hub
                            .call(move |hub| visible(hub, caller, device).is_ok())
                            .await
                            .unwrap_or(false);
                        seen.insert(device, sees);
                        sees
                    }
                };
                if sees {
                    let data = Event::default().data(event.1.as_str());
                    return Some((Ok(data), (rx, hub, seen, closing)));
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn health(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
) -> Result<Response, Problem> {
    let health = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok(hub.store().health(id)?)
        })
        .await?;
    Ok(Json(json!({ "health": health })).into_response())
}

async fn channels(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
) -> Result<Response, Problem> {
    let channels = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok(hub.store().channels(id)?)
        })
        .await?;
    let list: Vec<_> = channels.iter().map(channel_view).collect();
    Ok(Json(json!({ "channels": list })).into_response())
}

async fn events(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
    Params(q): Params<Limit>,
) -> Result<Response, Problem> {
    latest(api, caller, id, q, "events", |store, id, limit| {
        store.events(id, limit)
    })
    .await
}

/// Reads a device's log: the store, the device, the most rows.
type DeviceLog<T> = fn(&mut dyn CloudStore, u64, u32) -> Result<Vec<T>, StoreError>;

/// The latest rows of one of a device's logs (alerts, events), at most
/// `?limit=` (100 unless asked), as `{key: [...]}`.
async fn latest<T: Serialize + Send + 'static>(
    api: Api,
    caller: Caller,
    id: u64,
    q: Limit,
    key: &'static str,
    rows: DeviceLog<T>,
) -> Result<Response, Problem> {
    let limit = q.get()?;
    let list = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok(rows(hub.store(), id, limit)?)
        })
        .await?;
    Ok(Json(json!({ key: list })).into_response())
}

fn command_name(c: Command) -> serde_json::Value {
    match c {
        Command::Ping => json!({"command": "ping"}),
        Command::FlushNow => json!({"command": "flush"}),
        Command::Reboot => json!({"command": "reboot"}),
        Command::SetOutput { output, value } => {
            json!({"command": "set_output", "output": output, "value": value})
        }
        other => json!({"command": format!("{other:?}")}),
    }
}

async fn commands(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
) -> Result<Response, Problem> {
    let rows = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok(hub.store().commands(id)?)
        })
        .await?;
    let list: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|c| {
            let mut v = command_name(c.command);
            v["id"] = json!(c.id);
            v["state"] = json!(c.state());
            v["queued_ms"] = json!(c.queued_ms);
            v["sent_ms"] = json!(c.sent_ms);
            v["expires_ms"] = json!(c.expires_ms);
            v["expired_ms"] = json!(c.expired_ms);
            if let Some((status, value)) = c.result {
                v["result"] = json!({"status": status, "value": value});
            }
            v
        })
        .collect();
    Ok(Json(json!({ "commands": list })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCommand {
    command: String,
    output: Option<u8>,
    value: Option<u32>,
    /// Seconds it is sent unanswered before it expires; the service's
    /// command time if absent.
    ttl_s: Option<u64>,
}

impl NewCommand {
    fn command(&self) -> Result<Command, Problem> {
        crate::rules::parse_command(&self.command, self.output, self.value).map_err(Problem::bad)
    }
}

async fn command(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToOperate>,
    DeviceId(id): DeviceId,
    Body(new): Body<NewCommand>,
) -> Result<Response, Problem> {
    let command = new.command()?;
    let ttl_ms = match new.ttl_s {
        Some(s @ 1..=MAX_TTL_S) => Some(Some(s * 1000)),
        Some(s) => {
            return Err(Problem::bad(format!(
                "ttl_s {s}: 1 to {MAX_TTL_S} seconds, or absent for the service's"
            )))
        }
        None => None,
    };
    let now = unix_ms() as i64;
    let (queued, expires) = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            let ttl = ttl_ms.unwrap_or(hub.command_ttl());
            let queued = hub.queue_command_at(id, command, now, ttl)?;
            Ok((queued, ttl.map(|t| now + t as i64)))
        })
        .await?;
    let mut v = command_name(command);
    v["id"] = json!(queued);
    v["state"] = json!("queued");
    v["queued_ms"] = json!(now);
    v["expires_ms"] = json!(expires);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// The longest a command may be sent unanswered: a year, s.
const MAX_TTL_S: u64 = 31_536_000;

async fn config(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
) -> Result<Response, Problem> {
    let (config, reported) = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok((
                hub.store().desired_config(id)?,
                hub.store().reported_config(id)?,
            ))
        })
        .await?;
    // A device no config was set for runs the one its firmware has.
    let mut view = config.as_ref().map_or_else(
        || json!({"version": null, "cbor": null, "state": "none", "code": null, "detail": null}),
        config_view,
    );
    if let Some(fields) = view.as_object_mut() {
        fields.insert("reported".into(), json!(reported));
    }
    Ok(Json(view).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConfig {
    cbor: String,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

async fn set_config(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToOperate>,
    DeviceId(id): DeviceId,
    Body(new): Body<NewConfig>,
) -> Result<Response, Problem> {
    let cbor = unhex(&new.cbor).ok_or(Problem::bad("cbor: hex digits expected"))?;
    let version = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok(hub.queue_config(id, &cbor)?)
        })
        .await?;
    Ok(Json(json!({"version": version, "state": "pending"})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOutputs {
    outputs: Vec<OutputRow>,
}

async fn outputs(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    DeviceId(id): DeviceId,
) -> Result<Response, Problem> {
    let outputs = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            Ok(hub.store().outputs(id)?)
        })
        .await?;
    Ok(Json(json!({ "outputs": outputs })).into_response())
}

async fn set_outputs(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToOperate>,
    DeviceId(id): DeviceId,
    Body(new): Body<NewOutputs>,
) -> Result<Response, Problem> {
    if new.outputs.len() > 256 {
        return Err(Problem::bad("at most 256 outputs"));
    }
    // By output; one named twice keeps its last name.
    let mut named = std::collections::BTreeMap::new();
    for o in new.outputs {
        let name = crate::name_of(&o.name).ok_or_else(|| {
            Problem::bad(format!("output {}: a name of 1 to 64 characters", o.output))
        })?;
        named.insert(o.output, name.to_string());
    }
    let outputs: Vec<OutputRow> = named
        .into_iter()
        .map(|(output, name)| OutputRow { output, name })
        .collect();
    let kept = api
        .run(move |hub| {
            visible(hub, caller, id)?;
            hub.store().set_outputs(id, &outputs)?;
            Ok(outputs)
        })
        .await?;
    Ok(Json(json!({ "outputs": kept })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    parent: Option<i64>,
}

async fn groups(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
) -> Result<Response, Problem> {
    let groups = api
        .run(move |hub| {
            let all = hub.store().groups()?;
            Ok(all
                .iter()
                .filter(|g| caller.sees(&all, Some(g.id)))
                .cloned()
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(json!({ "groups": groups })).into_response())
}

async fn add_group(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(new): Body<NewGroup>,
) -> Result<Response, Problem> {
    unscoped(caller)?;
    let name = crate::name_of(&new.name)
        .ok_or(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a group name is 1 to 64 printable characters",
        ))?
        .to_string();
    let group = api
        .run(move |hub| Ok(hub.store().add_group(&name, new.parent)?))
        .await?;
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Membership {
    group: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Silence {
    intervals: Option<u32>,
}

/// The group of the path, if the caller sees it.
fn seen_group(hub: &mut Hub, caller: Caller, id: i64) -> Result<(), Problem> {
    let groups = hub.store().groups()?;
    if groups.iter().any(|g| g.id == id) && caller.sees(&groups, Some(id)) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            &format!("no group {id}"),
        ))
    }
}

async fn group_silence(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
    RowId(id): RowId,
) -> Result<Response, Problem> {
    let own = api
        .run(move |hub| {
            seen_group(hub, caller, id)?;
            let own = hub.store().group_silences()?;
            Ok(own.into_iter().find(|(g, _)| *g == id).map(|(_, n)| n))
        })
        .await?;
    Ok(Json(json!({"group": id, "intervals": own})).into_response())
}

async fn set_group_silence(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    RowId(id): RowId,
    Body(s): Body<Silence>,
) -> Result<Response, Problem> {
    if s.intervals.is_some_and(|n| n > 1000) {
        return Err(Problem::bad("intervals is 0 (never) to 1000, or null"));
    }
    api.run(move |hub| {
        seen_group(hub, caller, id)?;
        Ok(hub.store().set_group_silence(id, s.intervals)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_group(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    DeviceId(id): DeviceId,
    Body(m): Body<Membership>,
) -> Result<Response, Problem> {
    api.run(move |hub| {
        visible(hub, caller, id)?;
        if caller.scope.is_some() {
            let groups = hub.store().groups()?;
            if !caller.sees(&groups, m.group) {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "the group is outside the token's group",
                ));
            }
        }
        Ok(hub.store().set_device_group(id, m.group)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
    group: Option<i64>,
}

async fn tokens(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
) -> Result<Response, Problem> {
    unscoped(caller)?;
    let tokens = api.run(|hub| Ok(hub.store().tokens()?)).await?;
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

async fn add_token(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Body(new): Body<NewToken>,
) -> Result<Response, Problem> {
    unscoped(caller)?;
    let secret = access::new_secret().map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("no random source: {e}"),
        )
    })?;
    let digest = access::digest(&secret);
    let now = unix_ms() as i64;
    let token = api
        .run(move |hub| {
            Ok(hub
                .store()
                .add_token(&new.name, &digest, new.role, new.group, now)?)
        })
        .await?;
    let mut view = json!(token);
    // Shown once: the store keeps only its digest.
    view["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// A rule as the API shows it: its id and its spec.
fn rule_view(rule: &crate::rules::Rule) -> serde_json::Value {
    let mut v = json!(rule.spec());
    v["id"] = json!(rule.id);
    v
}

async fn rules(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToRead>,
) -> Result<Response, Problem> {
    let list = api
        .run(move |hub| {
            let rules = hub.rules().to_vec();
            let mut seen = Vec::new();
            for r in rules {
                if visible(hub, caller, r.device).is_ok() && visible(hub, caller, r.target).is_ok()
                {
                    seen.push(rule_view(&r));
                }
            }
            Ok(seen)
        })
        .await?;
    Ok(Json(json!({ "rules": list })).into_response())
}

async fn add_rule(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToOperate>,
    Body(spec): Body<crate::rules::RuleSpec>,
) -> Result<Response, Problem> {
    let rule = api
        .run(move |hub| {
            visible(hub, caller, spec.when.device)?;
            visible(hub, caller, spec.then.device)?;
            Ok(hub.add_rule(&spec)?)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(rule_view(&rule))).into_response())
}

async fn remove_rule(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToOperate>,
    RowId(id): RowId,
) -> Result<Response, Problem> {
    let removed = api
        .run(move |hub| {
            let Some(rule) = hub.rules().iter().find(|r| r.id == id).cloned() else {
                return Ok(false);
            };
            visible(hub, caller, rule.device)?;
            visible(hub, caller, rule.target)?;
            Ok(hub.remove_rule(id)?)
        })
        .await?;
    if removed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            &format!("no rule {id}"),
        ))
    }
}

async fn deliveries(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    Params(q): Params<Limit>,
) -> Result<Response, Problem> {
    unscoped(caller)?;
    let limit = q.get()?;
    let rows = api
        .run(move |hub| Ok(hub.store().deliveries(limit)?))
        .await?;
    Ok(Json(json!({ "deliveries": rows })).into_response())
}

async fn revoke_token(
    State(api): State<Api>,
    Allowed(caller, _): Allowed<ToAdminister>,
    RowId(id): RowId,
) -> Result<Response, Problem> {
    unscoped(caller)?;
    let now = unix_ms() as i64;
    let known = api
        .run(move |hub| Ok(hub.store().revoke_token(id, now)?))
        .await?;
    if known {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            &format!("no token {id}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret!"));
    }
}
