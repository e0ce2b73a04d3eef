//! Waiting for an event that is only visible by asking (a node's status,
//! a file, a counter): [`poll_until`] asks every so often, within a bound
//! that only stops a hang.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Calls `check` every `every` until it gives `Some`, for at most `bound`;
/// `None` when the bound passed first. `check` is called at least once.
pub async fn poll_until<T, F, Fut>(bound: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_the_first_answer_or_none_at_the_bound() {
        let mut n = 0;
        let got = poll_until(Duration::from_secs(1), Duration::from_millis(10), || {
            n += 1;
            let v = (n == 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(got, Some(3));
        let never: Option<()> = poll_until(
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { None },
        )
        .await;
        assert_eq!(never, None);
    }
}
