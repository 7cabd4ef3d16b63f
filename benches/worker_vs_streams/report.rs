//! The side-by-side bench's outputs: `bench/results.json` (raw figures and the ratios the
//! issue names), `BENCHMARKS.md` (tables, the machine, the command) and PNG bar charts
//! drawn with plotters (throughput, restore rate, peak RSS).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde_json::{json, Value};

/// Raw figures by name, in name order (what `bench/results.json` holds).
#[derive(Debug, Default)]
pub struct Figures(pub BTreeMap<String, Value>);

impl Figures {
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn num(&self, key: &str) -> Option<f64> {
        self.0.get(key).and_then(Value::as_f64)
    }

    /// `a / b` when both are present and `b` is not zero.
    pub fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.num(a)?, self.num(b)?);
        (b != 0.0).then(|| a / b)
    }
}

/// The machine the figures were taken on, one line per fact.
pub fn machine() -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".to_string(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .map_or(String::new(), |l| {
            l.split_whitespace().nth(1).unwrap_or("").to_string()
        });
    let mem_gib = mem.parse::<f64>().map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    vec![
        format!("CPU: {model}, {cores} cores available"),
        format!("memory: {mem_gib:.1} GiB"),
        format!("kernel: Linux {kernel}"),
        "broker: one Apache Kafka 4.4.0 broker (KRaft) on the same machine and cores".into(),
    ]
}

/// One-minute load average now.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn fmt_num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.abs() >= 1000.0 => {
            let s = format!("{:.0}", v);
            let (sign, digits_only) = s.split_at(usize::from(s.starts_with('-')));
            let mut out = String::new();
            for (i, c) in digits_only.chars().enumerate() {
                if i > 0 && (digits_only.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            format!("{sign}{out}")
        }
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".into(),
    }
}

/// The headline ratios of the issue, computed from the raw figures.
pub fn ratios(f: &Figures) -> Vec<(&'static str, Option<f64>, &'static str)> {
    vec![
        (
            "throughput_ratio_alos",
            f.ratio("a.kstate_alos.rate", "a.kafka_streams.rate"),
            "kstate at_least_once / Kafka Streams (target ≥ 10)",
        ),
        (
            "throughput_ratio_eos",
            f.ratio("a.kstate_eos.rate", "a.kafka_streams.rate"),
            "kstate exactly_once_v2 / Kafka Streams at_least_once (target ≥ 8)",
        ),
        (
            "passthrough_fraction_alos",
            f.ratio("a.kstate_alos.rate", "a.passthrough.rate"),
            "kstate at_least_once / bare rdkafka passthrough (target ≥ 0.5)",
        ),
        (
            "restore_ratio_vs_kafka_streams",
            f.ratio("a.kstate_restore.rate", "a.kafka_streams_restore.rate"),
            "kstate restore / Kafka Streams restore, launch to ready (target ≥ 3)",
        ),
        (
            "restore_fraction_of_fetch_ceiling",
            f.num("a.restore_fraction.median"),
            "kstate restore (first restoring → all running) / ConsumerPerformance fetch rate on the same changelog, run back to back; median of the rounds (target ≥ 0.7)",
        ),
        (
            "changelog_per_input_kstate",
            f.ratio("a.kstate_alos.changelog_records", "a.records"),
            "changelog records per input record, kstate (at_least_once)",
        ),
        (
            "changelog_per_input_kafka_streams",
            f.ratio("a.kafka_streams.changelog_records", "a.records"),
            "changelog records per input record, Kafka Streams",
        ),
        (
            "peak_rss_ratio",
            f.ratio("a.kstate_alos.peak_rss_mib", "a.kafka_streams.peak_rss_mib"),
            "kstate peak RSS / Kafka Streams peak RSS (target ≤ 0.15)",
        ),
        (
            "store_ops_per_sec_1m",
            f.num("store.find_sessions_put_1m_ops_per_sec"),
            "find_sessions + put at 1M live sessions, one core (criterion; target ≥ 2,000,000)",
        ),
    ]
}

/// Writes `bench/results.json`: the ratios at the top level, the raw figures under "raw".
pub fn write_json(path: &Path, f: &Figures) -> anyhow::Result<()> {
    let mut top = serde_json::Map::new();
    for (key, value, _) in ratios(f) {
        top.insert(key.into(), value.map_or(Value::Null, |v| json!(v)));
    }
    top.insert(
        "raw".into(),
        Value::Object(f.0.clone().into_iter().collect()),
    );
    std::fs::create_dir_all(path.parent().context("results path has a parent")?)?;
    std::fs::write(
        path,
        serde_json::to_string_pretty(&Value::Object(top))? + "\n",
    )?;
    Ok(())
}

