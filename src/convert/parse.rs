//! nginx's configuration syntax: words, quoted strings with escapes, `;`,
//! `{`, `}`, `#` comments and `$variables` (`${name}` included), read into
//! a tree of directives that each know their file and line.
//!
//! Pure and total: any input gives a tree or a [`SyntaxError`], never a
//! panic (the `nginx_conf` fuzz target holds it to that). `include` is
//! not followed here; the driver (`mod.rs`) does that.
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Blocks nested deeper than this are refused (nginx's own configs nest
/// three or four levels; the limit keeps a hostile input from exhausting
/// the stack).
const MAX_NESTING: usize = 64;

/// One directive: `name arg...;` or `name arg... { block }`.
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// `Some` for a block directive (`server { ... }`).
    pub block: Option<Vec<Directive>>,
    pub file: Arc<Path>,
    pub line: usize,
}

impl Directive {
    /// `FILE:LINE`, for reports.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// Why a file cannot be read as nginx configuration.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct SyntaxError {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, PartialEq)]
enum Token {
    /// A word or a quoted string (quoted ones are never punctuation).
    Word(String),
    Semicolon,
    Open,
    Close,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl Lexer<'_> {
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The next token and the line it starts on; `Ok(None)` at the end.
    fn next(&mut self) -> Result<Option<(Token, usize)>, (usize, String)> {
        loop {
            match self.chars.peek() {
                None => return Ok(None),
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some(_) => break,
            }
        }
        let line = self.line;
        let token = match self.bump() {
            Some(';') => Token::Semicolon,
            Some('{') => Token::Open,
            Some('}') => Token::Close,
            Some(q @ ('"' | '\'')) => Token::Word(self.quoted(q, line)?),
            Some(first) => Token::Word(self.word(first)),
            None => return Ok(None),
        };
        Ok(Some((token, line)))
    }

    fn quoted(&mut self, quote: char, line: usize) -> Result<String, (usize, String)> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err((line, format!("unterminated {quote}string{quote}"))),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => match self.bump() {
                    // nginx's escapes in quoted strings; any other
                    // backslash is kept as written.
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(c @ ('"' | '\'' | '\\')) => out.push(c),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err((line, format!("unterminated {quote}string{quote}"))),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn word(&mut self, first: char) -> String {
        let mut out = String::from(first);
        let mut prev = first;
        while let Some(&c) = self.chars.peek() {
            if c.is_whitespace() || c == ';' || c == '}' {
                break;
            }
            // `${name}` is part of the word; any other `{` opens a block.
            if c == '{' && prev != '$' {
                break;
            }
            self.bump();
            if c == '\\' {
                // As nginx: the next character is taken literally, and
                // the backslash kept unless it escapes a quote, a
                // backslash or one of `t`, `r`, `n` (so `\d` stays).
                if let Some(n) = self.bump() {
                    match n {
                        '"' | '\'' | '\\' => out.push(n),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'n' => out.push('\n'),
                        _ => {
                            out.push('\\');
                            out.push(n);
                        }
                    }
                    prev = n;
                    continue;
                }
            }
            out.push(c);
            if prev == '$' && c == '{' {
                for c in self.chars.by_ref() {
                    if c == '\n' {
                        self.line += 1;
                    }
                    out.push(c);
                    if c == '}' {
                        break;
                    }
                }
                prev = '}';
                continue;
            }
            prev = c;
        }
        out
    }
}

/// Parses `text`, read from `file`.
pub fn parse(text: &str, file: &Path) -> Result<Vec<Directive>, SyntaxError> {
    let shared: Arc<Path> = Arc::from(file);
    let mut lexer = Lexer {
        chars: text.chars().peekable(),
        line: 1,
    };
    let err = |(line, reason): (usize, String)| SyntaxError {
        file: file.to_path_buf(),
        line,
        reason,
    };
    // A stack of open blocks: the directive that opened each and what it
    // holds so far.
    let mut stack: Vec<(Option<Directive>, Vec<Directive>)> = vec![(None, Vec::new())];
    let mut pending: Option<Directive> = None;
    while let Some((token, line)) = lexer.next().map_err(err)? {
        match token {
            Token::Word(w) => match pending.as_mut() {
                Some(d) => d.args.push(w),
                None => {
                    pending = Some(Directive {
                        name: w,
                        args: Vec::new(),
                        block: None,
                        file: shared.clone(),
                        line,
                    })
                }
            },
            Token::Semicolon => {
                let d = pending
                    .take()
                    .ok_or_else(|| err((line, "unexpected \";\"".into())))?;
                if let Some((_, items)) = stack.last_mut() {
                    items.push(d);
                }
            }
            Token::Open => {
                let d = pending
                    .take()
                    .ok_or_else(|| err((line, "unexpected \"{\"".into())))?;
                if stack.len() > MAX_NESTING {
                    return Err(err((
                        line,
                        format!("blocks nested over {MAX_NESTING} deep"),
                    )));
                }
                stack.push((Some(d), Vec::new()));
            }
            Token::Close => {
                if let Some(d) = pending.take() {
                    return Err(err((
                        d.line,
                        format!("directive \"{}\" is not terminated by \";\"", d.name),
                    )));
                }
                match stack.pop() {
                    Some((Some(mut opener), items)) => {
                        opener.block = Some(items);
                        if let Some((_, parent)) = stack.last_mut() {
                            parent.push(opener);
                        }
                    }
                    _ => return Err(err((line, "unexpected \"}\"".into()))),
                }
            }
        }
    }
    if let Some(d) = pending {
        return Err(err((
            d.line,
            format!("directive \"{}\" is not terminated by \";\"", d.name),
        )));
    }
    match stack.pop() {
        Some((None, items)) if stack.is_empty() => Ok(items),
        Some((Some(opener), _)) => Err(err((
            opener.line,
            format!("block \"{}\" is not closed by \"}}\"", opener.name),
        ))),
        _ => Err(err((lexer.line, "unexpected end of file".into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Vec<Directive> {
        parse(text, Path::new("t.conf")).unwrap()
    }

    #[test]
    fn words_quotes_blocks_comments_and_lines() {
        let d = p("# c\nhttp {\n  server { listen 80; # x\n return 200 \"a \\\"b\\\";\"; }\n}\n");
        assert_eq!(d.len(), 1);
        let server = &d[0].block.as_ref().unwrap()[0];
        assert_eq!(server.line, 3);
        let items = server.block.as_ref().unwrap();
        assert_eq!(items[0].args, ["80"]);
        assert_eq!(items[1].name, "return");
        assert_eq!(items[1].args, ["200", "a \"b\";"]);
        assert_eq!(items[1].line, 4);
    }

    #[test]
    fn backslashes_in_words_stay_unless_they_escape() {
        let d = p(r"location ~ ^/v1/(\d+)\.json$ { return 200 a\;b; }");
        assert_eq!(d[0].args, ["~", r"^/v1/(\d+)\.json$"]);
        assert_eq!(d[0].block.as_ref().unwrap()[0].args, ["200", r"a\;b"]);
    }

    #[test]
    fn variables_in_braces_stay_in_the_word() {
        let d = p("return 301 https://${host}$request_uri;");
        assert_eq!(d[0].args, ["301", "https://${host}$request_uri"]);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line) in [
            ("a;\nb {\n", 2),
            ("a;\n}\n", 2),
            ("a b\n", 1),
            ("a 'b\n", 1),
            ("x {\n a }", 2),
        ] {
            let e = parse(text, Path::new("t.conf")).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }
}
