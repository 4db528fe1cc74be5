//! One read of the text into a tree of [`Node`]s, each with the line it starts on.
//!
//! The tree is built from yaml-rust2's event parser, whose events carry marks. Scalars are
//! resolved as YAML 1.2's core schema says (as serde_yaml does): plain `~`, `null` and nothing
//! are null, `true`/`false` booleans, `5`, `0x1f`, `2.5`, `.inf`, `.nan` numbers, anything
//! quoted a string. Anchors and aliases work (an alias is a copy of its anchor's node, placed at
//! the alias); a document that would expand past [`MAX_NODES`], or nest deeper than
//! [`MAX_DEPTH`], is refused rather than exhausting memory or the stack. Duplicate keys and a
//! second document are errors, as they are for serde_yaml.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

use crate::Problem;

/// Deepest nesting accepted; a deeper tree would overflow the stack when dropped.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may hold, aliases expanded: far above any real config (10,000 tables
/// are about 10,000 nodes), far below what would exhaust memory.
pub const MAX_NODES: usize = 1_000_000;

/// A value and where it starts in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based; 0 for the document itself, which problems name without a line. The value of a
    /// mapping entry is placed at its key, where a reader looks for it.
    pub line: usize,
    /// 0-based; orders problems that share a line (flow style).
    pub col: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number, and its text as written (for messages: `.nan`, `1e3`, `0x10`).
    Number(f64, String),
    String(String),
    Seq(Vec<Node>),
    /// Entries in the order written; keys are unique.
    Map(Vec<(Node, Node)>),
    /// A node with an application tag (`!secret x`), which no reader here understands.
    Tagged(String),
}

