//! A vendor's rate limit as the emulators enforce it: at most `limit`
//! requests in each fixed window, counting the requests refused over it.

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct RateWindow {
    /// Requests per window; `None`: no limit.
    pub limit: Option<(u32, Duration)>,
    current: Option<(Instant, u32)>,
    /// Requests refused for the limit.
    pub violations: u32,
}

impl RateWindow {
    /// Counts a request; `Err((limit, resets_in))` when it is over the limit.
    pub fn admit(&mut self) -> Result<(), (u32, Duration)> {
        let Some((limit, window)) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let (started, count) = match self.current {
            Some((started, count)) if now.duration_since(started) < window => (started, count),
            _ => (now, 0),
        };
        if count >= limit {
            self.violations += 1;
            self.current = Some((started, count));
            return Err((limit, window - now.duration_since(started)));
        }
        self.current = Some((started, count + 1));
        Ok(())
    }
}
