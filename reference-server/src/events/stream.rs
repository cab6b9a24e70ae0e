//! The Server-Sent Events stream of an organization's events.
//!
//! Loss-free resume: the reader names the last id it has
//! (`Last-Event-ID`); the stream subscribes to the live broadcast FIRST,
//! then sends the log after that id page by page, then the broadcast,
//! skipping what it already sent (ids only grow; the store broadcasts an
//! event only after its commit, so an event is either in the log when it
//! is read or arrives on the broadcast).
//!
//! Bounded: the broadcast is one ring of `EVENT_BROADCAST_CAPACITY`
//! events shared by every reader. A slow reader (actix stops polling the
//! stream while the socket is full) holds no one up and buffers nothing
//! of its own: when the ring has moved past it, it is told it lagged and
//! goes back to reading the log from its last id.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use tokio::sync::broadcast::error::RecvError;

use super::{Event, EventType};
use crate::domain::{DeviceId, OrgId};
use crate::service::Service;
use crate::store::{EventQuery, Order};

/// Events read from the log per step while catching up.
pub const CATCH_UP_PAGE: u32 = 500;
/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Which events a stream carries.
#[derive(Clone, Copy, Debug)]
pub struct Filter {
    pub org: OrgId,
    pub event_type: Option<EventType>,
    pub device: Option<DeviceId>,
}

impl Filter {
    fn matches(&self, e: &Event) -> bool {
        e.body.organization_id == self.org
            && self.event_type.is_none_or(|t| t == e.body.event_type)
            && self.device.is_none_or(|d| e.body.device_id == Some(d))
    }
}

struct State {
    svc: Arc<Service>,
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    stop: tokio::sync::watch::Receiver<bool>,
    filter: Filter,
    /// The last id sent (or named by the reader).
    last: u64,
    /// Caught up with the log: reading the broadcast.
    live: bool,
}

/// One event as an SSE message.
pub fn frame(e: &Event, out: &mut Vec<u8>) {
    let json = serde_json::to_string(e).expect("events serialize");
    out.extend_from_slice(
        format!(
            "id: {}\nevent: {}\ndata: {json}\n\n",
            e.event_id, e.body.event_type
        )
        .as_bytes(),
    );
}

/// The stream's body: events after `last_id` that `filter` lets through,
/// until the server stops.
pub fn events(
    svc: Arc<Service>,
    filter: Filter,
    last_id: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let state = State {
        rx: svc.store().subscribe_events(),
        stop: svc.feed().stopped(),
        svc,
        filter,
        last: last_id,
        live: false,
    };
    futures::stream::unfold(state, |st| async move {
        let (bytes, st) = next(st).await?;
        Some((Ok(bytes), st))
    })
}

async fn next(mut st: State) -> Option<(Bytes, State)> {
    loop {
        if *st.stop.borrow() {
            return None;
        }
        if !st.live {
            let q = EventQuery {
                org: st.filter.org,
                event_type: st.filter.event_type,
                device: st.filter.device,
                order: Order::After(st.last),
                limit: CATCH_UP_PAGE,
            };
            let page = match st.svc.store().events(&q) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "the event log could not be read; ending a stream");
                    return None;
                }
            };
            st.live = (page.len() as u32) < CATCH_UP_PAGE;
            if let Some(last) = page.last() {
                st.last = last.seq();
                let mut out = Vec::new();
                for e in &page {
                    frame(e, &mut out);
                }
                return Some((Bytes::from(out), st));
            }
            continue;
        }
        tokio::select! {
            _ = st.stop.changed() => return None,
            r = st.rx.recv() => match r {
                Ok(e) => {
                    if e.seq() > st.last && st.filter.matches(&e) {
                        st.last = e.seq();
                        let mut out = Vec::new();
                        frame(&e, &mut out);
                        return Some((Bytes::from(out), st));
                    }
                }
                // Fell behind the ring: the log has everything.
                Err(RecvError::Lagged(_)) => st.live = false,
                Err(RecvError::Closed) => return None,
            },
            () = tokio::time::sleep(KEEPALIVE) => {
                return Some((Bytes::from_static(b": keepalive\n\n"), st));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::events::NewEvent;
    use crate::service::Clock;
    use crate::store::{Write, EVENT_BROADCAST_CAPACITY};

    /// A reader that is not polled while more events than the broadcast
    /// holds are committed lags behind the ring; it re-reads the log and
    /// still gets every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lagging_reader_rereads_the_log_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let svc = Arc::new(Service::open(dir.path(), Clock::system()).unwrap());
        let filter = Filter {
            org: OrgId(0),
            event_type: None,
            device: None,
        };
        let mut stream = Box::pin(events(svc.clone(), filter, 0));
        let n = EVENT_BROADCAST_CAPACITY + CATCH_UP_PAGE as usize + 7;
        let event = |i: usize| {
            let t = if i.is_multiple_of(2) {
                EventType::DeviceDoorOpened
            } else {
                EventType::DeviceDoorClosed
            };
            Write::event(NewEvent::new(t, OrgId(0), svc.now()))
        };
        // The reader catches up with the log and goes live ...
        svc.store().write(vec![event(0)]).await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert!(std::str::from_utf8(&first).unwrap().starts_with("id: 1\n"));
        // ... then more than the broadcast holds is committed at once,
        // before it runs again: it lags behind the ring.
        svc.store()
            .write((1..n).map(event).collect())
            .await
            .unwrap();
        // Another organization's events never reach this stream.
        svc.store()
            .write(vec![Write::event(NewEvent::new(
                EventType::DeviceJammed,
                OrgId(1),
                svc.now(),
            ))])
            .await
            .unwrap();
        svc.store().write(vec![event(n)]).await.unwrap();
        let mut text = String::from_utf8(first.to_vec()).unwrap();
        while text.matches("\n\n").count() < n + 1 {
            let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("events within the hang guard")
                .expect("the stream stays open")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let ids: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|s| s.parse().unwrap())
            .collect();
        let mut want: Vec<u64> = (1..=n as u64).collect();
        want.push(n as u64 + 2);
        assert_eq!(ids, want);
        svc.feed().stop_streams();
        assert!(stream.next().await.is_none(), "the stream ends at stop");
        svc.close().await;
    }
}
