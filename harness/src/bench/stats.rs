//! Latency statistics (hdrhistogram, microseconds) and timestamped-line parsing.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }
}

impl Latency {
    pub fn record_ns(&mut self, ns: u64) {
        self.hist.saturating_record((ns / 1_000).max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        let _ = self.hist.add(&other.hist);
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        let q = |q: f64| self.hist.value_at_quantile(q) as f64;
        LatencySummary {
            count: self.hist.len(),
            mean: self.hist.mean(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: self.hist.max() as f64,
        }
    }

    /// The percentile curve for plots: (quantile, µs) at 1 - 10^(-k/10), k = 0..=40, then max.
    pub fn curve(&self) -> Vec<[f64; 2]> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        let mut pts = Vec::new();
        for k in 0..=40 {
            let q = 1.0 - 10f64.powf(-(k as f64) / 10.0);
            let q = if k == 0 { 0.0 } else { q };
            pts.push([q, self.hist.value_at_quantile(q) as f64]);
            // Stop once fewer than ~2 samples lie beyond this quantile.
            if (1.0 - q) * (self.hist.len() as f64) < 2.0 {
                break;
            }
        }
        pts.push([1.0, self.hist.max() as f64]);
        pts
    }
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Splits one task's output into lines and turns each timestamp line (the helper's
/// `monotonic` step: decimal `CLOCK_MONOTONIC` ns alone on a line) into a latency sample.
/// Small per task (a histogram is ~200 KiB: one per task would dwarf what is measured).
#[derive(Default)]
pub struct LineClock {
    partial: Vec<u8>,
    pub lines: u64,
    pub bytes: u64,
    /// The last timestamp line seen.
    pub last_stamp: Option<u64>,
    /// Line latencies (ns) of the timestamp lines.
    pub samples: Vec<u64>,
}

impl LineClock {
    /// Feeds a chunk that arrived at `now_ns`; records each completed timestamp line.
    pub fn feed(&mut self, chunk: &[u8], now_ns: u64) {
        self.bytes += chunk.len() as u64;
        let mut rest = chunk;
        while let Some(i) = find_newline(rest) {
            self.lines += 1;
            let line = &rest[..i];
            if self.partial.is_empty() {
                self.line(line, now_ns);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, now_ns);
            }
            rest = &rest[i + 1..];
        }
        if !rest.is_empty() {
            // Keep at most a line's worth: only short timestamp lines matter.
            if self.partial.len() < 64 {
                self.partial.extend_from_slice(&rest[..rest.len().min(64)]);
            }
        }
    }

    fn line(&mut self, line: &[u8], now_ns: u64) {
        if let Some(ts) = parse_timestamp(line) {
            self.last_stamp = Some(ts);
            self.samples.push(now_ns.saturating_sub(ts));
        }
    }

    /// Moves this task's line latencies into `lat`.
    pub fn record_into(&self, lat: &mut Latency) {
        for &ns in &self.samples {
            lat.record_ns(ns);
        }
    }
}

/// The first `\n`, eight bytes at a time (the consumer's cost should not be what a chatty
/// scenario measures).
fn find_newline(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= s.len() {
        let w = u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes")) ^ (LO * b'\n' as u64);
        let hit = w.wrapping_sub(LO) & !w & HI;
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&b| b == b'\n').map(|p| i + p)
}

/// A line of 10 to 20 decimal digits, nothing else.
pub fn parse_timestamp(line: &[u8]) -> Option<u64> {
    if !(10..=20).contains(&line.len()) || !line.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(line).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_search_matches_naive() {
        let text = b"line 0\nline 1\n123456789012\nab\n\nxxxxxxxxxxxxxxxxxxxxxx\nz";
        for start in 0..text.len() {
            let s = &text[start..];
            assert_eq!(
                find_newline(s),
                s.iter().position(|&b| b == b'\n'),
                "from {start}"
            );
        }
    }

    #[test]
    fn line_clock_finds_stamps_across_chunks() {
        let mut c = LineClock::default();
        c.feed(b"line 0\nline 1\n1000000", 2_000_000_000);
        c.feed(b"000000\nline 2\n", 2_000_000_000);
        assert_eq!(c.lines, 4);
        assert_eq!(c.last_stamp, Some(1_000_000_000_000));
        assert_eq!(c.samples.len(), 1);
    }
}
