//! Where a config came from, and its errors: every problem found is
//! reported, each as `file:line: field: reason`, the line found from the
//! field's path (`upstreams.app.servers[0]`) in the file's TOML spans.

use std::ops::Range;
use std::sync::Arc;

use toml_edit::{ImDocument, Item, TableLike, Value};

/// The file a config was read from, kept so that errors found after
/// loading (a certificate that does not read, a name that does not
/// resolve) can name their line too.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Source {
    pub file: String,
    #[serde(skip)]
    pub text: Arc<str>,
}

/// One problem: the field it is in and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; `None` when the field is not written in the file.
    pub line: Option<usize>,
    /// Its path, as `routes[0].upstream`; empty for a syntax error.
    pub field: String,
    pub reason: String,
}

/// Why a config was refused: the file could not be read, or every problem
/// found in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found (none for a file that could not be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(file);
        if let Some(line) = p.line {
            out.push_str(&format!(":{line}"));
        }
        out.push_str(": ");
        if !p.field.is_empty() {
            out.push_str(&p.field);
            out.push_str(": ");
        }
        out.push_str(&p.reason);
    }
    out
}

impl Source {
    /// A refusal listing `problems` (`(field, reason)`), each with the
    /// line of its field.
    pub fn invalid(&self, problems: Vec<(String, String)>) -> ConfigError {
        let doc = ImDocument::parse(&*self.text).ok();
        let problems = problems
            .into_iter()
            .map(|(field, reason)| Problem {
                line: doc
                    .as_ref()
                    .and_then(|d| span_of(d.as_item(), &field))
                    .map(|s| self.line_at(s.start)),
                field,
                reason,
            })
            .collect();
        ConfigError::Invalid {
            file: self.file.clone(),
            problems,
        }
    }

    /// A refusal for what serde or the TOML parser said about the text.
    pub fn parse_error(&self, message: &str, span: Option<Range<usize>>) -> ConfigError {
        let field = span
            .clone()
            .and_then(|s| {
                let doc = ImDocument::parse(&*self.text).ok()?;
                let mut path = String::new();
                path_at(doc.as_item(), &s, &mut path);
                Some(path)
            })
            .unwrap_or_default();
        ConfigError::Invalid {
            file: self.file.clone(),
            problems: vec![Problem {
                line: span.map(|s| self.line_at(s.start)),
                field,
                reason: message.trim_end().replace('\n', " "),
            }],
        }
    }

    fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// The problems found so far.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<(String, String)>);

impl Problems {
    pub(crate) fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push((field.into(), reason.into()));
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// `Ok(v)`, or the refusal listing every problem.
    pub(crate) fn result<T>(self, v: T, source: &Source) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(v)
        } else {
            Err(source.invalid(self.0))
        }
    }
}

/// One step of a field path.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` as steps. Keys are written bare in paths, as the config's
/// own names are.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(i) = rest[1..close].parse() {
                out.push(Step::Index(i));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// The span of the deepest part of `path` the document has: the field's
/// value when it is written, else the table it would go in.
fn span_of(root: &Item, path: &str) -> Option<Range<usize>> {
    let mut best = None;
    let mut item = Some(Node::Item(root));
    for step in steps(path) {
        let Some(node) = item.take() else { break };
        let next = match (step, node) {
            (Step::Key(k), node) => node.table().and_then(|t| {
                let (key, value) = t.get_key_value(k)?;
                best = key.span().or(best.take());
                Some(Node::Item(value))
            }),
            (Step::Index(i), Node::Item(it)) => match it {
                Item::ArrayOfTables(a) => a.get(i).map(Node::Table),
                Item::Value(Value::Array(a)) => a.get(i).map(Node::Value),
                _ => None,
            },
            (Step::Index(i), Node::Value(Value::Array(a))) => a.get(i).map(Node::Value),
            _ => None,
        };
        if let Some(n) = &next {
            best = n.span().or(best.take());
        }
        item = next;
    }
    best
}

/// A place in the document: an item, a table of an array of tables, or a
/// value inside an array or inline table.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn table(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(Value::InlineTable(t)) => Some(t),
            Node::Value(_) => None,
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(Item::Value(v)) | Node::Value(v) => v.span(),
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
        }
    }
}

/// Writes into `path` the path of the deepest field whose key or value
/// holds `span`.
fn path_at(item: &Item, span: &Range<usize>, path: &mut String) {
    walk(Node::Item(item), span, path);
}

fn walk(node: Node<'_>, span: &Range<usize>, path: &mut String) -> bool {
    let covers =
        |s: Option<Range<usize>>| s.is_some_and(|s| s.start <= span.start && span.end <= s.end);
    if let Some(t) = node.table() {
        for (k, v) in t.iter() {
            let mark = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            let key_span = t.get_key_value(k).and_then(|(key, _)| key.span());
            if walk(Node::Item(v), span, path) || covers(key_span) {
                return true;
            }
            path.truncate(mark);
        }
        return covers(node.span());
    }
    let children: Vec<Node<'_>> = match node {
        Node::Item(Item::ArrayOfTables(a)) => a.iter().map(Node::Table).collect(),
        Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
            a.iter().map(Node::Value).collect()
        }
        _ => Vec::new(),
    };
    for (i, child) in children.into_iter().enumerate() {
        let mark = path.len();
        path.push_str(&format!("[{i}]"));
        if walk(child, span, path) {
            return true;
        }
        path.truncate(mark);
    }
    covers(node.span())
}

/// A file the config names (an htpasswd file, a JWKS), read whole at load
/// time; one larger than `max` bytes is refused (and `/dev/zero` is not
/// read forever).
pub(super) fn read_bounded(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nthreads = 2\n\n[[listeners]]\naddress = \"a\"\n\n\
                        [[listeners]]\naddress = \"b\"\n\n[upstreams.app]\n\
                        servers = [\"x\", { address = \"y\", weight = 0 }]\n";

    fn source() -> Source {
        Source {
            file: "t.toml".into(),
            text: TEXT.into(),
        }
    }

    fn line(field: &str) -> Option<usize> {
        source()
            .invalid(vec![(field.into(), "r".into())])
            .problems()[0]
            .line
    }

    #[test]
    fn a_fields_line_is_where_it_is_written_or_its_table() {
        assert_eq!(line("server.threads"), Some(2));
        assert_eq!(line("listeners[1].address"), Some(8));
        // Not written: the table it would go in.
        assert_eq!(line("listeners[1].tls"), Some(7));
        assert_eq!(line("upstreams.app.servers[1].weight"), Some(11));
        assert_eq!(line("upstreams.app.health.path"), Some(10));
        assert_eq!(line("dns.timeout"), None);
    }

    #[test]
    fn a_span_names_its_field() {
        let at = TEXT.find("0 }").unwrap();
        let e = source().parse_error("bad\nweight", Some(at..at + 1));
        assert_eq!(
            e.to_string(),
            "t.toml:11: upstreams.app.servers[1].weight: bad weight"
        );
        let at = TEXT.find("\"b\"").unwrap();
        let e = source().parse_error("no", Some(at..at + 3));
        assert_eq!(e.to_string(), "t.toml:8: listeners[1].address: no");
    }

    #[test]
    fn every_problem_is_one_line() {
        let e = source().invalid(vec![
            ("server.threads".into(), "one".into()),
            ("listeners[0].address".into(), "two".into()),
        ]);
        assert_eq!(
            e.to_string(),
            "t.toml:2: server.threads: one\nt.toml:5: listeners[0].address: two"
        );
    }
}
