//! Checking a tree into typed settings: every problem is collected, none stops the check.
//!
//! A settings type's `check_*` function takes its node as a [`Field`] (the node and its path),
//! reads what it needs through the [`Checker`]'s readers, each of which reports what is wrong
//! with its field and returns `None`, and builds its value from what was valid. A mapping is
//! read through [`Map`]: every key asked for is a known key, and [`Map::finish`] reports the
//! others as unknown, with their line and the keys that were asked for.

use std::fmt;
use std::time::Duration;

use crate::tree::{describe, Node, Value};
use crate::{format_duration, parse_duration};

/// The path of the document itself in problems.
pub const ROOT: &str = "(document)";

/// One thing wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file name as given.
    pub origin: String,
    /// 1-based; `None` for the document as a whole (a missing top-level key).
    pub line: Option<usize>,
    /// Field path such as `targets[0].tables[1]`; [`ROOT`] for the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}: {}", self.origin, self.path, self.message),
            None => write!(f, "{}: {}: {}", self.origin, self.path, self.message),
        }
    }
}

/// A node and where it sits in the document.
#[derive(Debug, Clone)]
pub struct Field<'n> {
    pub node: &'n Node,
    /// Empty for the document.
    pub path: String,
}

impl<'n> Field<'n> {
    pub fn root(node: &'n Node) -> Field<'n> {
        Field {
            node,
            path: String::new(),
        }
    }

    pub fn key(&self, key: &str, node: &'n Node) -> Field<'n> {
        let path = match self.path.is_empty() {
            true => key.to_owned(),
            false => format!("{}.{key}", self.path),
        };
        Field { node, path }
    }

    pub fn index(&self, index: usize, node: &'n Node) -> Field<'n> {
        Field {
            node,
            path: format!("{}[{index}]", self.path),
        }
    }

    /// The path as problems name it.
    pub fn name(&self) -> &str {
        match self.path.is_empty() {
            true => ROOT,
            false => &self.path,
        }
    }
}

/// Collects the problems of one file while its tree is checked.
#[derive(Debug)]
pub struct Checker {
    origin: String,
    /// With the place used to order them; the document's own sort last.
    problems: Vec<((usize, usize), Problem)>,
}

impl Checker {
    pub fn new(origin: &str) -> Checker {
        Checker {
            origin: origin.to_owned(),
            problems: Vec::new(),
        }
    }

    pub fn report(&mut self, at: &Field, message: impl Into<String>) {
        self.report_at(at.name(), at.node, message);
    }

    /// Reports a problem about `path` on the line of `node` (a missing key is reported on the
    /// line of the mapping that lacks it).
    pub fn report_at(&mut self, path: &str, node: &Node, message: impl Into<String>) {
        let place = match node.line {
            0 => (usize::MAX, usize::MAX),
            line => (line, node.col),
        };
        let problem = Problem {
            origin: self.origin.clone(),
            line: (node.line > 0).then_some(node.line),
            path: path.to_owned(),
            message: message.into(),
        };
        self.problems.push((place, problem));
    }

    /// What was reported so far, in the order it was reported.
    pub fn reported(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().map(|(_, p)| p)
    }

    /// `value` if nothing was reported, else every problem in document order (problems at one
    /// place in the order they were found).
    pub fn finish<T>(mut self, value: T) -> Result<T, Vec<Problem>> {
        if self.problems.is_empty() {
            return Ok(value);
        }
        self.problems.sort_by_key(|(place, _)| *place);
        Err(self.problems.into_iter().map(|(_, p)| p).collect())
    }

    /// The keys of a mapping, or `None` (reported) for anything else.
    pub fn map<'n>(&mut self, at: &Field<'n>) -> Option<Map<'n>> {
        match &at.node.value {
            Value::Map(entries) => Some(Map {
                at: at.clone(),
                entries,
                asked: Vec::new(),
            }),
            other => {
                self.report(at, format!("expected a mapping, found {}", describe(other)));
                None
            }
        }
    }

    /// The items of a list that must not be empty; none (reported with `empty`) otherwise.
    pub fn list<'n>(&mut self, at: &Field<'n>, empty: &str) -> Vec<Field<'n>> {
        match &at.node.value {
            Value::Seq(items) if !items.is_empty() => {
                return (items.iter().enumerate())
                    .map(|(i, n)| at.index(i, n))
                    .collect()
            }
            Value::Seq(_) | Value::Null => self.report(at, empty),
            other => self.report(at, format!("expected a list, found {}", describe(other))),
        }
        Vec::new()
    }

    /// A string, or `None` (reported). A number or boolean where a string belongs gets a hint:
    /// YAML reads `external_id: 12345` as a number.
    pub fn string<'n>(&mut self, at: &Field<'n>, what: &str) -> Option<&'n str> {
        let found = describe(&at.node.value);
        let hint = match &at.node.value {
            Value::String(s) => return Some(s),
            Value::Bool(_) | Value::Number(..) => format!(" (quote it: \"{found}\")"),
            _ => String::new(),
        };
        self.report(at, format!("expected {what}, found {found}{hint}"));
        None
    }

    pub fn boolean(&mut self, at: &Field) -> Option<bool> {
        if let Value::Bool(b) = at.node.value {
            return Some(b);
        }
        let found = describe(&at.node.value);
        self.report(at, format!("expected true or false, found {found}"));
        None
    }

    /// A whole number within `min..=max` (`min` at least 1).
    pub fn integer<T: TryFrom<u64>>(&mut self, at: &Field, min: u64, max: u64) -> Option<T> {
        let n = match &at.node.value {
            Value::Number(n, _) if at.node.is_integer() => *n,
            other => {
                let found = describe(other);
                self.report(at, format!("expected a positive integer, found {found}"));
                return None;
            }
        };
        self.within(at, n, (min as f64, max as f64), (&min, &max), false)?;
        T::try_from(n as u64).ok()
    }

    /// A finite number within `min..=max` (`min` above zero).
    pub fn number(&mut self, at: &Field, min: f64, max: f64) -> Option<f64> {
        match &at.node.value {
            Value::Number(n, _) if !n.is_nan() => {
                self.within(at, *n, (min, max), (&min, &max), true)
            }
            other => {
                let found = describe(other);
                self.report(at, format!("expected a positive number, found {found}"));
                None
            }
        }
    }

    /// A duration within `min..=max` (`min` above zero), in [`parse_duration`]'s syntax.
    pub fn duration(&mut self, at: &Field, min: Duration, max: Duration) -> Option<Duration> {
        let Value::String(text) = &at.node.value else {
            let found = describe(&at.node.value);
            let message = format!("expected a duration such as \"30s\", found {found}");
            self.report(at, message);
            return None;
        };
        let d = parse_duration(text)
            .map_err(|err| self.report(at, err.to_string()))
            .ok()?;
        let (lowest, highest) = (format_duration(min), format_duration(max));
        let secs = |d: Duration| d.as_secs_f64();
        self.within(
            at,
            secs(d),
            (secs(min), secs(max)),
            (&lowest, &highest),
            true,
        )?;
        Some(d)
    }

    /// `value` if within `min..=max`, else `None` (reported, naming the limits as `names` say
    /// them). With `positive`, zero and below is "must be greater than zero" whatever the lowest.
    fn within(
        &mut self,
        at: &Field,
        value: f64,
        (min, max): (f64, f64),
        (lowest, highest): (&dyn fmt::Display, &dyn fmt::Display),
        positive: bool,
    ) -> Option<f64> {
        let message = if positive && value <= 0.0 {
            "must be greater than zero".to_owned()
        } else if value < min {
            format!("must be at least {lowest}")
        } else if value > max {
            format!("must be at most {highest}")
        } else {
            return Some(value);
        };
        self.report(at, message);
        None
    }
}

