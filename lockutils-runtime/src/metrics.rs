//! Lock metrics through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`): per lock name, acquisitions, contended
//! acquisitions, and histograms of the time waited and the time held.
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `lockutils_acquisitions_total{lock}` | counter | acquisitions that got the lock |
//! | `lockutils_contended_acquisitions_total{lock}` | counter | those that found it taken and waited |
//! | `lockutils_wait_seconds{lock}` | histogram | from finding the lock taken to holding it, every acquisition (0 for one that found it free) |
//! | `lockutils_hold_seconds{lock}` | histogram | from holding to releasing |
//!
//! Invariants:
//! * without the feature, [`Clock`], [`Since`] and [`Slot`] are empty and
//!   their methods do nothing: nothing is measured or stored, and the
//!   inline fast paths of `#[synchronized]` stay as they are ([`ON`]);
//! * with it, every acquisition goes through `acquire::take` (the inline
//!   fast paths step aside), which counts it once it holds the lock, and
//!   its `Hold` records the hold time when it is released;
//! * at most [`name_limit`] distinct names get series of their own, first
//!   come first served, for the life of the process; every later name
//!   shares the series `lock="(other)"`, so per-UUID names cannot grow a
//!   metrics backend without bound;
//! * metric handles are kept per name and registered again when the
//!   recorder in force changes (told apart by its address): a recorder
//!   installed after the first locks were taken still gets every later
//!   acquisition, and `metrics::with_local_recorder` works too.
//!
//! "Contended": the lock was taken when first tried, in-process or
//! outside (a lock file or lock server tried once without waiting, before
//! the wait). With the feature, a wait for a lock server costs that one
//! extra round trip, only when the lock was busy.

/// Whether metrics are built in.
pub(crate) const ON: bool = cfg!(feature = "metrics");

/// The label value of the names past the limit.
#[cfg(feature = "metrics")]
pub const FOLDED: &str = "(other)";

/// The environment variable that sets `name_limit` at start-up.
#[cfg(feature = "metrics")]
pub const METRICS_NAMES_ENV: &str = "LOCKUTILS_METRICS_NAMES";

#[cfg(not(feature = "metrics"))]
pub(crate) use off::{Clock, Since, Slot};
#[cfg(feature = "metrics")]
pub(crate) use on::{Clock, Since, Slot};
#[cfg(feature = "metrics")]
pub use on::{name_limit, set_name_limit};

#[cfg(not(feature = "metrics"))]
mod off {
    /// An acquisition's start (nothing without the feature).
    #[derive(Clone, Copy)]
    pub(crate) struct Clock;

    impl Clock {
        #[inline(always)]
        pub(crate) fn start() -> Clock {
            Clock
        }

        #[inline(always)]
        pub(crate) fn contended(&mut self) {}

        #[inline(always)]
        pub(crate) fn acquired(self, _slot: &Slot, _name: &str) -> Since {
            Since
        }
    }

    /// When a hold began (nothing without the feature).
    #[derive(Clone, Copy, Default)]
    pub(crate) struct Since;

    /// A name's metric handles (nothing without the feature).
    #[derive(Default)]
    pub(crate) struct Slot;

    impl Slot {
        #[inline(always)]
        pub(crate) fn released(&self, _since: Since) {}
    }
}

