//! A small timing harness shared by the benchmarks (no criterion or divan:
//! they cost more to compile than these benchmarks take to run).
//!
//! Variants that are compared run in the same process, interleaved: each
//! sample round times one batch of every variant, in rotating order, so a
//! burst of load from other processes on a busy machine hits all of them
//! alike. Figures are nanoseconds per operation; the median over the
//! samples is the headline, the minimum shows the noise floor.
#![allow(dead_code)]

use std::io::Write;
use std::time::{Duration, Instant};

/// One measured variant: a name and a loop body run `n` times per call.
pub struct Variant<'a> {
    pub name: String,
    run: Box<dyn FnMut(u64) + 'a>,
}

/// Wraps `f` in a loop that runs it `n` times. The loop is generic, so the
/// body is inlined and there is no indirect call per iteration.
pub fn variant<'a>(name: impl Into<String>, mut f: impl FnMut() + 'a) -> Variant<'a> {
    Variant {
        name: name.into(),
        run: Box::new(move |n| {
            for _ in 0..n {
                f();
            }
        }),
    }
}

/// Like [`variant`], calling `setup` once before each batch (e.g. to set a
/// process-wide switch that variants of one group set differently).
pub fn variant_setup<'a>(
    name: impl Into<String>,
    mut setup: impl FnMut() + 'a,
    mut f: impl FnMut() + 'a,
) -> Variant<'a> {
    Variant {
        name: name.into(),
        run: Box::new(move |n| {
            setup();
            for _ in 0..n {
                f();
            }
        }),
    }
}

/// Nanoseconds per operation over the samples of one variant.
#[derive(Clone, Debug)]
pub struct Stats {
    pub name: String,
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn median(&self) -> f64 {
        percentile(&self.samples, 50.0)
    }
    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// The `p`th percentile (nearest rank) of `xs`.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// How many samples to take; `BENCH_SAMPLES` overrides `default`.
pub fn samples(default: usize) -> usize {
    std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// How many throughput runs to take; `BENCH_RUNS` overrides `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Times every variant `samples` times, interleaved. Each batch is sized
/// (once, up front) to take about `batch_time`.
pub fn run_group(variants: &mut [Variant<'_>], samples: usize, batch_time: Duration) -> Vec<Stats> {
    let batches: Vec<u64> = variants
        .iter_mut()
        .map(|v| calibrate(&mut v.run, batch_time))
        .collect();
    let mut out: Vec<Stats> = variants
        .iter()
        .map(|v| Stats {
            name: v.name.clone(),
            samples: Vec::new(),
        })
        .collect();
    let k = variants.len();
    for round in 0..samples {
        for j in 0..k {
            let i = (round + j) % k;
            let n = batches[i];
            let t = Instant::now();
            (variants[i].run)(n);
            let dt = t.elapsed();
            out[i].samples.push(dt.as_nanos() as f64 / n as f64);
        }
    }
    out
}

fn calibrate(run: &mut Box<dyn FnMut(u64) + '_>, batch_time: Duration) -> u64 {
    run(1000); // warm up
    let mut n = 1000u64;
    loop {
        let t = Instant::now();
        run(n);
        let dt = t.elapsed();
        if dt >= batch_time / 4 || n >= 1 << 30 {
            let per = dt.as_nanos().max(1) as f64 / n as f64;
            return ((batch_time.as_nanos() as f64 / per) as u64).max(1);
        }
        n *= 4;
    }
}

/// Prints a table of `stats`, each with its ratio against `stats[base]`
/// (median over median, and min over min).
pub fn print_table(title: &str, stats: &[Stats], base: usize) {
    println!("\n{title}");
    println!(
        "| {:<58} | {:>10} | {:>10} | {:>8} | {:>8} |",
        "variant", "median ns", "min ns", "x median", "x min"
    );
    println!(
        "|{:-<60}|{:->12}|{:->12}|{:->10}|{:->10}|",
        "", ":", ":", ":", ":"
    );
    let (bm, bn) = (stats[base].median(), stats[base].min());
    for s in stats {
        println!(
            "| {:<58} | {:>10.1} | {:>10.1} | {:>7.2}x | {:>7.2}x |",
            s.name,
            s.median(),
            s.min(),
            s.median() / bm,
            s.min() / bn
        );
    }
    let _ = std::io::stdout().flush();
}

/// Resident set size of this process, bytes (from `/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes.
#[inline]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pads a value to its own cache lines (two, for the adjacent-line prefetcher).
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// The machine, for the report header.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}