/// One mapping being checked.
///
/// Every key asked for with [`Map::get`] is a known key, written or not; whatever was never
/// asked for is unknown and [`Map::finish`] reports it, offering the known keys in the order
/// they were asked for. So the keys a mapping accepts are its check function itself.
#[derive(Debug)]
pub struct Map<'n> {
    at: Field<'n>,
    entries: &'n [(Node, Node)],
    asked: Vec<&'static str>,
}

impl<'n> Map<'n> {
    /// A mapping with no keys at `at` (an empty document).
    pub fn empty(at: &Field<'n>) -> Map<'n> {
        Map {
            at: at.clone(),
            entries: &[],
            asked: Vec::new(),
        }
    }

    /// The value written for `key`, with its path. Makes `key` a known key.
    pub fn get(&mut self, key: &'static str) -> Option<Field<'n>> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        let (_, value) = (self.entries.iter())
            .find(|(k, _)| matches!(&k.value, Value::String(s) if s == key))?;
        Some(self.at.key(key, value))
    }

    /// Like [`Map::get`], but a missing key is reported, on the line of this mapping.
    pub fn require(
        &mut self,
        c: &mut Checker,
        key: &'static str,
        missing: &str,
    ) -> Option<Field<'n>> {
        let found = self.get(key);
        if found.is_none() {
            self.missing(c, key, missing);
        }
        found
    }

