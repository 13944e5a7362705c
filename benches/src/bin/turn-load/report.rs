//! The results: the CPU time samples, the human and JSON lines, the `--report` table.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use crate::{Args, Mode, Transport};

/// What one run measured.
pub(crate) struct Outcome {
    pub(crate) seconds: f64,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) late: u64,
    pub(crate) invalid: u64,
    /// Connections the server closed (TCP and TLS) or sessions that ended (DTLS) during the
    /// run.
    pub(crate) closed: u64,
    pub(crate) p50_us: Option<u64>,
    pub(crate) p99_us: Option<u64>,
    pub(crate) max_us: Option<u64>,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) generator_cpu_s: f64,
    pub(crate) load_average: String,
    /// TLS and DTLS: the version and cipher suite negotiated.
    pub(crate) tls: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// CPU time.

/// utime + stime of a process (every thread), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (is the server running?)"))?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let (_, fields) = stat.rsplit_once(')').context("malformed /proc/PID/stat")?;
    // After ')': state is field 3, utime field 14, stime field 15.
    let mut fields = fields.split_whitespace().skip(11);
    let mut next = || -> Result<u64> {
        Ok(fields
            .next()
            .context("short /proc/PID/stat")?
            .parse::<u64>()?)
    };
    Ok(next()? + next()?)
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub(crate) fn clock_tick() -> Result<f64> {
    let tick =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("CLK_TCK unknown")?;
    ensure!(tick > 0, "CLK_TCK is {tick}");
    Ok(tick as f64)
}

// ---------------------------------------------------------------------------------------------
// Output.

impl Outcome {
    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.lost() as f64 / self.sent as f64
        }
    }

    fn rate(&self) -> f64 {
        self.received as f64 / self.seconds
    }

    fn per_rt_us(&self, cpu_s: f64) -> Option<f64> {
        (self.received > 0).then(|| cpu_s * 1e6 / self.received as f64)
    }

    pub(crate) fn to_json(&self, args: &Args) -> Value {
        json!({
            "name": args.name,
            "row": args.row.clone().unwrap_or_else(|| describe(args)),
            "mode": args.mode.name(),
            "transport": args.transport.name(),
            "tls": self.tls,
            "size": if args.mode == Mode::Binding { Value::Null } else { json!(args.size) },
            "allocations": args.allocations,
            "window": if args.rate.is_some() { Value::Null } else { json!(args.window) },
            "target_rate": args.rate,
            "seconds": self.seconds,
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost(),
            "late": self.late,
            "invalid": self.invalid,
            "connections_closed": self.closed,
            "round_trips_per_s": self.rate(),
            "loss_pct": self.loss_pct(),
            "rtt_p50_us": self.p50_us,
            "rtt_p99_us": self.p99_us,
            "rtt_max_us": self.max_us,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_us_per_rt": self.server_cpu_s.and_then(|c| self.per_rt_us(c)),
            "server_cores": self.server_cpu_s.map(|c| c / self.seconds),
            "generator_cpu_s": self.generator_cpu_s,
            "generator_cpu_us_per_rt": self.per_rt_us(self.generator_cpu_s),
            "generator_cores": self.generator_cpu_s / self.seconds,
            "load_average": self.load_average,
        })
    }

    pub(crate) fn human(&self, args: &Args) -> String {
        let us = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let server = match self.server_cpu_s {
            Some(c) => format!(
                "server CPU {:.2} µs/rt ({:.2} cores)",
                self.per_rt_us(c).unwrap_or(f64::NAN),
                c / self.seconds
            ),
            None => "server CPU not sampled (no --pid)".to_owned(),
        };
        // The row's name says the transport; TLS and DTLS add what was negotiated.
        let mut transport = match &self.tls {
            Some(tls) => format!(" ({tls})"),
            None => String::new(),
        };
        if self.closed > 0 {
            transport.push_str(&format!(
                " ({} connections closed by the server)",
                self.closed
            ));
        }
        format!(
            "{}: {}{}: {:.0} rt/s, loss {:.3} % ({} of {} sent, {} late, {} invalid), RTT p50 {} µs p99 {} µs, {}, generator CPU {:.2} µs/rt ({:.2} cores), load {}",
            args.name,
            args.row.clone().unwrap_or_else(|| describe(args)),
            transport,
            self.rate(),
            self.loss_pct(),
            self.lost(),
            self.sent,
            self.late,
            self.invalid,
            us(self.p50_us),
            us(self.p99_us),
            server,
            self.per_rt_us(self.generator_cpu_s).unwrap_or(f64::NAN),
            self.generator_cpu_s / self.seconds,
            self.load_average,
        )
    }
}

