//! Prometheus metrics, rendered by hand in the text exposition format (version 0.0.4).
//!
//! A handful of labelled counter and histogram families behind mutexes: the server records a
//! few values per request, so contention is negligible next to inference, and no dependency is
//! needed. Families are rendered with `# HELP` and `# TYPE` even before their first sample.
//!
//! Metrics are operator-facing: the per-model selection counters reveal which model of a task
//! served recent requests, which is exactly what a non-disclosing task hides from clients. When
//! API keys are configured, `/metrics` needs an admin key (see [`crate::keys`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets, in seconds: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves plain numbers behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn label_set(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", escape(v))).collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{}\"", escape(v)));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

/// Formats a sample value (Prometheus accepts Go float syntax).
fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

/// A family of counters sharing a name and label names.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl CounterVec {
    /// A new family (the name should end in `_total`).
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self { name, help, labels, values: Mutex::new(BTreeMap::new()) }
    }

    /// Adds `v` to the series with these label values (one per label name).
    pub fn add(&self, labels: &[&str], v: f64) {
        debug_assert_eq!(labels.len(), self.labels.len(), "{}", self.name);
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        *lock(&self.values).entry(key).or_insert(0.0) += v;
    }

    /// Adds one.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    /// The current value of one series (0 when never touched).
    pub fn get(&self, labels: &[&str]) -> f64 {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        lock(&self.values).get(&key).copied().unwrap_or(0.0)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} counter", self.name);
        for (values, v) in lock(&self.values).iter() {
            let _ = writeln!(out, "{}{} {}", self.name, label_set(self.labels, values, None), number(*v));
        }
    }
}

#[derive(Debug, Clone)]
struct HistogramSeries {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A family of histograms with the [`LATENCY_BUCKETS`].
#[derive(Debug)]
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, HistogramSeries>>,
}

impl HistogramVec {
    /// A new family (the name should end in `_seconds`).
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self { name, help, labels, series: Mutex::new(BTreeMap::new()) }
    }

    /// Records one observation.
    pub fn observe(&self, labels: &[&str], seconds: f64) {
        debug_assert_eq!(labels.len(), self.labels.len(), "{}", self.name);
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let mut series = lock(&self.series);
        let s = series.entry(key).or_insert_with(|| HistogramSeries {
            counts: vec![0; LATENCY_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        });
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| seconds <= b) {
            s.counts[i] += 1;
        }
        s.sum += seconds;
        s.count += 1;
    }

    /// Records a duration.
    pub fn observe_duration(&self, labels: &[&str], d: Duration) {
        self.observe(labels, d.as_secs_f64());
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (values, s) in lock(&self.series).iter() {
            let mut cumulative = 0;
            for (bound, c) in LATENCY_BUCKETS.iter().zip(&s.counts) {
                cumulative += c;
                let labels = label_set(self.labels, values, Some(("le", &number(*bound))));
                let _ = writeln!(out, "{}_bucket{labels} {cumulative}", self.name);
            }
            let labels = label_set(self.labels, values, Some(("le", "+Inf")));
            let _ = writeln!(out, "{}_bucket{labels} {}", self.name, s.count);
            let plain = label_set(self.labels, values, None);
            let _ = writeln!(out, "{}_sum{plain} {}", self.name, number(s.sum));
            let _ = writeln!(out, "{}_count{plain} {}", self.name, s.count);
        }
    }
}

