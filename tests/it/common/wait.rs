//! Waiting for something to happen, the one way the tests do it: look, and look again until it is
//! there or a generous deadline passes; then fail with what was seen last, so that a failure says
//! how far things got. The deadline bounds the wait only: no test asserts how long anything took.

use std::fmt::{Debug, Display};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Looks (`look`) until `done` holds for what it saw, and returns that. Between looks it waits
/// 5 ms, doubling up to 50 ms. After `timeout` it panics naming `what` and showing the last thing
/// seen (`{:#?}`; wrap text in [`Text`] to show it as it is).
pub async fn eventually<T: Debug>(
    what: impl Display,
    timeout: Duration,
    mut look: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let seen = look().await;
        if done(&seen) {
            return seen;
        }
        if Instant::now() >= deadline {
            panic!("waited {timeout:?} for {what}; last seen:\n{seen:#?}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Like [`eventually`], for things that ring `notify` when they change (the recording receivers):
/// it looks again as soon as they do, and at least every 200 ms. On timeout it panics with
/// `show` of the last thing seen.
pub async fn eventually_notified<T>(
    what: impl Display,
    timeout: Duration,
    notify: &Notify,
    look: impl Fn() -> T,
    done: impl Fn(&T) -> bool,
    show: impl Fn(&T) -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        // Registered before looking, so that a change right after the look still wakes us.
        let notified = notify.notified();
        let seen = look();
        if done(&seen) {
            return seen;
        }
        if Instant::now() >= deadline {
            panic!("waited {timeout:?} for {what}; last seen:\n{}", show(&seen));
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
}

/// Text (a log, an answer) shown as it is by `{:?}`, not quoted and escaped on one line.
pub struct Text(pub String);

impl Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