fn describe(args: &Args) -> String {
    let what = match args.mode {
        Mode::Binding => "STUN Binding".to_owned(),
        mode => format!("{} {} B", mode.name(), args.size),
    };
    let what = match args.transport {
        Transport::Udp => what,
        transport => format!("{what} over {}", transport.name().to_uppercase()),
    };
    match args.rate {
        Some(rate) => format!("{what}, {rate} rt/s"),
        None => format!("{what}, saturated"),
    }
}

/// Prints a table comparing the servers of a file of `--json` lines: one row per `row`, the
/// servers in the order they first appear, ratios of the first to the second.
pub(crate) fn report(path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut names: Vec<String> = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), Value> = BTreeMap::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let value: Value = serde_json::from_str(line).context("a --json line")?;
        let name = value["name"].as_str().unwrap_or("?").to_owned();
        let row = value["row"].as_str().unwrap_or("?").to_owned();
        if !names.contains(&name) {
            names.push(name.clone());
        }
        if !rows.contains(&row) {
            rows.push(row.clone());
        }
        cells.insert((row, name), value);
    }
    ensure!(!names.is_empty(), "no results in {}", path.display());
    let (a, b) = (names[0].clone(), names.get(1).cloned().unwrap_or_default());
    let get = |row: &str, name: &str, key: &str| -> Option<f64> {
        cells
            .get(&(row.to_owned(), name.to_owned()))
            .and_then(|v| v[key].as_f64())
    };
    let fmt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
        _ => "-".to_owned(),
    };
    println!(
        "| row | {a} rt/s | {b} rt/s | rt/s {a}/{b} | {a} CPU µs/rt | {b} CPU µs/rt | CPU/rt {a}/{b} | {a} loss % | {b} loss % | {a} p50/p99 µs | {b} p50/p99 µs | {a} cores | {b} cores |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let rate = |n: &str| get(row, n, "round_trips_per_s");
        let cpu = |n: &str| get(row, n, "server_cpu_us_per_rt");
        let loss = |n: &str| get(row, n, "loss_pct");
        let rtt = |n: &str| {
            format!(
                "{}/{}",
                fmt(get(row, n, "rtt_p50_us"), 0),
                fmt(get(row, n, "rtt_p99_us"), 0)
            )
        };
        let cores = |n: &str| get(row, n, "server_cores");
        println!(
            "| {row} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(rate(&a), 0),
            fmt(rate(&b), 0),
            ratio(rate(&a), rate(&b)),
            fmt(cpu(&a), 2),
            fmt(cpu(&b), 2),
            ratio(cpu(&a), cpu(&b)),
            fmt(loss(&a), 3),
            fmt(loss(&b), 3),
            rtt(&a),
            rtt(&b),
            fmt(cores(&a), 2),
            fmt(cores(&b), 2),
        );
    }
    // What the TLS and DTLS rows negotiated, and connections a server closed under load: both
    // matter when reading those rows.
    let mut notes: Vec<String> = Vec::new();
    for ((row, name), value) in &cells {
        if let Some(tls) = value["tls"].as_str() {
            let transport = value["transport"].as_str().unwrap_or("tls").to_uppercase();
            let note = format!("{transport} with {name}: {tls}");
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        let closed = value["connections_closed"].as_u64().unwrap_or(0);
        if closed > 0 {
            notes.push(format!(
                "{name}, {row}: the server closed {closed} connections during the run"
            ));
        }
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("{note}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn reads_its_own_cpu_time() -> Result<()> {
        let before = cpu_ticks(std::process::id())?;
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ticks(std::process::id())? >= before);
        assert!(clock_tick()? > 0.0);
        Ok(())
    }
}
