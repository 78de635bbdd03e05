//! Cluster mode: any number of identical instances over NATS JetStream
//! and one PostgreSQL (`--nats nats://…,nats://… --database postgres://…`).
//!
//! An instance has two halves, and neither keeps state another needs:
//!
//! - **Front-ends.** Every listener (the embedded MQTT broker, HTTP,
//!   CoAP, serial lines) hands its frames to a [`FrontEnd`], through the
//!   same [`HubHandle::receive`] as alone. The front-end checks the frame's
//!   header and the path it came by and queues it. Its publisher takes
//!   what waits in the queue, up to [`BATCH_FRAMES`] frames, as one
//!   message (a [`batch`]) on `{prefix}.frames.batch` to the stream
//!   [`STREAM`] (replicated on as many NATS nodes as `--nats-replicas`
//!   says), with the digest of its bytes as the message id, so that a
//!   message published twice is kept once. It has [`PUBLISHING`] messages
//!   out at most: while they wait for the stream, frames gather for the
//!   next, so a quiet front-end sends each frame at once and a busy one
//!   pays the stream's replication once for many. Then the front-end
//!   waits for each frame's answer on `{prefix}.down.{device}`, which it
//!   subscribes to from the device's first frame until it has been silent
//!   for [`FOLLOW_IDLE`]: the instance that holds the device's connection
//!   is the one that forwards its downlink.
//! - **Workers.** One per instance, all on the durable consumer
//!   [`WORKERS`]. A worker takes the messages that wait, in groups of up
//!   to [`MAX_GROUP`] frames, and hands their frames to its hub, which
//!   verifies them, stores their records in PostgreSQL and commits. Only
//!   then are the messages acknowledged to the stream, and only then is
//!   each frame's response (the acknowledgement, with the config,
//!   commands and key waiting for the device) published on
//!   `{prefix}.down.{device}`, with the digest of the frame it answers.
//!
//! Nothing is acknowledged to a device before its commit. A worker that
//! dies before it acknowledges a message leaves it to the stream, which
//! hands it to another worker after [`ACK_WAIT`]; if the first had
//! committed, its frames are replays and are refused, and a device that
//! never got its acknowledgement sends the records again, which are then
//! duplicates: stored once, acknowledged. A frame that comes twice (a
//! broker's redelivery, a device that failed over) is in two messages:
//! the second is a replay, refused, and the answer to the first goes to
//! whichever copy waits. Two workers never change one device's state at
//! once: each group locks its devices in PostgreSQL, in ascending order
//! ([`telemark_server::Store::claim_all`]).
//!
//! Work done once for all (silent devices, expired commands,
//! notifications) is done by the instance that leads
//! ([`crate::CloudStore::lead`]); rules are judged by the worker
//! that stored the block, each rule's runs kept one at a time.
//! `docs/scaling.md` tells how to deploy it and what it was measured at.

pub mod batch;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{self, stream, AckKind};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use telemark_core::wire::seal::Header;
use telemark_server::Refusal;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::hub::{Answer, Arrival, HubHandle, NotAcknowledged, MAX_GROUP};
use crate::store::StoreError;

/// The stream of verified frames, waiting for a worker.
pub const STREAM: &str = "TELEMARK_FRAMES";

/// The durable consumer every instance's worker pulls from.
pub const WORKERS: &str = "telemark-workers";

/// How long a message a worker took may go unacknowledged before the
/// stream hands it to another: shorter than [`ANSWER_WAIT`], so that a
/// frame a dead worker had taken is answered by another while its
/// front-end still waits. A commit that takes longer is not lost: the
/// second worker waits for the first's lock, then finds the frame stored.
pub const ACK_WAIT: Duration = Duration::from_secs(5);

/// How long a front-end waits for a frame's answer. A frame not answered
/// by then stays in the stream; its device, told nothing, sends its
/// records again.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// How long the stream remembers a message id, to keep a frame published
/// twice once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Most frames in one stream message.
pub const BATCH_FRAMES: usize = 64;