impl Node {
    /// The value written for a string `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => (entries.iter())
                .find(|(k, _)| matches!(&k.value, Value::String(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at `path`, a field path as problems name them (`targets[0].tables[2]`; an
    /// index into a mapping is its n-th entry's value), or the deepest node on the way there
    /// when the rest is not written: where a problem about that field belongs.
    pub fn find(&self, path: &str) -> &Node {
        let mut node = self;
        if path.is_empty() || path == crate::ROOT {
            return node;
        }
        for part in path.split('.') {
            let (key, indexes) = part.split_at(part.find('[').unwrap_or(part.len()));
            if !key.is_empty() {
                match node.get(key) {
                    Some(child) => node = child,
                    None => return node,
                }
            }
            for index in indexes.split('[').skip(1) {
                let child = (index.strip_suffix(']'))
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| match &node.value {
                        Value::Seq(items) => items.get(i),
                        Value::Map(entries) => entries.get(i).map(|(_, value)| value),
                        _ => None,
                    });
                match child {
                    Some(child) => node = child,
                    None => return node,
                }
            }
        }
        node
    }

    /// Whether this is a number written as an integer (`5`, `-3`, `0x1f`), not `5.0`.
    pub fn is_integer(&self) -> bool {
        let Value::Number(_, text) = &self.value else {
            return false;
        };
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            || text.starts_with("0x")
            || text.starts_with("0o")
    }
}

/// Reads `text` (one YAML document) into a tree. A syntax error stops the read: it is the one
/// problem reported, at the line the parser gives, about `(document)`.
pub fn parse(text: &str, origin: &str) -> Result<Node, Problem> {
    // yaml-rust2 would make a byte order mark part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = Builder {
        text,
        open: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
    };
    builder.run().map_err(|(line, message)| Problem {
        origin: origin.to_owned(),
        // The parser places errors at the end of input one line past an unterminated last line.
        line: Some(line.clamp(1, text.split('\n').count())),
        path: crate::ROOT.to_owned(),
        message,
    })?;
    let mut root = (builder.root).unwrap_or(Node {
        line: 0,
        col: 0,
        value: Value::Null,
    });
    root.line = 0;
    Ok(root)
}

/// A collection being read: the node so far, its anchor, the node count when it opened (its
/// size, for aliases), a tag to apply when it closes, and for a mapping the key read last.
struct Open {
    node: Node,
    anchor: usize,
    nodes_before: usize,
    tag: Option<String>,
    key: Option<Node>,
}

struct Builder<'t> {
    text: &'t str,
    open: Vec<Open>,
    /// Anchored nodes by id, with their size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    root: Option<Node>,
}

type Failure = (usize, String);

impl Builder<'_> {
    fn run(&mut self) -> Result<(), Failure> {
        let mut parser = Parser::new_from_str(self.text);
        let mut documents = 0;
        loop {
            let (event, mark) = parser
                .next_token()
                .map_err(|e: ScanError| (e.marker().line(), e.info().to_owned()))?;
            let at = |value| Node {
                line: mark.line(),
                col: mark.col(),
                value,
            };
            match event {
                Event::StreamEnd => return Ok(()),
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err((mark.line(), "a second document: the file holds one".into()));
                    }
                }
                Event::Scalar(text, style, anchor, tag) => {
                    let empty = text.is_empty() && style == TScalarStyle::Plain && tag.is_none();
                    let mut node = at(scalar(text, style, tag));
                    if empty {
                        node.line = self.line_before(mark);
                    }
                    self.nodes += 1;
                    if anchor > 0 {
                        self.anchors.insert(anchor, (node.clone(), 1));
                    }
                    self.add(node)?;
                }
                Event::Alias(id) => {
                    let (node, size) =
                        (self.anchors.get(&id)).ok_or((mark.line(), "unknown alias".to_owned()))?;
                    self.nodes += size;
                    self.check_size(mark)?;
                    let node = Node {
                        line: mark.line(),
                        col: mark.col(),
                        value: node.value.clone(),
                    };
                    self.add(node)?;
                }
                Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                    if self.open.len() >= MAX_DEPTH {
                        return Err((
                            mark.line(),
                            format!("nested more than {MAX_DEPTH} levels deep"),
                        ));
                    }
                    let empty = match &event {
                        Event::SequenceStart(..) => Value::Seq(Vec::new()),
                        _ => Value::Map(Vec::new()),
                    };
                    self.nodes += 1;
                    self.open.push(Open {
                        node: at(empty),
                        anchor,
                        nodes_before: self.nodes,
                        tag: tag.as_ref().and_then(application_tag),
                        key: None,
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let open = self.open.pop().expect("the parser balances collections");
                    let mut node = open.node;
                    if let Value::Map(entries) = &node.value {
                        // A block mapping's start is marked after its first key, not at it.
                        if let Some((key, _)) = entries.first() {
                            (node.line, node.col) = (node.line, node.col).min((key.line, key.col));
                        }
                    }
                    if let Some(tag) = open.tag {
                        node.value = Value::Tagged(tag);
                    }
                    if open.anchor > 0 {
                        let size = self.nodes - open.nodes_before + 1;
                        self.anchors.insert(open.anchor, (node.clone(), size));
                    }
                    self.add(node)?;
                }
                _ => {}
            }
            self.check_size(mark)?;
        }
    }

    fn check_size(&self, mark: Marker) -> Result<(), Failure> {
        if self.nodes > MAX_NODES {
            return Err((
                mark.line(),
                format!("more than {MAX_NODES} nodes (aliases expanded)"),
            ));
        }
        Ok(())
    }

    /// Puts a finished node in its place: the root, an item, a key, or a key's value.
    fn add(&mut self, mut node: Node) -> Result<(), Failure> {
        let Some(open) = self.open.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match (&mut open.node.value, open.key.take()) {
            (Value::Seq(items), _) => items.push(node),
            (Value::Map(_), None) => open.key = Some(node),
            (Value::Map(entries), Some(key)) => {
                if let Some((first, _)) = entries.iter().find(|(k, _)| k.value == key.value) {
                    let message = format!(
                        "duplicate key {} (first at line {})",
                        describe(&key.value),
                        first.line
                    );
                    return Err((key.line, message));
                }
                (node.line, node.col) = (key.line, key.col);
                entries.push((key, node));
            }
            _ => unreachable!("only collections are open"),
        }
        Ok(())
    }

    /// The line an empty plain scalar belongs to. The parser marks it at the token after it,
    /// the next item's dash or a dedent, on a later line (or at the end of the text); only
    /// blanks and comments lie between, so its line is the last one before with anything else.
    fn line_before(&self, mark: Marker) -> usize {
        let lines: Vec<&str> = self.text.split('\n').collect();
        let own = lines.get(mark.line() - 1).copied().unwrap_or_default();
        let before = &own[..own
            .char_indices()
            .nth(mark.col())
            .map_or(own.len(), |(i, _)| i)];
        // At the end of the text, the mark's own line may hold the item (`- ` with no newline).
        let at_end = mark.index() >= self.text.chars().count();
        let candidates = (lines.iter().take(mark.line() - 1).enumerate())
            .chain(at_end.then_some((mark.line() - 1, &before)));
        (candidates.collect::<Vec<_>>().into_iter().rev())
            .find(|(_, line)| !line.trim().is_empty() && !line.trim().starts_with('#'))
            .map_or(mark.line(), |(i, _)| i + 1)
    }
}

/// The tag of a node, unless it is one of YAML's own (`!!str`, `!!int`...), which only say how
/// a scalar resolves.
fn application_tag(tag: &Tag) -> Option<String> {
    let core = tag.handle == "tag:yaml.org,2002:";
    (!core).then(|| format!("{}{}", tag.handle, tag.suffix))
}

