//! Prometheus text exposition: the one way Ferry writes `/metrics`.
//!
//! Every metric goes through [`Exposition`]: a family's `# TYPE` line once,
//! then its samples, `name{label="value",...} number`, with label values
//! escaped as the text format asks (`\`, `"` and newlines). Below every
//! other module, so that the storage and cluster layers render their own
//! counters the same way.

use std::collections::HashSet;
use std::fmt::{Display, Write as _};

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// Prometheus text being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    typed: HashSet<String>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Declares a family (its `# TYPE` line), once however often it is
    /// called.
    pub fn family(&mut self, name: &str, kind: Kind) -> &mut Self {
        if self.typed.insert(name.to_owned()) {
            let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        }
        self
    }

    /// One sample of `name` (declared with [`Exposition::family`]).
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with one sample and no labels.
    pub fn single(&mut self, name: &str, kind: Kind, value: impl Display) -> &mut Self {
        self.family(name, kind).sample(name, &[], value)
    }

    /// Text already in the exposition format (from another [`Exposition`]).
    pub fn append(&mut self, other: Exposition) -> &mut Self {
        self.out.push_str(&other.out);
        self.typed.extend(other.typed);
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value, escaped as the text format asks.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_typed_once_and_labels_escaped() {
        let mut e = Exposition::new();
        e.family("a_total", Kind::Counter)
            .sample("a_total", &[("zone", "az\"1\\\nx")], 3);
        e.family("a_total", Kind::Counter)
            .sample("a_total", &[("zone", "b"), ("kind", "k")], 4);
        e.single("g", Kind::Gauge, 1.5);
        assert_eq!(
            e.finish(),
            "# TYPE a_total counter\n\
             a_total{zone=\"az\\\"1\\\\\\nx\"} 3\n\
             a_total{zone=\"b\",kind=\"k\"} 4\n\
             # TYPE g gauge\n\
             g 1.5\n"
        );
    }

    #[test]
    fn appending_keeps_one_type_line_per_family() {
        let mut a = Exposition::new();
        a.single("x_total", Kind::Counter, 1);
        let mut b = Exposition::new();
        b.single("y", Kind::Gauge, 2);
        a.append(b);
        a.family("y", Kind::Gauge);
        assert_eq!(
            a.finish(),
            "# TYPE x_total counter\nx_total 1\n# TYPE y gauge\ny 2\n"
        );
    }
}
