//! The process's runtime and its memory habits: the multi-threaded tokio
//! runtime with short-lived blocking threads, and mimalloc told to return
//! freed memory at once. The binary makes mimalloc its global allocator;
//! these two settings are what make it give memory back after a burst (a
//! slow-reader attack, many concurrent scrapers, a page of tens of
//! megabytes); `bench/serving.sh` measures it.

use std::time::Duration;

/// How long an idle blocking-pool thread lives (tokio's default is 10 s).
/// The metrics page (tens of megabytes at 10,000 tables) is rendered on
/// that pool and freed by other threads; mimalloc gives such memory back
/// to the system only when the thread that allocated it collects or exits,
/// so a short life returns it about as soon as the page is let go.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// The async runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime")]
pub struct RuntimeError(#[source] pub std::io::Error);

/// The multi-threaded runtime (I/O and timers on), with blocking threads
/// that live [`BLOCKING_KEEP_ALIVE`] when idle.
pub fn build() -> Result<tokio::runtime::Runtime, RuntimeError> {
    build_with(BLOCKING_KEEP_ALIVE)
}

fn build_with(keep_alive: Duration) -> Result<tokio::runtime::Runtime, RuntimeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(keep_alive)
        .build()
        .map_err(RuntimeError)
}

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_e`
/// (mimalloc.h), for which the binding names no constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Return freed memory to the system at once rather than after mimalloc's
/// default 1 s delay: the delayed purge runs only when the freeing thread
/// allocates again, and the threads that free a page often go quiet, so
/// the memory stayed resident. The exporter allocates little, so the extra
/// `madvise` calls cost nothing measurable. `MIMALLOC_PURGE_DELAY` in the
/// environment still wins. Call it first thing in `main`.
///
/// The one `unsafe` block of the library (the crate root denies
/// `unsafe_code`; this function alone allows it): neither `mimalloc` nor
/// `libmimalloc-sys` offers a safe way to set an option.
#[allow(unsafe_code)]
pub fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` takes plain integers and has no
        // preconditions: any option index and value is accepted, and
        // mimalloc stores options atomically, so it is sound at any time,
        // on any thread, whether or not mimalloc is the global allocator.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mimalloc's current value of the purge delay option.
    #[allow(unsafe_code)]
    fn purge_delay() -> std::os::raw::c_long {
        // SAFETY: reads a plain integer option; no preconditions.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn the_purge_delay_option_is_the_one_set_to_zero() {
        let overridden = std::env::var_os("MIMALLOC_PURGE_DELAY").is_some();
        // mimalloc's default purge delay is 1,000 ms; no other option at
        // this position would read so, so the index is the right one.
        if !overridden {
            assert_eq!(purge_delay(), 1000);
        }
        purge_freed_memory_at_once();
        if !overridden {
            assert_eq!(purge_delay(), 0);
        }
    }

    #[test]
    fn the_runtime_is_multi_threaded_with_io_and_timers() {
        let runtime = build().expect("the runtime starts");
        assert_eq!(
            runtime.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
        // Timers and sockets panic or fail on a runtime without them.
        let port = runtime.block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        });
        assert_ne!(port, 0);
    }

    /// An idle blocking thread ends after the keep-alive given: it is the
    /// end of the thread that lets mimalloc give its memory back.
    #[test]
    fn idle_blocking_threads_end_after_the_keep_alive() {
        struct Ended(std::sync::mpsc::Sender<()>);
        impl Drop for Ended {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        thread_local! {
            static ENDED: std::cell::RefCell<Option<Ended>> = const { std::cell::RefCell::new(None) };
        }
        let runtime = build_with(Duration::from_millis(50)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        runtime
            .block_on(runtime.spawn_blocking(move || {
                ENDED.with(|ended| *ended.borrow_mut() = Some(Ended(tx)));
            }))
            .unwrap();
        // tokio's default keep-alive is 10 s: well past this bound, which
        // only guards against a machine too busy to schedule the thread.
        rx.recv_timeout(Duration::from_secs(8))
            .expect("the idle blocking thread ended");
        drop(runtime);
    }
}