/// Most bytes in one stream message (a NATS server takes 1 MiB by
/// default). A frame larger than this goes alone.
pub const BATCH_BYTES: usize = 256 * 1024;

/// Stream messages a front-end has out at once, waiting for the stream
/// to confirm them.
pub const PUBLISHING: usize = 2;

/// How long a front-end follows a device it has had no frame from. A
/// device's answers come only to its frames, so one silent this long has
/// none on the way; its next frame is followed again.
pub const FOLLOW_IDLE: Duration = Duration::from_secs(15 * 60);

/// Frames a front-end's queue holds; a listener past it waits.
const QUEUED: usize = 8192;

/// Stream messages a worker pulls at once.
const PULL: usize = 64;

/// On an answer: the digest of the frame it answers.
const ANSWERS: &str = "Telemark-Answers";
/// On an answer: why the frame was refused (the answer is then empty).
const REFUSED: &str = "Telemark-Refused";

/// Where the cluster's NATS is, and how its stream is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nats {
    /// The servers, `nats://host:port` each; the client reconnects to any.
    pub servers: Vec<String>,
    /// Copies of the stream, one per NATS node (1 to 5). By default the
    /// number of servers given, at most 3.
    pub replicas: Option<usize>,
    /// The subjects' prefix: `{prefix}.frames.*`, `{prefix}.down.*`.
    pub prefix: String,
}

impl Nats {
    /// The copies the stream is made with.
    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or(self.servers.len().clamp(1, 3))
    }
}

/// Why the cluster could not start.
#[derive(Debug)]
pub enum ClusterError {
    /// No NATS server of the list was reached.
    Connect(String),
    /// The stream or the consumer could not be made (too few JetStream
    /// nodes for its replicas, a stream of that name made otherwise).
    Stream(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Connect(e) => write!(f, "NATS not reached: {e}"),
            ClusterError::Stream(e) => write!(f, "the stream {STREAM}: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// The instance's connection to the cluster.
#[derive(Clone)]
pub struct Cluster {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    prefix: String,
}

impl Cluster {
    /// Connects to `nats` as `name` and makes the stream and the
    /// consumer if they are not there yet. The client reconnects by
    /// itself from then on.
    pub async fn connect(nats: &Nats, name: &str) -> Result<Cluster, ClusterError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .connect(nats.servers.as_slice())
            .await
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        let jetstream = jetstream::new(client.clone());
        let config = stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{}.frames.*", nats.prefix)],
            // A message leaves the stream once a worker acknowledges it.
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: nats.replicas(),
            duplicate_window: DUPLICATE_WINDOW,
            ..stream::Config::default()
        };
        let frames = jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|e| ClusterError::Stream(e.to_string()))?;
        frames
            .get_or_create_consumer(
                WORKERS,
                pull::Config {
                    durable_name: Some(WORKERS.into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: 20_000,
                    ..pull::Config::default()
                },
            )
            .await
            .map_err(|e| ClusterError::Stream(format!("its consumer {WORKERS}: {e}")))?;
        Ok(Cluster {
            client,
            jetstream,
            prefix: nats.prefix.clone(),
        })
    }

    fn down(&self, device: u64) -> String {
        format!("{}.down.{device}", self.prefix)
    }

    fn batches(&self) -> String {
        format!("{}.frames.batch", self.prefix)
    }
}

/// What came back for a frame.
enum Reply {
    Response(Vec<u8>),
    Refused(String),
}

/// Front-end figures, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Stream messages published, each a [`batch`] of frames.
    pub batches: u64,
    /// Frames published to the stream.
    pub published: u64,
    /// Of those, ones in a message the stream held already (the same
    /// bytes).
    pub duplicates: u64,
    /// Frames not published: the stream did not confirm them.
    pub unpublished: u64,
    /// Frames answered in time.
    pub answered: u64,
    /// Frames not answered within [`ANSWER_WAIT`].
    pub unanswered: u64,
    /// Answers that came with no frame waiting for them.
    pub late: u64,
    /// Devices followed now: a NATS subscription each (see
    /// [`FOLLOW_IDLE`]).
    pub following: u64,
}