/// A gauge computed when the metrics are rendered.
#[derive(Debug, Clone)]
pub struct GaugeSample {
    /// Label values, in the order of the family's label names.
    pub labels: Vec<String>,
    /// The value.
    pub value: f64,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    /// HTTP requests by route template, method and status code.
    pub http_requests: CounterVec,
    /// HTTP request latency (whole request, including queueing) by route template.
    pub http_duration: HistogramVec,
    /// Inference requests by model, version and outcome (`success`, `failure`).
    pub inference_requests: CounterVec,
    /// Samples inferred (the batch sizes summed) by model and version.
    pub inference_samples: CounterVec,
    /// Inference compute time per request by model and version.
    pub inference_duration: HistogramVec,
    /// Time requests waited for an inference thread, by model and version.
    pub queue_duration: HistogramVec,
    /// Model-less requests by task.
    pub task_requests: CounterVec,
    /// Model-less requests served by a model meeting the request's spec, by task.
    pub task_goodput: CounterVec,
    /// Model choices of the selection policy, by task and model.
    pub selections: CounterVec,
    /// Requests refused before inference, by reason (`unauthorized`, `forbidden`,
    /// `rate_limited`, `budget_exhausted`, `saturated`, `timeout`; for secure sessions
    /// `secure_unknown_token`, `secure_token_expired`, `secure_busy`, `secure_bad_handshake`,
    /// `secure_handshakes_full`, and `secure_query_limit` for a session cut off at its grant).
    pub rejections: CounterVec,
    /// Secure-inference sessions by outcome (recorded by the secure-session endpoint).
    pub secure_sessions: CounterVec,
    /// Bytes exchanged by secure-inference sessions, by direction (`in`, `out`).
    pub secure_session_bytes: CounterVec,
    /// Secure-inference session wall time.
    pub secure_session_duration: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        let m = Self {
            http_requests: CounterVec::new(
                "moat_http_requests_total",
                "HTTP requests by route, method and status code.",
                &["route", "method", "code"],
            ),
            http_duration: HistogramVec::new(
                "moat_http_request_duration_seconds",
                "HTTP request latency by route, including queueing.",
                &["route"],
            ),
            inference_requests: CounterVec::new(
                "moat_inference_requests_total",
                "Inference requests by model, version and outcome.",
                &["model", "version", "outcome"],
            ),
            inference_samples: CounterVec::new(
                "moat_inference_samples_total",
                "Samples inferred (batch sizes summed) by model and version.",
                &["model", "version"],
            ),
            inference_duration: HistogramVec::new(
                "moat_inference_duration_seconds",
                "Inference compute time per request by model and version.",
                &["model", "version"],
            ),
            queue_duration: HistogramVec::new(
                "moat_inference_queue_duration_seconds",
                "Time requests waited for an inference thread, by model and version.",
                &["model", "version"],
            ),
            task_requests: CounterVec::new("moat_task_requests_total", "Model-less requests by task.", &["task"]),
            task_goodput: CounterVec::new(
                "moat_task_goodput_total",
                "Model-less requests served by a model meeting the request's spec, by task.",
                &["task"],
            ),
            selections: CounterVec::new(
                "moat_task_selections_total",
                "Models chosen by the selection policy, by task and model.",
                &["task", "model"],
            ),
            rejections: CounterVec::new(
                "moat_rejections_total",
                "Requests refused before inference, by reason.",
                &["reason"],
            ),
            secure_sessions: CounterVec::new(
                "moat_secure_sessions_total",
                "Secure-inference sessions by outcome.",
                &["outcome"],
            ),
            secure_session_bytes: CounterVec::new(
                "moat_secure_session_bytes_total",
                "Bytes exchanged by secure-inference sessions, by direction.",
                &["direction"],
            ),
            secure_session_duration: HistogramVec::new(
                "moat_secure_session_duration_seconds",
                "Secure-inference session wall time.",
                &[],
            ),
        };
        // Present from the start so dashboards see zeros rather than absent series.
        for direction in ["in", "out"] {
            m.secure_session_bytes.add(&[direction], 0.0);
        }
        m
    }

    /// Records one finished secure-inference session: bytes received and sent, wall time and
    /// whether it completed. The hook the secure-session endpoint reports through.
    pub fn record_secure_session(&self, bytes_in: u64, bytes_out: u64, duration: Duration, completed: bool) {
        self.secure_sessions.inc(&[if completed { "completed" } else { "aborted" }]);
        self.secure_session_bytes.add(&["in"], bytes_in as f64);
        self.secure_session_bytes.add(&["out"], bytes_out as f64);
        self.secure_session_duration.observe_duration(&[], duration);
    }

    /// The text exposition of every family, followed by gauges computed by the caller
    /// (`(name, help, label names, samples)`).
    pub fn render(&self, gauges: &[(&str, &str, &[&str], Vec<GaugeSample>)]) -> String {
        let mut out = String::with_capacity(8192);
        self.http_requests.render(&mut out);
        self.http_duration.render(&mut out);
        self.inference_requests.render(&mut out);
        self.inference_samples.render(&mut out);
        self.inference_duration.render(&mut out);
        self.queue_duration.render(&mut out);
        self.task_requests.render(&mut out);
        self.task_goodput.render(&mut out);
        self.selections.render(&mut out);
        self.rejections.render(&mut out);
        self.secure_sessions.render(&mut out);
        self.secure_session_bytes.render(&mut out);
        self.secure_session_duration.render(&mut out);
        for (name, help, labels, samples) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for s in samples {
                let _ = writeln!(out, "{name}{} {}", label_set(labels, &s.labels, None), number(s.value));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.http_requests.inc(&["/v2/models/{model}/infer", "POST", "200"]);
        m.http_requests.inc(&["/v2/models/{model}/infer", "POST", "200"]);
        m.selections.inc(&["digits", "mlp \"small\""]);
        m.inference_duration.observe(&["m", "1"], 0.0003);
        m.inference_duration.observe(&["m", "1"], 20.0);
        let gauges =
            [("moat_models_ready", "Ready model versions.", &[][..], vec![GaugeSample { labels: vec![], value: 3.0 }])];
        let text = m.render(&gauges);
        assert!(
            text.contains(
                "moat_http_requests_total{route=\"/v2/models/{model}/infer\",method=\"POST\",code=\"200\"} 2\n"
            )
        );
        assert!(text.contains("moat_task_selections_total{task=\"digits\",model=\"mlp \\\"small\\\"\"} 1\n"), "{text}");
        // 0.3 ms lands in the 0.5 ms bucket; 20 s only in +Inf.
        assert!(text.contains("moat_inference_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"0.00025\"} 0\n"));
        assert!(text.contains("moat_inference_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("moat_inference_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"10\"} 1\n"));
        assert!(text.contains("moat_inference_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("moat_inference_duration_seconds_count{model=\"m\",version=\"1\"} 2\n"));
        assert!(text.contains("moat_secure_session_bytes_total{direction=\"in\"} 0\n"));
        assert!(text.contains("# TYPE moat_models_ready gauge\nmoat_models_ready 3\n"));
        assert_eq!(m.http_requests.get(&["/v2/models/{model}/infer", "POST", "200"]), 2.0);
    }

    #[test]
    fn secure_session_hook_records_bytes_and_time() {
        let m = Metrics::new();
        m.record_secure_session(1000, 250, Duration::from_millis(40), true);
        assert_eq!(m.secure_session_bytes.get(&["in"]), 1000.0);
        assert_eq!(m.secure_session_bytes.get(&["out"]), 250.0);
        assert_eq!(m.secure_sessions.get(&["completed"]), 1.0);
        assert!(m.render(&[]).contains("moat_secure_session_duration_seconds_count 1\n"));
    }
}
