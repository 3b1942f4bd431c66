//! placeholder until the Redis target lands
use crate::check::Answer;
use crate::config::Target;
use crate::transport::{ConnectError, SaleSnapshot, Transport};
use std::io;
use std::time::Duration;
use tokio::time::Instant;
/// Redis.
pub struct RedisTransport;
impl Transport for RedisTransport {
    async fn connect(_: &Target, _: &str, _: Duration) -> Result<(Self, usize), ConnectError> {
        Err(ConnectError::Refused("todo".into()))
    }
    fn send(&mut self, _: u64, _: u64) {}
    async fn poll(&mut self, _: Instant, _: &mut Vec<(u64, Answer)>) -> io::Result<()> {
        Ok(())
    }
}
/// Snapshot.
pub async fn snapshot(_: &Target, _: &str, _: Duration) -> anyhow::Result<SaleSnapshot> {
    anyhow::bail!("todo")
}
/// Reset.
pub async fn reset(_: &Target, _: &str, _: u32, _: Duration) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
