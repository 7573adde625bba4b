//! [`read_ahead`]: a stream whose items a task of its own produces, so that
//! reading goes on while the reader works on what came before. The end is
//! said, not inferred: a producer that panicked is an error, never a
//! shorter stream (a ledger cut short would read as removed records).

use std::future::Future;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

/// Hands items to a [`read_ahead`] stream.
pub struct Producer<T, E> {
    sender: mpsc::Sender<Result<Option<T>, E>>,
}

impl<T, E> Producer<T, E> {
    /// Sends `item`, waiting while the reader is behind; false once the
    /// stream is dropped, when producing should stop.
    pub async fn send(&self, item: T) -> bool {
        self.sender.send(Ok(Some(item))).await.is_ok()
    }
}

/// Runs `produce` on a task of its own and streams the items it sends (up
/// to `capacity` of them ahead of the reader), then its error if it fails.
/// A task that stops without finishing (it panicked) ends the stream with
/// `stopped()`. Dropping the stream stops the task.
pub fn read_ahead<T, E, F>(
    capacity: usize,
    produce: impl FnOnce(Producer<T, E>) -> F,
    stopped: impl FnOnce() -> E + Send + 'static,
) -> BoxStream<'static, Result<T, E>>
where
    T: Send + 'static,
    E: Send + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
{
    let (sender, received) = mpsc::channel(capacity.max(1));
    let end = sender.clone();
    let producing = produce(Producer { sender });
    let task = AbortOnDrop(tokio::spawn(async move {
        let produced = producing.await;
        let _ = end.send(produced.map(|()| None)).await;
    }));
    futures::stream::unfold(Some((received, task, stopped)), |state| async move {
        let (mut received, task, stopped) = state?;
        match received.recv().await {
            Some(Ok(Some(item))) => Some((Ok(item), Some((received, task, stopped)))),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some((Err(e), None)),
            None => Some((Err(stopped()), None)),
        }
    })
    .boxed()
}

/// Stops the producing task when its stream is dropped (a reader that
/// failed half-way), so that it does not read on for nobody.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn all(stream: BoxStream<'static, Result<u32, String>>) -> Vec<Result<u32, String>> {
        stream.collect().await
    }

    #[tokio::test]
    async fn items_come_in_order_then_the_end_or_the_error() {
        let items = read_ahead(
            1,
            |p| async move {
                for i in 0..5 {
                    assert!(p.send(i).await);
                }
                Ok(())
            },
            || "stopped".to_owned(),
        );
        assert_eq!(all(items).await, vec![Ok(0), Ok(1), Ok(2), Ok(3), Ok(4)]);

        let failing = read_ahead(
            4,
            |p| async move {
                p.send(7).await;
                Err("the read failed".to_owned())
            },
            || "stopped".to_owned(),
        );
        assert_eq!(
            all(failing).await,
            vec![Ok(7), Err("the read failed".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_producer_that_panics_is_an_error_not_an_end() {
        let dead = read_ahead(
            4,
            |p: Producer<u32, String>| async move {
                p.send(1).await;
                panic!("the producer fails");
            },
            || "stopped before the end".to_owned(),
        );
        assert_eq!(
            all(dead).await,
            vec![Ok(1), Err("stopped before the end".to_owned())]
        );
    }

    #[tokio::test]
    async fn dropping_the_stream_stops_the_producer() {
        let (first_sent, first) = tokio::sync::oneshot::channel();
        let finished = Arc::new(AtomicBool::new(false));
        let mut items = read_ahead(
            1,
            {
                let finished = finished.clone();
                |p| async move {
                    p.send(0).await;
                    let _ = first_sent.send(());
                    // Blocks: the channel holds one item and nobody reads.
                    p.send(1).await;
                    p.send(2).await;
                    finished.store(true, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            },
            || "stopped".to_owned(),
        );
        first.await.expect("the first item was sent");
        drop(items.next().await);
        drop(items);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(
            !finished.load(Ordering::SeqCst),
            "the producer was stopped, not left to read on"
        );
    }
}
