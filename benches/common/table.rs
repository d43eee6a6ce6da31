//! Results: percentiles of timed runs, and the table a bench prints (and
//! writes as TSV under `target/`).

use std::path::Path;
use std::time::Duration;

pub const MIB: usize = 1 << 20;

/// Decimal megabytes per second.
pub fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles, in milliseconds.
    pub fn of(mut times: Vec<Duration>) -> Self {
        assert!(!times.is_empty(), "at least one timed run");
        times.sort();
        let rank = |p: usize| {
            let i = (times.len() * p).div_ceil(100).max(1) - 1;
            times[i].as_secs_f64() * 1e3
        };
        Self {
            n: times.len(),
            p50: rank(50),
            p99: rank(99),
        }
    }
}

#[derive(Default)]
pub struct Table {
    rows: Vec<(String, f64, &'static str, String)>,
}

impl Table {
    pub fn row(&mut self, measure: &str, value: f64, unit: &'static str, comment: String) {
        self.rows.push((measure.to_owned(), value, unit, comment));
    }

    fn value(value: f64, unit: &str) -> String {
        match unit {
            "ms" | "x" => format!("{value:.3}"),
            "KiB" => format!("{value:.1}"),
            _ => format!("{value:.0}"),
        }
    }

    pub fn print(&self) {
        let width = self
            .rows
            .iter()
            .map(|(m, ..)| m.len())
            .max()
            .unwrap_or(0)
            .max("measure".len());
        println!();
        println!(
            "{:<width$}  {:>10}  {:<5}  ratio/comment",
            "measure", "value", "unit"
        );
        println!("{}", "-".repeat(width + 34));
        for (measure, value, unit, comment) in &self.rows {
            println!(
                "{measure:<width$}  {:>10}  {unit:<5}  {comment}",
                Self::value(*value, unit)
            );
        }
        println!();
    }

    fn tsv(&self) -> String {
        let mut out = String::from("measure\tvalue\tunit\tratio/comment\n");
        for (measure, value, unit, comment) in &self.rows {
            out.push_str(&format!(
                "{measure}\t{}\t{unit}\t{comment}\n",
                Self::value(*value, unit)
            ));
        }
        out
    }

    /// Writes the table as TSV to `target/<name>` and says where.
    pub fn write_tsv(&self, name: &str) {
        let tsv = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(name);
        match std::fs::write(&tsv, self.tsv()) {
            Ok(()) => println!("written to {}", tsv.display()),
            Err(e) => eprintln!("cannot write {}: {e}", tsv.display()),
        }
    }
}
