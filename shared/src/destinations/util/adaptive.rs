//! Adaptive request concurrency, per destination and worker process, below
//! the destination's hard cap: AIMD on round-trip time and back-pressure, as
//! Vector's adaptive request concurrency does.
//!
//! The limit starts at 1.
//! - Back-pressure (a 429, a 5xx, a timeout) multiplies the limit by
//!   `DECREASE_RATIO` (at least 1) at once, at most once per window (one
//!   past-RTT mean long).
//! - At the end of a window without back-pressure, an RTT well above the
//!   past mean (more than `RTT_DEVIATION_SCALE` standard deviations) does
//!   the same; otherwise, if the limit was reached and the RTT did not grow,
//!   the limit grows by one, up to the cap.
//!
//! A slow or struggling destination thus gets less load from every worker,
//! without anyone tuning `max_concurrency` down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

const DECREASE_RATIO: f64 = 0.9;
const RTT_DEVIATION_SCALE: f64 = 2.5;
/// Weight of the newest window in the past-RTT average.
const EWMA_ALPHA: f64 = 0.4;
/// Windows are never shorter than this, so a very fast destination is not
/// judged on a handful of samples.
const MIN_WINDOW: Duration = Duration::from_millis(50);

pub struct AdaptiveConcurrency {
    max: usize,
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    window_started: Instant,
    /// This window's RTT samples.
    rtt_sum: f64,
    rtt_count: u32,
    reached_limit: bool,
    back_pressure: bool,
    /// EWMA of past windows' mean RTT (seconds) and of its squared deviation.
    past_mean: Option<f64>,
    past_variance: f64,
}

/// How a request went, for the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    Ok,
    /// 429, 5xx, timeouts: the destination is struggling.
    BackPressure,
}

pub struct Slot<'a> {
    owner: &'a AdaptiveConcurrency,
    started: Instant,
    done: bool,
}

impl AdaptiveConcurrency {
    pub fn new(max: usize) -> Self {
        AdaptiveConcurrency {
            max: max.max(1),
            state: Mutex::new(State {
                limit: 1,
                in_flight: 0,
                window_started: Instant::now(),
                rtt_sum: 0.0,
                rtt_count: 0,
                reached_limit: false,
                back_pressure: false,
                past_mean: None,
                past_variance: 0.0,
            }),
            freed: Notify::new(),
        }
    }

    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters
        // inconsistent in a way that matters more than stalling would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until fewer than `limit` requests of this process are in flight.
    pub async fn acquire(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    if s.in_flight >= s.limit {
                        s.reached_limit = true;
                    }
                    return Slot {
                        owner: self,
                        started: Instant::now(),
                        done: false,
                    };
                }
            }
            freed.await;
        }
    }

    fn record(&self, rtt: Duration, response: Response, now: Instant) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        match response {
            Response::Ok => {
                s.rtt_sum += rtt.as_secs_f64();
                s.rtt_count += 1;
            }
            // A refusal is often instant: its RTT says nothing about how
            // fast the destination serves, and would make it look faster.
            // Back off at once (once per window): waiting for the window to
            // end would let every queued request grab the freed slot and be
            // refused too.
            Response::BackPressure => {
                if !s.back_pressure {
                    s.back_pressure = true;
                    s.limit = decreased(s.limit);
                }
            }
        }
        let window = s
            .past_mean
            .map_or(MIN_WINDOW, |m| Duration::from_secs_f64(m).max(MIN_WINDOW));
        if now.duration_since(s.window_started) >= window {
            self.end_window(&mut s, now);
        }
        drop(s);
        self.freed.notify_waiters();
    }

    fn end_window(&self, s: &mut State, now: Instant) {
        let current = (s.rtt_count > 0).then(|| s.rtt_sum / f64::from(s.rtt_count));
        match (s.past_mean, current) {
            // Only refusals in the window (already backed off for): keep
            // the RTT baseline.
            (_, None) => {}
            (None, Some(current)) => s.past_mean = Some(current),
            (Some(past), Some(current)) => {
                let deviation = s.past_variance.sqrt();
                let slower = current > past + RTT_DEVIATION_SCALE * deviation && deviation > 0.0;
                if s.back_pressure {
                    // Backed off already, when the refusal came in.
                } else if slower {
                    s.limit = decreased(s.limit);
                } else if s.reached_limit && current <= past {
                    s.limit = (s.limit + 1).min(self.max);
                }
                let diff = current - past;
                s.past_mean = Some(past + EWMA_ALPHA * diff);
                s.past_variance = (1.0 - EWMA_ALPHA) * (s.past_variance + EWMA_ALPHA * diff * diff);
            }
        }
        s.window_started = now;
        s.rtt_sum = 0.0;
        s.rtt_count = 0;
        s.reached_limit = s.in_flight >= s.limit;
        s.back_pressure = false;
    }
}

