//! Retained messages, kept in memory: rmqtt keeps none by itself (it asks
//! for its retainer plugin), and Home Assistant's discovery needs them.
//! They last as long as the broker; the service publishes its own again
//! whenever it connects.

use std::time::Duration;

use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::types::{Retain, TopicFilter, TopicName};
use rmqtt::Result;

/// rmqtt's in-memory retain tree, switched on.
pub(crate) struct Retained(DefaultRetainStorage);

impl Retained {
    pub(crate) fn new() -> Retained {
        Retained(DefaultRetainStorage::new())
    }
}

#[async_trait::async_trait]
impl RetainStorage for Retained {
    fn enable(&self) -> bool {
        true
    }

    async fn set(&self, topic: &TopicName, retain: Retain, expiry: Option<Duration>) -> Result<()> {
        self.0.set_with_timeout(topic, retain, expiry).await
    }

    async fn get(&self, filter: &TopicFilter) -> Result<Vec<(TopicName, Retain)>> {
        self.0.get_message(filter).await
    }

    async fn count(&self) -> isize {
        self.0.count().await
    }

    async fn max(&self) -> isize {
        self.0.max().await
    }
}