    /// Reports `key` as missing, on the line of this mapping.
    pub fn missing(&self, c: &mut Checker, key: &str, message: &str) {
        c.report_at(self.at.key(key, self.at.node).name(), self.at.node, message);
    }

    /// Reports every key that was not asked for.
    pub fn finish(self, c: &mut Checker) {
        self.finish_with(c, |_, known| {
            format!("unknown key (expected one of: {})", known.join(", "))
        });
    }

    /// Reports every key that was not asked for, in the words `message` gives it from the key
    /// (as written) and the keys asked for: a file format whose readers already know other
    /// words for this keeps them.
    pub fn finish_with(self, c: &mut Checker, message: impl Fn(&str, &[&'static str]) -> String) {
        for (key, _) in self.entries {
            let label = match &key.value {
                Value::String(s) if self.asked.contains(&s.as_str()) => continue,
                Value::String(s) => s.clone(),
                Value::Number(_, text) => text.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_owned(),
                other => format!("({})", describe(other)),
            };
            let message = message(&label, &self.asked);
            c.report(&self.at.key(&label, key), message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, read: impl FnOnce(&mut Checker, &Field)) -> Vec<String> {
        let root = crate::parse(text, "t.yaml").unwrap();
        let mut c = Checker::new("t.yaml");
        read(&mut c, &Field::root(&root));
        match c.finish(()) {
            Ok(()) => Vec::new(),
            Err(problems) => problems.iter().map(Problem::to_string).collect(),
        }
    }

    #[test]
    fn a_mapping_accepts_exactly_the_keys_it_asks_for_in_asked_order() {
        let got = check("b: 1\nzz: 2\na: 3\n7: x\n", |c, root| {
            let mut m = c.map(root).unwrap();
            // Asked for but absent keys are offered too; asking twice lists a key once.
            assert!(m.get("new_key").is_none());
            let b = m.get("b").unwrap();
            assert_eq!((b.path.as_str(), b.node.line), ("b", 1));
            assert!(m.get("a").is_some() && m.get("b").is_some());
            m.require(c, "gone", "is required");
            m.finish(c);
        });
        assert_eq!(
            got,
            [
                "t.yaml:2: zz: unknown key (expected one of: new_key, b, a, gone)",
                "t.yaml:4: 7: unknown key (expected one of: new_key, b, a, gone)",
                "t.yaml: gone: is required",
            ]
        );
    }

    #[test]
    fn readers_report_what_they_found() {
        let text = "\
s: 5
b: \"yes\"
i: 2.5
n: .nan
d: 5
l: x
m: [1]
e: []
";
        let got = check(text, |c, root| {
            let f = |key: &str| root.key(key, root.node.get(key).unwrap());
            assert_eq!(c.string(&f("s"), "a name"), None);
            assert_eq!(c.boolean(&f("b")), None);
            assert_eq!(c.integer::<u32>(&f("i"), 1, 9), None);
            assert_eq!(c.number(&f("n"), 0.5, 9.0), None);
            assert_eq!(
                c.duration(&f("d"), Duration::from_secs(1), Duration::from_secs(9)),
                None
            );
            assert!(c.list(&f("l"), "must list one").is_empty());
            assert!(c.map(&f("m")).is_none());
            assert!(c.list(&f("e"), "must list one").is_empty());
        });
        assert_eq!(
            got,
            [
                "t.yaml:1: s: expected a name, found 5 (quote it: \"5\")",
                "t.yaml:2: b: expected true or false, found \"yes\"",
                "t.yaml:3: i: expected a positive integer, found 2.5",
                "t.yaml:4: n: expected a positive number, found .nan",
                "t.yaml:5: d: expected a duration such as \"30s\", found 5",
                "t.yaml:6: l: expected a list, found \"x\"",
                "t.yaml:7: m: expected a mapping, found a list",
                "t.yaml:8: e: must list one",
            ]
        );
    }

    #[test]
    fn ranges_name_their_limits() {
        let cases = [
            ("0", "must be at least 1"),
            ("-4", "must be at least 1"),
            ("11", "must be at most 10"),
            ("1e300", "expected a positive integer, found 1e300"),
            ("99999999999999999999", "must be at most 10"),
        ];
        for (text, want) in cases {
            let got = check(&format!("x: {text}\n"), |c, root| {
                let x = root.key("x", root.node.get("x").unwrap());
                assert_eq!(c.integer::<u32>(&x, 1, 10), None);
            });
            assert_eq!(got, [format!("t.yaml:1: x: {want}")], "{text}");
        }
        let cases = [
            ("0", "must be greater than zero"),
            ("-.inf", "must be greater than zero"),
            ("0.001", "must be at least 0.01"),
            ("1e400", "must be at most 100"),
            ("100.5", "must be at most 100"),
        ];
        for (text, want) in cases {
            let got = check(&format!("x: {text}\n"), |c, root| {
                let x = root.key("x", root.node.get("x").unwrap());
                assert_eq!(c.number(&x, 0.01, 100.0), None);
            });
            assert_eq!(got, [format!("t.yaml:1: x: {want}")], "{text}");
        }
        let cases = [
            ("0s", "must be greater than zero"),
            ("99ms", "must be at least 100ms"),
            ("1h1ms", "must be at most 1h"),
            ("99.9ms", "must be at least 100ms"),
            ("1.5.s", "\"1.5.s\" is not a duration"),
            ("-1s", "\"-1s\" is negative"),
        ];
        for (text, want) in cases {
            let got = check(&format!("x: {text}\n"), |c, root| {
                let x = root.key("x", root.node.get("x").unwrap());
                let (min, max) = (Duration::from_millis(100), Duration::from_secs(3600));
                assert_eq!(c.duration(&x, min, max), None);
            });
            assert_eq!(got, [format!("t.yaml:1: x: {want}")], "{text}");
        }
        let got = check("[1, 10, 0.01, 100, 100ms, 1h]", |c, root| {
            let Value::Seq(items) = &root.node.value else {
                panic!("a list")
            };
            let at = |i: usize| root.index(i, &items[i]);
            assert_eq!(c.integer::<u32>(&at(0), 1, 10), Some(1));
            assert_eq!(c.integer::<u32>(&at(1), 1, 10), Some(10));
            assert_eq!(c.number(&at(2), 0.01, 100.0), Some(0.01));
            assert_eq!(c.number(&at(3), 0.01, 100.0), Some(100.0));
            let (min, max) = (Duration::from_millis(100), Duration::from_secs(3600));
            assert_eq!(c.duration(&at(4), min, max), Some(min));
            assert_eq!(c.duration(&at(5), min, max), Some(max));
        });
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn problems_come_in_document_order_and_the_documents_own_last() {
        let root = crate::parse("x: 1\ny: 2\n", "t.yaml").unwrap();
        let mut c = Checker::new("t.yaml");
        let at = Field::root(&root);
        c.report(&at, "whole");
        c.report(&at.key("y", root.get("y").unwrap()), "second");
        c.report(&at.key("x", root.get("x").unwrap()), "first");
        let got: Vec<String> = c
            .finish(())
            .unwrap_err()
            .iter()
            .map(Problem::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "t.yaml:1: x: first",
                "t.yaml:2: y: second",
                "t.yaml: (document): whole"
            ]
        );
    }
}
