//! What the `metrics` feature costs per acquisition: run once without the
//! feature and once with it, and the second run prints the ratio.
//!
//! ```sh
//! cargo bench -p lockutils-runtime --bench metrics                     # off
//! cargo bench -p lockutils-runtime --bench metrics --features metrics  # on, then the ratio
//! ```
//!
//! Each run times, interleaved sample by sample, an uncontended
//! acquisition and release of several kinds beside a static
//! `parking_lot::Mutex` (the same in both builds), and reports each kind's
//! median as a multiple of that mutex's in the same run, so the two runs
//! compare even if the machine was busier during one of them. With the
//! feature, the kinds are timed twice: with no recorder installed (the
//! facade's no-op one), then with the Prometheus exporter installed. Each
//! run leaves its figures in `target/bench-metrics-{off,on}.txt`.
//! `BENCH_SAMPLES=n` sets the samples per kind (default 200).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use lockutils_runtime::private::{CallSite, LockSpec};

static RAW: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
static SITE: CallSite = CallSite::new(LockSpec::new("bench-site", "", "bench"));

const ON: bool = cfg!(feature = "metrics");

/// One kind of acquisition, run `n` times per call.
struct Kind<'a> {
    name: &'static str,
    run: Box<dyn FnMut(u64) + 'a>,
}

fn kind<'a>(name: &'static str, mut f: impl FnMut() + 'a) -> Kind<'a> {
    Kind {
        name,
        run: Box::new(move |n| (0..n).for_each(|_| f())),
    }
}

/// Medians in nanoseconds per operation, kinds in order.
fn measure(kinds: &mut [Kind<'_>], samples: usize) -> Vec<f64> {
    // Batches of about 2 ms each.
    let per_batch: Vec<u64> = kinds
        .iter_mut()
        .map(|k| {
            let t = Instant::now();
            (k.run)(1000);
            let ns = t.elapsed().as_nanos().max(1) as f64 / 1000.0;
            ((2_000_000.0 / ns) as u64).max(10)
        })
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); kinds.len()];
    for round in 0..samples {
        for i in 0..kinds.len() {
            let i = (i + round) % kinds.len();
            let t = Instant::now();
            (kinds[i].run)(per_batch[i]);
            times[i].push(t.elapsed().as_nanos() as f64 / per_batch[i] as f64);
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

fn kinds<'a>(dir: &'a std::path::Path, names: &'a mut u64) -> Vec<Kind<'a>> {
    let kept = lockutils_runtime::lock("bench-kept");
    let file = lockutils_runtime::lock("bench-file")
        .external()
        .lock_path(dir);
    vec![
        kind("static parking_lot::Mutex (reference)", || {
            drop(black_box(RAW.lock()));
        }),
        kind("#[synchronized] call site", || {
            drop(black_box(SITE.acquire().unwrap()));
        }),
        kind("kept lock(\"x\").acquire()", move || {
            drop(black_box(kept.acquire().unwrap()));
        }),
        kind(
            "lock(new name).acquire() (entry made per call)",
            move || {
                *names += 1;
                let name = format!("bench-{}", *names % 1000);
                drop(black_box(lockutils_runtime::lock(&name).acquire().unwrap()));
            },
        ),
        kind("lock file, uncontended", move || {
            drop(black_box(file.acquire().unwrap()));
        }),
    ]
}

fn main() {
    let samples = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let mut names = 0;
    let mut out = String::new();
    let mut groups = vec![(if ON { "on, no recorder" } else { "off" }, {
        let mut k = kinds(dir.path(), &mut names);
        measure(&mut k, samples)
    })];
    let labels: Vec<&str> = kinds(dir.path(), &mut 0).iter().map(|k| k.name).collect();
    if ON {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the Prometheus recorder");
        let mut k = kinds(dir.path(), &mut names);
        groups.push(("on, Prometheus exporter", measure(&mut k, samples)));
    }
    for (group, medians) in &groups {
        println!("\n## metrics {group} (ns/op, median of {samples}; x = vs the mutex)");
        println!("| kind | ns/op | x mutex |\n|---|---:|---:|");
        for (label, m) in labels.iter().zip(medians) {
            println!("| {label} | {m:.1} | {:.2}x |", m / medians[0]);
            let _ = writeln!(out, "{group}\t{label}\t{m:.3}\t{:.4}", m / medians[0]);
        }
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let mine = target.join(if ON {
        "bench-metrics-on.txt"
    } else {
        "bench-metrics-off.txt"
    });
    let _ = std::fs::write(&mine, &out);
    if !ON {
        return;
    }
    let Ok(off) = std::fs::read_to_string(target.join("bench-metrics-off.txt")) else {
        println!("\n(run it without --features metrics first for the ratio)");
        return;
    };
    let base: Vec<(String, f64)> = off
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((f.get(1)?.to_string(), f.get(3)?.parse().ok()?))
        })
        .collect();
    println!("\n## metrics on / off (each as a multiple of its own run's mutex)");
    println!("| kind | no recorder | Prometheus |\n|---|---:|---:|");
    for (i, label) in labels.iter().enumerate().skip(1) {
        let Some((_, off_x)) = base.iter().find(|(l, _)| l == label) else {
            continue;
        };
        let on = |g: usize| groups[g].1[i] / groups[g].1[0] / off_x;
        println!("| {label} | {:.2}x | {:.2}x |", on(0), on(1));
    }
}