#[cfg(feature = "metrics")]
mod on {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, LazyLock, OnceLock};
    use std::time::Instant;

    use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
    use parking_lot::{Mutex, RwLock};

    use super::{FOLDED, METRICS_NAMES_ENV};

    const ACQUISITIONS: &str = "lockutils_acquisitions_total";
    const CONTENDED: &str = "lockutils_contended_acquisitions_total";
    const WAIT: &str = "lockutils_wait_seconds";
    const HOLD: &str = "lockutils_hold_seconds";

    /// Distinct names with series of their own, unless set otherwise.
    const DEFAULT_LIMIT: usize = 256;

    static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

    /// How many distinct lock names get series of their own (the rest
    /// share `lock="(other)"`): [`set_name_limit`], else
    /// `$LOCKUTILS_METRICS_NAMES`, else 256.
    pub fn name_limit() -> usize {
        match LIMIT.load(Ordering::Relaxed) {
            usize::MAX => {
                let from_env = std::env::var(METRICS_NAMES_ENV)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(DEFAULT_LIMIT);
                let _ = LIMIT.compare_exchange(
                    usize::MAX,
                    from_env.min(usize::MAX - 1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                LIMIT.load(Ordering::Relaxed)
            }
            n => n,
        }
    }

    /// Sets how many distinct lock names get series of their own. Names
    /// already admitted keep theirs; only new names are folded.
    pub fn set_name_limit(names: usize) {
        LIMIT.store(names.min(usize::MAX - 1), Ordering::Relaxed);
    }

    /// When an acquisition found the lock taken (`None`: not yet, and an
    /// acquisition that never does waited 0 s: the clock is read only
    /// for one that waits).
    #[derive(Clone, Copy)]
    pub(crate) struct Clock {
        contended: Option<Instant>,
    }

    impl Clock {
        #[inline]
        pub(crate) fn start() -> Clock {
            Clock { contended: None }
        }

        /// The lock was taken when first tried: the wait starts now.
        #[inline]
        pub(crate) fn contended(&mut self) {
            if self.contended.is_none() {
                self.contended = Some(Instant::now());
            }
        }

        /// Counts the acquisition of `name` (whose slot is `slot`), now
        /// held; returns when the hold began.
        #[inline]
        pub(crate) fn acquired(self, slot: &Slot, name: &str) -> Since {
            let now = Instant::now();
            let waited = self
                .contended
                .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
            slot.series(name).with(|h| {
                h.acquisitions.increment(1);
                if self.contended.is_some() {
                    h.contended.increment(1);
                }
                h.wait.record(waited);
            });
            Since(Some(now))
        }
    }

    /// When a hold began (`None`: not counted, e.g. a hold made while
    /// giving up a wait).
    #[derive(Clone, Copy, Default)]
    pub(crate) struct Since(Option<Instant>);

    /// A registry entry's series, found on its first counted acquisition.
    #[derive(Default)]
    pub(crate) struct Slot(OnceLock<Arc<Series>>);

    impl Slot {
        fn series(&self, name: &str) -> &Series {
            self.0.get_or_init(|| admit(name))
        }

        /// Records the hold that began at `since`, now released.
        #[inline]
        pub(crate) fn released(&self, since: Since) {
            if let (Some(at), Some(series)) = (since.0, self.0.get()) {
                let held = at.elapsed().as_secs_f64();
                series.with(|h| h.hold.record(held));
            }
        }
    }

    /// One name's series (or the folded one's).
    pub(crate) struct Series {
        label: String,
        /// The handles, and the recorder they were registered with.
        handles: RwLock<Option<(usize, Handles)>>,
    }

    struct Handles {
        acquisitions: Counter,
        contended: Counter,
        wait: Histogram,
        hold: Histogram,
    }

    /// The recorder in force here, by address.
    fn recorder_id() -> usize {
        metrics::with_recorder(|r| (r as *const dyn Recorder).cast::<()>() as usize)
    }

    impl Series {
        fn new(label: &str) -> Series {
            Series {
                label: label.to_owned(),
                handles: RwLock::new(None),
            }
        }

        fn with(&self, f: impl FnOnce(&Handles)) {
            let id = recorder_id();
            {
                let handles = self.handles.read();
                if let Some((of, h)) = &*handles
                    && *of == id
                {
                    return f(h);
                }
            }
            let h = self.register();
            f(&h);
            *self.handles.write() = Some((id, h));
        }

        #[cold]
        fn register(&self) -> Handles {
            static METADATA: Metadata<'static> =
                Metadata::new("lockutils", Level::INFO, Some(module_path!()));
            let key = |name: &'static str| {
                Key::from_parts(name, vec![Label::new("lock", self.label.clone())])
            };
            metrics::with_recorder(|r| {
                describe(r);
                Handles {
                    acquisitions: r.register_counter(&key(ACQUISITIONS), &METADATA),
                    contended: r.register_counter(&key(CONTENDED), &METADATA),
                    wait: r.register_histogram(&key(WAIT), &METADATA),
                    hold: r.register_histogram(&key(HOLD), &METADATA),
                }
            })
        }
    }

    fn describe(r: &dyn Recorder) {
        let name = KeyName::from_const_str;
        let text = metrics::SharedString::const_str;
        r.describe_counter(
            name(ACQUISITIONS),
            Some(Unit::Count),
            text("Acquisitions that got the lock, by lock name"),
        );
        r.describe_counter(
            name(CONTENDED),
            Some(Unit::Count),
            text("Acquisitions that found the lock taken and waited, by lock name"),
        );
        r.describe_histogram(
            name(WAIT),
            Some(Unit::Seconds),
            text("Time from finding the lock taken to holding it (0 if it was free), by lock name"),
        );
        r.describe_histogram(
            name(HOLD),
            Some(Unit::Seconds),
            text("Time the lock was held, by lock name"),
        );
    }

    /// The names with series of their own, and the folded series.
    struct Admitted {
        names: Mutex<HashMap<Box<str>, Arc<Series>>>,
        folded: Arc<Series>,
    }

    static ADMITTED: LazyLock<Admitted> = LazyLock::new(|| Admitted {
        names: Mutex::new(HashMap::new()),
        folded: Arc::new(Series::new(FOLDED)),
    });

    /// The series of `name`: its own while fewer than [`name_limit`]
    /// names have one, else the folded one.
    #[cold]
    fn admit(name: &str) -> Arc<Series> {
        let limit = name_limit();
        let admitted = &*ADMITTED;
        let mut names = admitted.names.lock();
        if let Some(s) = names.get(name) {
            return s.clone();
        }
        if names.len() >= limit {
            return admitted.folded.clone();
        }
        let s = Arc::new(Series::new(name));
        names.insert(name.into(), s.clone());
        s
    }
}