fn scalar(text: String, style: TScalarStyle, tag: Option<Tag>) -> Value {
    match tag.as_ref() {
        Some(tag) if tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str" => {
            return Value::String(text)
        }
        Some(tag) => {
            if let Some(tag) = application_tag(tag) {
                return Value::Tagged(tag);
            }
        }
        None if style != TScalarStyle::Plain => return Value::String(text),
        None => {}
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => match number(&text) {
            Some(n) => Value::Number(n, text),
            None => Value::String(text),
        },
    }
}

/// A plain scalar as YAML 1.2's core schema reads numbers.
fn number(text: &str) -> Option<f64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = if let Some(hex) = text.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()? as f64
    } else if let Some(octal) = text.strip_prefix("0o") {
        u64::from_str_radix(octal, 8).ok()? as f64
    } else if matches!(digits, ".inf" | ".Inf" | ".INF") {
        f64::INFINITY
    } else if matches!(text, ".nan" | ".NaN" | ".NAN") {
        f64::NAN
    } else if digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b"._eE+-".contains(&b))
    {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// A value for messages: scalars as written (strings quoted), collections by kind.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(_, text) => text.clone(),
        Value::String(s) => format!("{s:?}"),
        Value::Seq(_) => "a list".to_owned(),
        Value::Map(_) => "a mapping".to_owned(),
        Value::Tagged(tag) => format!("a value tagged {tag}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Node {
        parse(text, "t.yaml").unwrap_or_else(|p| panic!("{p}"))
    }

    fn error(text: &str) -> String {
        parse(text, "t.yaml").unwrap_err().to_string()
    }

    /// Every node below the root as (path, line, value described), in document order.
    fn lines(node: &Node, path: &str, out: &mut Vec<(String, usize, String)>) {
        let children: Vec<(String, &Node)> = match &node.value {
            Value::Seq(items) => (items.iter().enumerate())
                .map(|(i, n)| (format!("{path}[{i}]"), n))
                .collect(),
            Value::Map(entries) => (entries.iter())
                .map(|(k, v)| (format!("{path}.{}", describe(&k.value)), v))
                .collect(),
            _ => Vec::new(),
        };
        for (path, child) in children {
            out.push((path.clone(), child.line, describe(&child.value)));
            lines(child, &path, out);
        }
    }

    fn all_lines(text: &str) -> Vec<(String, usize, String)> {
        let mut out = Vec::new();
        lines(&tree(text), "", &mut out);
        out
    }

    #[test]
    fn every_node_has_its_line_in_block_and_flow_style() {
        let text = "\
%YAML 1.2
---
# comment: - not a key
a: 1   # trailing: comment

b:
- x: y     # indentless
  z: [p, {q: r}]
  notes: |
    k: inside a block scalar
- - deep
";
        let got = all_lines(text);
        let want: Vec<(&str, usize, &str)> = vec![
            (".\"a\"", 4, "1"),
            (".\"b\"", 6, "a list"),
            (".\"b\"[0]", 7, "a mapping"),
            (".\"b\"[0].\"x\"", 7, "\"y\""),
            (".\"b\"[0].\"z\"", 8, "a list"),
            (".\"b\"[0].\"z\"[0]", 8, "\"p\""),
            (".\"b\"[0].\"z\"[1]", 8, "a mapping"),
            (".\"b\"[0].\"z\"[1].\"q\"", 8, "\"r\""),
            (".\"b\"[0].\"notes\"", 9, "\"k: inside a block scalar\\n\""),
            (".\"b\"[1]", 11, "a list"),
            (".\"b\"[1][0]", 11, "\"deep\""),
        ];
        let got: Vec<(&str, usize, &str)> = (got.iter())
            .map(|(p, l, d)| (p.as_str(), *l, d.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn scalars_resolve_as_the_core_schema_says() {
        let text = "[~, null, '', true, False, 5, -3, 0x1f, 0o17, 2.5, 1e3, .inf, -.Inf, .nan, \"5\", 'true', yes, 1.2.3, !!str 7, !secret x, +7]";
        let node = tree(text);
        let Value::Seq(items) = node.value else {
            panic!("a list")
        };
        let got: Vec<String> = items.iter().map(|n| describe(&n.value)).collect();
        assert_eq!(
            got,
            [
                "an empty value",
                "an empty value",
                "\"\"",
                "true",
                "false",
                "5",
                "-3",
                "0x1f",
                "0o17",
                "2.5",
                "1e3",
                ".inf",
                "-.Inf",
                ".nan",
                "\"5\"",
                "\"true\"",
                "\"yes\"",
                "\"1.2.3\"",
                "\"7\"",
                "a value tagged !secret",
                "+7",
            ]
        );
        let numbers: Vec<f64> = (items.iter())
            .filter_map(|n| match n.value {
                Value::Number(v, _) if !v.is_nan() => Some(v),
                _ => None,
            })
            .collect();
        let want = [
            5.0,
            -3.0,
            31.0,
            15.0,
            2.5,
            1000.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            7.0,
        ];
        assert_eq!(numbers, want);
        let integers: Vec<bool> = items[5..11].iter().map(Node::is_integer).collect();
        assert_eq!(integers, [true, true, true, true, false, false]);
    }

    #[test]
    fn empty_items_and_values_have_the_line_they_are_written_on() {
        let text = "a:\n  -\n  # comment - x\n\n  -\n  - x\nb:\nc: {d: }\n";
        let got = all_lines(text);
        let lines: Vec<(String, usize)> = got.into_iter().map(|(p, l, _)| (p, l)).collect();
        let want = [
            (".\"a\"", 1),
            (".\"a\"[0]", 2),
            (".\"a\"[1]", 5),
            (".\"a\"[2]", 6),
            (".\"b\"", 7),
            (".\"c\"", 8),
            (".\"c\".\"d\"", 8),
        ];
        let want: Vec<(String, usize)> = want.iter().map(|(p, l)| (p.to_string(), *l)).collect();
        assert_eq!(lines, want);
        for (text, line) in [("a:\n  -", 2), ("a:\n  -\n  -", 3), ("a:\n  -\n\n# c\n", 2)] {
            let node = tree(text);
            let Value::Seq(items) = &node.get("a").unwrap().value else {
                panic!("a list")
            };
            assert_eq!(items.last().map(|n| n.line), Some(line), "{text:?}");
        }
    }

    #[test]
    fn find_goes_as_deep_as_the_path_is_written() {
        let node = tree("a:\n  - x: 1\n    y: {p: q}\n  - 2\nb: {k: v, l: w}\n");
        let line = |path: &str| node.find(path).line;
        assert_eq!(line("a[0].x"), 2);
        assert_eq!(line("a[0].y.p"), 3);
        assert_eq!(line("a[1]"), 4);
        // A mapping's n-th entry, for paths that count tags or metrics.
        assert_eq!(line("b[1]"), 5);
        // Not written: the deepest node on the way.
        assert_eq!(line("a[0].z"), 2);
        assert_eq!(line("a[7].x"), 1);
        assert_eq!(line("a[1].x"), 4);
        assert_eq!(line("c.d"), 0);
        assert_eq!(line(""), 0);
        assert_eq!(line("(document)"), 0);
        assert_eq!(line("a[x]"), 1);
    }

    #[test]
    fn aliases_copy_their_anchor_placed_at_the_alias() {
        let node = tree("a: &x {k: [1, 2]}\nb: *x\nc:\n  - &s s\n  - *s\n");
        let (a, b) = (node.get("a").unwrap(), node.get("b").unwrap());
        assert_eq!(a.value, b.value);
        assert_eq!((a.line, b.line), (1, 2));
        // Inside the copy, lines are where the text is.
        assert_eq!(b.get("k").unwrap().line, 1);
        let Value::Seq(items) = &node.get("c").unwrap().value else {
            panic!("a list")
        };
        assert_eq!(items[1].value, Value::String("s".into()));
        assert_eq!(items[1].line, 5);
    }

    #[test]
    fn documents_that_would_exhaust_memory_or_the_stack_are_refused() {
        let mut bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_owned();
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert_eq!(
            error(&bomb),
            "t.yaml:6: (document): more than 1000000 nodes (aliases expanded)"
        );
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            error(&deep),
            "t.yaml:1: (document): nested more than 64 levels deep"
        );
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&fine, "t.yaml").is_ok());
    }

    #[test]
    fn syntax_errors_duplicates_and_second_documents_stop_the_read() {
        assert_eq!(
            error("a: 1\n  b: 2\n"),
            "t.yaml:2: (document): mapping values are not allowed in this context"
        );
        assert_eq!(
            error("a: 1\nb: 2\na: 3\n"),
            "t.yaml:3: (document): duplicate key \"a\" (first at line 1)"
        );
        assert_eq!(
            error("a: 1\n---\nb: 2\n"),
            "t.yaml:2: (document): a second document: the file holds one"
        );
        assert_eq!(
            error("a: *nope\n"),
            "t.yaml:1: (document): while parsing node, found unknown anchor"
        );
    }

    #[test]
    fn an_empty_text_is_a_null_document_without_a_line() {
        for text in ["", "# nothing\n", "\u{feff}", "---\n"] {
            assert_eq!(
                tree(text),
                Node {
                    line: 0,
                    col: 0,
                    value: Value::Null
                },
                "{text:?}"
            );
        }
        let bom = tree("\u{feff}a: 1\n");
        assert_eq!(bom.get("a").map(|n| n.line), Some(1));
    }
}
