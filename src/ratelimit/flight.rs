//! Single-flight lease refills for the global limits: per worker thread
//! and key, one request at a time asks Redis; the key's other requests on
//! that thread wait for its answer and then take from the new lease (or
//! the refusal it recorded) instead of asking too.
//!
//! Without it a key whose lease ran out under a burst sent one round trip
//! per request in flight, each asking a whole batch: Redis handed the
//! budget out in batches that ended unspent, and refused requests the
//! budget had room for (`tests/it/global_rate_limit.rs`,
//! `a_burst_of_one_key_asks_redis_once_per_thread_and_batch`).
//!
//! A worker thread runs one current-thread runtime: the table of flights
//! is thread-local and the waiting is `Rc`/`Cell`/`RefCell`, no lock. The
//! leader's guard wakes the waiters when it is dropped, answered or not
//! (a cancelled request, a timeout), so that a waiter never outlives its
//! leader by more than the limit's Redis timeout.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

thread_local! {
    /// The flights in progress on this thread, by (limit, key hash).
    static FLIGHTS: RefCell<HashMap<(usize, u64), Rc<Flight>>> = RefCell::new(HashMap::new());
}

/// One round trip in progress for a key.
#[derive(Default)]
pub(crate) struct Flight {
    /// Set when the leader is done (its answer is in the lease table).
    done: Cell<bool>,
    /// The waiting requests' wakers.
    wakers: RefCell<Vec<Waker>>,
    /// Requests that joined the flight, for the leader's batch size.
    waiting: Cell<u32>,
}

/// A request's part in its key's refill.
pub(crate) enum Join {
    /// Ask Redis; the guard wakes the others when dropped.
    Lead(Leader),
    /// Another request asks: wait for it.
    Wait(Rc<Flight>),
}

/// `limit` (the limit's address, stable while it lives) and `hash` (the
/// key's): lead the key's refill on this thread, or wait for the one in
/// progress.
pub(crate) fn join(limit: usize, hash: u64) -> Join {
    FLIGHTS.with(|f| {
        let mut map = f.borrow_mut();
        if let Some(flight) = map.get(&(limit, hash)) {
            flight.waiting.set(flight.waiting.get().saturating_add(1));
            return Join::Wait(flight.clone());
        }
        let flight = Rc::new(Flight::default());
        map.insert((limit, hash), flight.clone());
        Join::Lead(Leader {
            key: (limit, hash),
            flight,
        })
    })
}

impl Flight {
    /// Requests that waited for this answer (for the next batch's size
    /// when it did not last them all).
    pub(crate) fn waiting(&self) -> u32 {
        self.waiting.get()
    }

    /// Ready once the leader is done.
    pub(crate) fn done(self: Rc<Self>) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            if self.done.get() {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

/// The request that asks Redis for its key.
pub(crate) struct Leader {
    key: (usize, u64),
    flight: Rc<Flight>,
}

impl Leader {
    /// Requests waiting for this answer so far.
    pub(crate) fn waiting(&self) -> u32 {
        self.flight.waiting.get()
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // The thread's table is gone only when the thread ends.
        let _ = FLIGHTS.try_with(|f| f.borrow_mut().remove(&self.key));
        self.flight.done.set(true);
        for w in self.flight.wakers.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leads_the_others_wait_until_it_is_dropped() {
        let Join::Lead(leader) = join(1, 7) else {
            panic!("the first leads")
        };
        let Join::Wait(flight) = join(1, 7) else {
            panic!("the second waits")
        };
        assert!(matches!(join(2, 7), Join::Lead(_)), "another limit");
        assert!(matches!(join(1, 8), Join::Lead(_)), "another key");
        assert_eq!(leader.waiting(), 1);
        let mut done = Box::pin(flight.done());
        let mut cx = std::task::Context::from_waker(Waker::noop());
        assert!(done.as_mut().poll(&mut cx).is_pending());
        drop(leader);
        assert!(done.as_mut().poll(&mut cx).is_ready());
        assert!(matches!(join(1, 7), Join::Lead(_)), "a new round");
    }
}