/// The rows of one workload's table: (engine, throughput, peak RSS, changelog/input).
fn workload_rows(f: &Figures, w: &str, engines: &[(&str, &str)]) -> String {
    let mut out = String::from(
        "| | launch → all input committed (rec/s) | peak RSS (MiB) | changelog records per input |\n|---|---:|---:|---:|\n",
    );
    for (label, key) in engines {
        let rate = f.num(&format!("{w}.{key}.rate"));
        if rate.is_none() {
            continue;
        }
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            fmt_num(rate, 0),
            fmt_num(f.num(&format!("{w}.{key}.peak_rss_mib")), 0),
            fmt_num(
                f.ratio(
                    &format!("{w}.{key}.changelog_records"),
                    &format!("{w}.records")
                ),
                3
            ),
        );
    }
    out
}

/// What the output check compares, for BENCHMARKS.md.
const COMPARISON: &str = "## How the outputs are compared\n\n\
Each engine's output topic is read to its end (kstate's exactly_once_v2 output read_committed) and reduced to its compacted view: \
the last value of every session key `(key, start, end)`, tombstones removed. The two views must be equal, key, window and count, \
on every session whose result does not depend on when a cache is flushed. With the cache on, an input record whose lookup window \
`[t - gap, t + gap]` reaches sessions that may be past retention (`t - gap <= stream time - retention`, stream time per input \
partition) while an earlier record of its key lies in that window merges with such a session if it is still cached, and finds \
nothing if it was flushed and expired below the cache; which happens depends on wall-clock commits and eviction order, in Kafka \
Streams as in kstate. The Java equivalence suite (`tests/java_equivalence.rs`, `flush_dependent`) drops such records from its inputs; \
the bench keeps its input whole and leaves out of the comparison, per key, the sessions within reach of such a record: the region \
`[t - gap, t + gap]` around it, grown to a fixpoint by every session of either output lying within a gap of the region \
(`benches/worker_vs_streams/compare.rs`). The counts of sessions compared, left out, and differing in all are reported above; \
the bench exits non-zero if a compared session differs.\n\n";

/// Writes BENCHMARKS.md.
pub fn write_markdown(
    path: &Path,
    f: &Figures,
    workloads: &[String],
    command: &str,
    notes: &[String],
) -> anyhow::Result<()> {
    let mut md = String::new();
    md.push_str("# Benchmarks\n\nkstate beside Apache Kafka Streams 4.4.0 (RocksDB, its default store) on the same input, broker and machine, in one run of `scripts/bench`. ");
    md.push_str("Throughput is measured from launching the process until the group has committed every input partition to its end (start-up included, as a new user sees it).\n\n");
    let _ = writeln!(md, "Command: `{command}`\n");
    md.push_str("## Machine\n\n");
    for line in machine() {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(
        md,
        "- load: 1-minute load average {} at the start of the run, {} at the end (the bench's own processes count; above the core count, other work shared the cores and the figures are depressed)\n",
        fmt_num(f.num("load_average_start"), 1),
        fmt_num(f.num("load_average_end"), 1)
    );
    md.push_str("## Headline ratios\n\n| key | value | meaning |\n|---|---:|---|\n");
    for (key, value, meaning) in ratios(f) {
        let _ = writeln!(md, "| `{key}` | {} | {meaning} |", fmt_num(value, 3));
    }
    let engines = [
        ("kstate-worker, at_least_once", "kstate_alos"),
        ("kstate-worker, exactly_once_v2", "kstate_eos"),
        ("Kafka Streams 4.4.0, at_least_once", "kafka_streams"),
        ("bare rdkafka consumer (read only)", "bare_consumer"),
        (
            "bare rdkafka passthrough (consume + produce)",
            "passthrough",
        ),
    ];
    for (i, (w, desc)) in [("a", &workloads[0]), ("b", &workloads[1])]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            md,
            "\n## Workload {} ({})\n\n{desc}; 10 MB cache, commit.interval.ms = 1000.\n",
            i + 1,
            if i == 0 { "default" } else { "second" }
        );
        md.push_str(&workload_rows(f, w, &engines));
        for (label, key) in [
            ("kstate at_least_once", "outputs_equal_alos"),
            ("kstate exactly_once_v2", "outputs_equal_eos"),
        ] {
            let k = format!("{w}.{key}");
            let Some(equal) = f.0.get(&k) else {
                continue;
            };
            let _ = writeln!(
                md,
                "\nOutput of {label} vs Kafka Streams, compacted views on the timing-independent sessions: equal = {equal} ({} of {} compared sessions differ; {} sessions left out as within reach of {} flush-timing-dependent input records; {} sessions differ when those are counted too).",
                fmt_num(f.num(&format!("{k}_differing_sessions")), 0),
                fmt_num(f.num(&format!("{k}_sessions")), 0),
                fmt_num(f.num(&format!("{k}_excluded_sessions")), 0),
                fmt_num(f.num(&format!("{k}_flush_dependent_records")), 0),
                fmt_num(f.num(&format!("{k}_differing_sessions_all")), 0),
            );
        }
    }
    md.push_str("\n## Restore of a wiped store (workload 1)\n\n| | records | launch → ready (rec/s) | first restoring → ready (rec/s) | peak RSS (MiB) |\n|---|---:|---:|---:|---:|\n");
    for (label, key) in [
        ("kstate-worker", "kstate_restore"),
        ("Kafka Streams 4.4.0", "kafka_streams_restore"),
    ] {
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} |",
            fmt_num(f.num(&format!("a.{key}.records")), 0),
            fmt_num(f.num(&format!("a.{key}.rate")), 0),
            fmt_num(f.num(&format!("a.{key}.restore_rate")), 0),
            fmt_num(f.num(&format!("a.{key}.peak_rss_mib")), 0),
        );
    }
    let _ = writeln!(
        md,
        "| ConsumerPerformance on kstate's changelog (fetch ceiling) | {} | | {} | |",
        fmt_num(f.num("a.consumer_perf.records"), 0),
        fmt_num(f.num("a.consumer_perf.fetch_rate"), 0)
    );
    md.push_str("\n## Store hot path (criterion, `benches/session_store.rs`)\n\n");
    let _ = writeln!(
        md,
        "find_sessions + put through the cache at 1M live sessions: {} ops/s on one core; {} heap allocations per record in steady state (counted by a global allocator); aggregate step: {} allocations per record; {} heap bytes per live session at 1M.\n",
        fmt_num(f.num("store.find_sessions_put_1m_ops_per_sec"), 0),
        fmt_num(f.num("store.allocations_per_record_find_sessions_put_1m"), 2),
        fmt_num(f.num("store.allocations_per_record_aggregate_step"), 2),
        fmt_num(f.num("store.heap_bytes_per_live_session_1m"), 1),
    );
    md.push_str(COMPARISON);
    md.push_str("## Plots\n\n![throughput](bench/throughput.png)\n![restore](bench/restore.png)\n![peak RSS](bench/rss.png)\n");
    if !notes.is_empty() {
        md.push_str("\n## Notes\n\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    std::fs::write(path, md)?;
    Ok(())
}

/// Registers DejaVu Sans (from the system fonts) as plotters' "sans-serif".
pub fn register_font() -> anyhow::Result<()> {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    let bytes = candidates
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .context("no DejaVuSans.ttf for the plots (apt-get install fonts-dejavu-core)")?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("DejaVuSans.ttf is not a usable font"))?;
    Ok(())
}

