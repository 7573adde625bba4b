//! [`WakeEvery`]: a backend wrapper that wakes an idle apalis worker at
//! least once per heartbeat interval.
//!
//! apalis-core 1.0 arms its heartbeat timer in `poll_ready`, and an idle
//! worker fetches only after that timer wakes it. When the timer fires
//! while a fetch is in flight (`poll_ready` does not look at the timer
//! then) and the fetch comes back empty, the worker parks with no wake-up
//! left: it stops heartbeating and never fetches again, while its process
//! looks healthy and the queue's tasks wait forever. The window is the
//! length of a fetch, so a loaded Redis or CPU makes it likely over hours
//! of idling. Waking the worker once per interval whenever its backend
//! returns `Pending` makes the next poll see the fired timer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{Backend, WorkerContext};
use apalis_core::backend::{BackendConfig, WireFormatBackend};
use tokio::time::{Instant, Sleep};

pub struct WakeEvery<B> {
    inner: B,
    every: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<B> WakeEvery<B> {
    pub fn new(inner: B, every: Duration) -> Self {
        WakeEvery {
            inner,
            every,
            timer: Box::pin(tokio::time::sleep(every)),
        }
    }

    /// Makes sure the task is woken within `every` from now.
    fn arm(&mut self, cx: &mut Context<'_>) {
        if self.timer.is_elapsed() {
            self.timer.as_mut().reset(Instant::now() + self.every);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            // Fired between the check and the poll: wake now, and again
            // after the next interval.
            self.timer.as_mut().reset(Instant::now() + self.every);
            cx.waker().wake_by_ref();
        }
    }
}

impl<B: Backend + Unpin> Backend for WakeEvery<B> {
    type Task = B::Task;
    type Error = B::Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        let ready = self.inner.poll_ready(cx, worker);
        if ready.is_pending() {
            self.arm(cx);
        }
        ready
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        let next = self.inner.poll_next(cx, worker);
        if next.is_pending() {
            self.arm(cx);
        }
        next
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_close(cx, worker)
    }
}

impl<B: BackendConfig> BackendConfig for WakeEvery<B> {
    type Args = B::Args;
    type Id = B::Id;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = B::Layer;

    fn config(&self) -> &Self::Config {
        self.inner.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        self.inner.middleware(worker)
    }
}

impl<B: WireFormatBackend> WireFormatBackend for WakeEvery<B> {
    type Codec = B::Codec;
    type Compact = B::Compact;

    fn codec(&self) -> &Self::Codec {
        self.inner.codec()
    }
}