/// A frame in a front-end's queue, and who waits to hear whether the
/// stream took it (whether the message it went in was a duplicate).
struct Queued {
    arrival: Arrival,
    published: oneshot::Sender<Result<bool, String>>,
}

/// A device a front-end follows: when its last frame came, and the task
/// that takes its answers (none while it subscribes).
type Followed = (Instant, Option<JoinHandle<()>>);

/// The half of an instance that meets devices (see the module docs).
pub struct FrontEnd {
    cluster: Cluster,
    queue: mpsc::Sender<Queued>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    followed: Mutex<HashMap<u64, Followed>>,
    figures: Arc<Mutex<Figures>>,
    runtime: tokio::runtime::Handle,
}

impl FrontEnd {
    /// The front-end over `cluster`, its publisher and its tasks on the
    /// runtime it is made on.
    pub fn new(cluster: Cluster) -> Arc<FrontEnd> {
        let (queue, queued) = mpsc::channel(QUEUED);
        let figures = Arc::new(Mutex::new(Figures::default()));
        tokio::spawn(publish(cluster.clone(), queued, Arc::clone(&figures)));
        let front = Arc::new(FrontEnd {
            cluster,
            queue,
            waiting: Mutex::new(HashMap::new()),
            followed: Mutex::new(HashMap::new()),
            figures,
            runtime: tokio::runtime::Handle::current(),
        });
        let weak = Arc::downgrade(&front);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FOLLOW_IDLE / 15);
            loop {
                every.tick().await;
                let Some(front) = weak.upgrade() else { return };
                let idle = take_idle(&mut front.following(), Instant::now());
                for task in idle.into_iter().flatten() {
                    // Its subscription ends with it.
                    task.abort();
                }
            }
        });
        front
    }

    /// Its figures so far.
    pub fn figures(&self) -> Figures {
        let following = self.following().len() as u64;
        Figures {
            following,
            ..*self.figures.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    fn following(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Followed>> {
        self.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, f: impl FnOnce(&mut Figures)) {
        count(&self.figures, f);
    }

    /// Publishes `arrival` to the stream and waits for its answer.
    pub async fn receive(self: &Arc<Self>, arrival: Arrival) -> Answer {
        let named = Header::parse(&arrival.frame).map(|(h, _)| h.device).ok();
        let device = match (arrival.device, named) {
            (_, None) => return Err(NotAcknowledged::Refused(Refusal::Malformed)),
            (Some(expected), Some(named)) if expected != named => {
                return Err(NotAcknowledged::WrongDevice {
                    expected,
                    named: Some(named),
                })
            }
            (_, Some(device)) => device,
        };
        self.follow(device).await?;
        let id = message_id(&arrival.frame);
        let (answer, answered) = oneshot::channel();
        self.waiting_for(|w| w.insert(id.clone(), answer));
        let (published, confirmed) = oneshot::channel();
        let stopping = || "the front-end is stopping".to_string();
        let published = match self.queue.send(Queued { arrival, published }).await {
            Ok(()) => confirmed.await.unwrap_or_else(|_| Err(stopping())),
            Err(_) => Err(stopping()),
        };
        if let Err(e) = published {
            self.waiting_for(|w| w.remove(&id));
            return Err(unavailable(format!(
                "the stream did not take the frame: {e}"
            )));
        }
        match tokio::time::timeout(ANSWER_WAIT, answered).await {
            Ok(Ok(Reply::Response(response))) => {
                self.count(|f| f.answered += 1);
                Ok(response)
            }
            Ok(Ok(Reply::Refused(why))) => {
                self.count(|f| f.answered += 1);
                Err(NotAcknowledged::Declined(why))
            }
            // The same bytes arrived again, and wait in its place.
            Ok(Err(_)) => Err(unavailable(
                "the same frame arrived again; its answer goes there".into(),
            )),
            Err(_) => {
                self.waiting_for(|w| w.remove(&id));
                self.count(|f| f.unanswered += 1);
                Err(unavailable(format!(
                    "no worker answered within {} s; the frame waits in the stream",
                    ANSWER_WAIT.as_secs()
                )))
            }
        }
    }

    /// [`FrontEnd::receive`], from a thread that is not the runtime's.
    pub fn receive_blocking(self: &Arc<Self>, arrival: Arrival) -> Answer {
        self.runtime.block_on(self.receive(arrival))
    }

    fn waiting_for<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, oneshot::Sender<Reply>>) -> T,
    ) -> T {
        f(&mut self.waiting.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Subscribes to `device`'s answers, once: from its first frame here
    /// on, until it has sent none for [`FOLLOW_IDLE`], this instance
    /// forwards them.
    async fn follow(self: &Arc<Self>, device: u64) -> Result<(), NotAcknowledged> {
        let now = Instant::now();
        {
            let mut following = self.following();
            if let Some((last, _)) = following.get_mut(&device) {
                *last = now;
                return Ok(());
            }
            following.insert(device, (now, None));
        }
        let subscribed = self
            .cluster
            .client
            .subscribe(self.cluster.down(device))
            .await;
        let mut answers = match subscribed {
            Ok(answers) => answers,
            Err(e) => {
                self.following().remove(&device);
                return Err(unavailable(format!("NATS: {e}")));
            }
        };
        let front = Arc::clone(self);
        let task = tokio::spawn(async move {
            while let Some(message) = answers.next().await {
                front.answer(&message);
            }
        });
        match self.following().get_mut(&device) {
            Some((_, held)) => *held = Some(task),
            None => task.abort(),
        }
        Ok(())
    }

    /// Hands an answer to the frame waiting for it.
    fn answer(&self, message: &async_nats::Message) {
        let headers = message.headers.as_ref();
        let Some(id) = headers.and_then(|h| h.get(ANSWERS)) else {
            return;
        };
        let reply = match headers.and_then(|h| h.get(REFUSED)) {
            Some(why) => Reply::Refused(why.to_string()),
            None => Reply::Response(message.payload.to_vec()),
        };
        match self.waiting_for(|w| w.remove(id.as_str())) {
            Some(waiting) => drop(waiting.send(reply)),
            None => self.count(|f| f.late += 1),
        }
    }
}

fn count(figures: &Mutex<Figures>, f: impl FnOnce(&mut Figures)) {
    f(&mut figures.lock().unwrap_or_else(PoisonError::into_inner));
}

/// A front-end's publisher: takes the frames that wait in `queue` as one
/// message, [`PUBLISHING`] messages out at most (see the module docs).
async fn publish(
    cluster: Cluster,
    mut queue: mpsc::Receiver<Queued>,
    figures: Arc<Mutex<Figures>>,
) {
    let slots = Arc::new(Semaphore::new(PUBLISHING));
    let mut next: Option<Queued> = None;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match next.take() {
            Some(q) => q,
            None => match queue.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut bytes = 1 + batch::size_of(&first.arrival);
        let (mut arrivals, mut waiting) = (vec![first.arrival], vec![first.published]);
        while arrivals.len() < BATCH_FRAMES {
            let Ok(q) = queue.try_recv() else { break };
            let size = batch::size_of(&q.arrival);
            if bytes + size > BATCH_BYTES {
                next = Some(q);
                break;
            }
            bytes += size;
            arrivals.push(q.arrival);
            waiting.push(q.published);
        }
        let message = batch::encode(&arrivals);
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id(&message).as_str(),
        );
        let sent = cluster
            .jetstream
            .publish_with_headers(cluster.batches(), headers, message.into())
            .await;
        let figures = Arc::clone(&figures);
        tokio::spawn(async move {
            let confirmed = match sent {
                Ok(confirm) => confirm.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            drop(slot);
            let frames = waiting.len() as u64;
            count(&figures, |f| match &confirmed {
                Ok(ack) => {
                    f.batches += 1;
                    f.published += frames;
                    f.duplicates += if ack.duplicate { frames } else { 0 };
                }
                Err(_) => f.unpublished += frames,
            });
            let outcome = confirmed.map(|ack| ack.duplicate);
            for w in waiting {
                let _ = w.send(outcome.clone());
            }
        });
    }
}

fn unavailable(why: String) -> NotAcknowledged {
    NotAcknowledged::Unstored(StoreError::Unavailable(why))
}

/// Takes out of `followed` the devices last heard [`FOLLOW_IDLE`] or more
/// before `now`; what each held.
fn take_idle<T>(followed: &mut HashMap<u64, (Instant, T)>, now: Instant) -> Vec<T> {
    let idle: Vec<u64> = followed
        .iter()
        .filter(|(_, (last, _))| now.saturating_duration_since(*last) >= FOLLOW_IDLE)
        .map(|(&d, _)| d)
        .collect();
    idle.into_iter()
        .filter_map(|d| followed.remove(&d).map(|(_, held)| held))
        .collect()
}

/// A message's id, and a frame's: the first 128 bits of its SHA-256, in
/// hex.
fn message_id(frame: &[u8]) -> String {
    Sha256::digest(frame)
        .iter()
        .take(16)
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Takes frames from the stream for `hub` until `stop` turns true (see
/// the module docs), pulling again whenever the pull breaks.
pub async fn work(hub: HubHandle, cluster: Cluster, mut stop: watch::Receiver<bool>) {
    let mut away = false;
    while !*stop.borrow() {
        let pulled = async {
            let frames = cluster
                .jetstream
                .get_stream(STREAM)
                .await
                .map_err(|e| e.to_string())?;
            let consumer: jetstream::consumer::Consumer<pull::Config> = frames
                .get_consumer(WORKERS)
                .await
                .map_err(|e| e.to_string())?;
            consumer
                .stream()
                .max_messages_per_batch(PULL)
                // A pull lasts 3 s: the stream stops handing messages to
                // a dead worker's pull that soon (what it handed over
                // comes back after ACK_WAIT).
                .heartbeat(Duration::from_secs(1))
                .expires(Duration::from_secs(3))
                .messages()
                .await
                .map_err(|e| e.to_string())
        };
        let mut messages = match pulled.await {
            Ok(messages) => messages,
            Err(e) => {
                if !away {
                    tracing::warn!(error = %e, "worker: the stream not reached; trying again");
                    away = true;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), stop.changed()).await;
                continue;
            }
        };
        if away {
            tracing::info!("worker: pulling from the stream again");
            away = false;
        }
        loop {
            let first = tokio::select! {
                next = messages.next() => next,
                _ = stop.wait_for(|&s| s) => return,
            };
            let first = match first {
                Some(Ok(m)) => m,
                // A missed heartbeat, a leader that moved: the pull goes
                // on, or ends and is made again.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "worker: pull");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => break,
            };
            let read = |m: jetstream::Message| {
                let frames = batch::decode(&m.payload);
                (m, frames)
            };
            let mut group = vec![read(first)];
            let mut frames = group
                .iter()
                .map(|(_, f)| f.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
            while frames < MAX_GROUP {
                match futures_util::FutureExt::now_or_never(messages.next()) {
                    Some(Some(Ok(m))) => {
                        let (m, read) = read(m);
                        frames += read.as_ref().map_or(0, Vec::len);
                        group.push((m, read));
                    }
                    _ => break,
                }
            }
            take(&hub, &cluster, group).await;
        }
    }
}

/// A message a worker took, and its frames as read.
type Taken = (jetstream::Message, Result<Vec<Arrival>, batch::BatchError>);

/// Stores the frames of one group of messages through `hub`, then
/// acknowledges each message and answers each frame as its outcome says.
async fn take(hub: &HubHandle, cluster: &Cluster, group: Vec<Taken>) {
    let mut messages = Vec::with_capacity(group.len());
    let mut entries: Vec<(usize, Arrival)> = Vec::new();
    for (m, read) in group {
        match read {
            Ok(arrivals) => {
                entries.extend(arrivals.into_iter().map(|a| (messages.len(), a)));
                messages.push(m);
            }
            Err(e) => {
                tracing::warn!(error = %e, "worker: a stream message that is not a batch; dropped");
                let _ = m.ack_with(AckKind::Term).await;
            }
        }
    }
    // Devices in ascending order, so that groups lock them in one order;
    // each device's frames keep theirs.
    entries.sort_by_key(|(_, a)| device_of(&a.frame));
    let (owners, arrivals): (Vec<usize>, Vec<Arrival>) = entries.into_iter().unzip();
    if arrivals.is_empty() {
        return;
    }
    let frames: Vec<(u64, String)> = arrivals
        .iter()
        .map(|a| (device_of(&a.frame), message_id(&a.frame)))
        .collect();
    let Some(answers) = hub.call(move |h| h.ingest_group(&arrivals)).await else {
        // The hub is gone (the instance is stopping): the stream keeps
        // them for another.
        for m in &messages {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
        return;
    };
    let mut unstored = vec![false; messages.len()];
    let mut replies = Vec::with_capacity(frames.len());
    for ((&owner, (device, id)), answer) in owners.iter().zip(frames).zip(answers) {
        match answer {
            Ok(response) => replies.push((device, id, response, None)),
            Err(NotAcknowledged::Unstored(e)) => {
                tracing::warn!(device, error = %e, "worker: not stored; the stream hands it out again");
                if let Some(u) = unstored.get_mut(owner) {
                    *u = true;
                }
            }
            Err(refused) => replies.push((device, id, Vec::new(), Some(refused.to_string()))),
        }
    }
    // Committed: the stream lets them go, then the devices hear. A
    // message with a frame not stored comes back, its stored frames then
    // replays.
    for (message, unstored) in messages.iter().zip(unstored) {
        if unstored {
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        } else if let Err(e) = message.double_ack().await {
            tracing::warn!(error = %e, "worker: committed, not acknowledged to the stream (replays to refuse)");
        }
    }
    for (device, id, reply, refused) in replies {
        let mut headers = HeaderMap::new();
        headers.insert(ANSWERS, id.as_str());
        if let Some(why) = &refused {
            headers.insert(REFUSED, why.as_str());
        }
        // An answer lost here is lost like one the broker loses: the
        // device sends again.
        if let Err(e) = cluster
            .client
            .publish_with_headers(cluster.down(device), headers, reply.into())
            .await
        {
            tracing::warn!(device, error = %e, "worker: answer not published");
        }
    }
}

/// The device a frame names; 0 if it names none.
fn device_of(frame: &[u8]) -> u64 {
    Header::parse(frame).map_or(0, |(h, _)| h.device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_is_the_frames_digest() {
        let id = message_id(b"abc");
        // SHA-256("abc") begins ba7816bf 8f01cfea 414140de 5dae2223.
        assert_eq!(id, "ba7816bf8f01cfea414140de5dae2223");
        assert_ne!(message_id(b"abd"), id);
    }

    #[test]
    fn devices_silent_for_the_idle_time_are_no_longer_followed() {
        // Later than the start, not earlier: an instant before the
        // machine's boot does not exist.
        let start = Instant::now();
        let now = start + FOLLOW_IDLE * 2;
        let minute = Duration::from_secs(60);
        let mut followed = HashMap::from([
            (1, (now, "heard now")),
            (
                2,
                (
                    start + FOLLOW_IDLE + minute,
                    "heard a minute before the limit",
                ),
            ),
            (3, (start + FOLLOW_IDLE, "heard at the limit")),
            (4, (start, "long silent")),
        ]);
        let mut idle = take_idle(&mut followed, now);
        idle.sort_unstable();
        assert_eq!(idle, ["heard at the limit", "long silent"]);
        let mut kept: Vec<u64> = followed.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, [1, 2]);
        assert!(take_idle(&mut followed, now).is_empty());
    }

    #[test]
    fn replicas_follow_the_servers_given_up_to_three() {
        let mut nats = Nats {
            servers: vec!["nats://a:4222".into()],
            replicas: None,
            prefix: "telemark".into(),
        };
        assert_eq!(nats.replicas(), 1);
        nats.servers = vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()];
        assert_eq!(nats.replicas(), 3);
        nats.replicas = Some(5);
        assert_eq!(nats.replicas(), 5);
    }
}