fn decreased(limit: usize) -> usize {
    ((limit as f64 * DECREASE_RATIO).floor() as usize).max(1)
}

impl Slot<'_> {
    /// Ends the request and feeds its RTT and outcome to the controller.
    pub fn done(mut self, response: Response) {
        self.done = true;
        self.owner
            .record(self.started.elapsed(), response, Instant::now());
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled mid-request: free the slot without judging the RTT.
            let mut s = self.owner.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            drop(s);
            self.owner.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one window of `n` requests of `rtt` each, all at the limit.
    fn window(c: &AdaptiveConcurrency, n: usize, rtt: Duration, response: Response) {
        let start = c.lock().window_started;
        for i in 0..n {
            {
                let mut s = c.lock();
                s.in_flight += 1;
                s.reached_limit = true;
            }
            // The window closes with the last sample.
            let now = if i + 1 == n {
                start + Duration::from_secs(10)
            } else {
                start
            };
            c.record(rtt, response, now);
        }
    }

    #[test]
    fn grows_by_one_per_window_while_rtt_holds_and_stops_at_the_cap() {
        let c = AdaptiveConcurrency::new(4);
        assert_eq!(c.limit(), 1);
        window(&c, 3, Duration::from_millis(100), Response::Ok); // sets the baseline
        for expected in [2, 3, 4, 4, 4] {
            window(&c, 3, Duration::from_millis(100), Response::Ok);
            assert_eq!(c.limit(), expected);
        }
    }

    #[test]
    fn back_pressure_cuts_the_limit_multiplicatively() {
        let c = AdaptiveConcurrency::new(100);
        window(&c, 3, Duration::from_millis(100), Response::Ok);
        for _ in 0..20 {
            window(&c, 3, Duration::from_millis(100), Response::Ok);
        }
        assert_eq!(c.limit(), 21);
        window(&c, 3, Duration::from_millis(100), Response::BackPressure);
        assert_eq!(c.limit(), 18);
        for _ in 0..50 {
            window(&c, 3, Duration::from_millis(100), Response::BackPressure);
        }
        assert_eq!(c.limit(), 1, "never below 1");
    }

    #[test]
    fn a_sharp_rtt_rise_cuts_the_limit() {
        let c = AdaptiveConcurrency::new(100);
        window(&c, 3, Duration::from_millis(100), Response::Ok);
        // Some natural variation, then growth.
        for ms in [90, 110, 95, 105, 100, 100, 100, 100] {
            window(&c, 3, Duration::from_millis(ms), Response::Ok);
        }
        let before = c.limit();
        assert!(before > 1);
        window(&c, 3, Duration::from_millis(1000), Response::Ok);
        assert!(c.limit() < before, "{} → {}", before, c.limit());
    }

    #[tokio::test]
    async fn acquire_waits_for_a_free_slot_under_the_limit() {
        let c = AdaptiveConcurrency::new(8);
        let first = c.acquire().await;
        let second = tokio::time::timeout(Duration::from_millis(100), c.acquire()).await;
        assert!(second.is_err(), "limit 1 allows one request in flight");
        first.done(Response::Ok);
        tokio::time::timeout(Duration::from_secs(1), c.acquire())
            .await
            .expect("the freed slot is granted");
    }
}