/// A bar chart of `bars` (label, value) with the value written above each bar.
pub fn bar_chart(
    path: &Path,
    title: &str,
    unit: &str,
    bars: &[(String, f64)],
) -> anyhow::Result<()> {
    let bars: Vec<&(String, f64)> = bars.iter().filter(|b| b.1.is_finite()).collect();
    anyhow::ensure!(!bars.is_empty(), "no figures for {title}");
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.15 + 1.0;
    let n = bars.len() as i32;
    let root = BitMapBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                bars.get(*i as usize).map_or(String::new(), |b| b.0.clone())
            }
            SegmentValue::Last => String::new(),
        })
        .y_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(RGBColor(52, 101, 164).filled())
            .margin(30)
            .data(bars.iter().enumerate().map(|(i, b)| (i as i32, b.1))),
    )?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        Text::new(
            fmt_num(Some(b.1), 1),
            (SegmentValue::CenterOf(i as i32), b.1 + top * 0.02),
            ("sans-serif", 15),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// The three plots of the report into `dir`.
pub fn plots(dir: &Path, f: &Figures) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pick = |pairs: &[(&str, &str)]| -> Vec<(String, f64)> {
        pairs
            .iter()
            .filter_map(|(label, key)| f.num(key).map(|v| (label.to_string(), v)))
            .collect()
    };
    bar_chart(
        &dir.join("throughput.png"),
        "Workload 1: launch → all input committed",
        "records/s",
        &pick(&[
            ("kstate ALOS", "a.kstate_alos.rate"),
            ("kstate EOS v2", "a.kstate_eos.rate"),
            ("Kafka Streams", "a.kafka_streams.rate"),
            ("rdkafka passthrough", "a.passthrough.rate"),
            ("rdkafka consumer", "a.bare_consumer.rate"),
        ]),
    )?;
    bar_chart(
        &dir.join("restore.png"),
        "Workload 1: restore of a wiped store",
        "changelog records/s",
        &pick(&[
            ("kstate (launch → ready)", "a.kstate_restore.rate"),
            (
                "kstate (restoring → ready)",
                "a.kstate_restore.restore_rate",
            ),
            (
                "Kafka Streams (launch → RUNNING)",
                "a.kafka_streams_restore.rate",
            ),
            ("ConsumerPerformance fetch", "a.consumer_perf.fetch_rate"),
        ]),
    )?;
    bar_chart(
        &dir.join("rss.png"),
        "Peak RSS",
        "MiB",
        &pick(&[
            ("kstate ALOS (1)", "a.kstate_alos.peak_rss_mib"),
            ("kstate EOS v2 (1)", "a.kstate_eos.peak_rss_mib"),
            ("Kafka Streams (1)", "a.kafka_streams.peak_rss_mib"),
            ("kstate ALOS (2)", "b.kstate_alos.peak_rss_mib"),
            ("Kafka Streams (2)", "b.kafka_streams.peak_rss_mib"),
        ]),
    )?;
    Ok(())
}
