//! VS Code's JSON with comments (`tasks.json`, `launch.json`): `//` and
//! `/* */` comments and trailing commas, turned into plain JSON for serde.
//!
//! [`strip`] keeps every newline and replaces what it removes with spaces,
//! so serde's line and column in an error still point into the original file.

/// The text with comments outside strings, and commas before `]` or `}`,
/// replaced by spaces.
pub fn strip(text: &str) -> String {
    trailing_commas(&comments(text))
}

fn comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        out.push(escaped);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                out.push_str("  ");
                chars.next();
                while let Some(&n) = chars.peek() {
                    if n == '\n' || n == '\r' {
                        break;
                    }
                    out.push(' ');
                    chars.next();
                }
            }
            ('/', Some('*')) => {
                out.push_str("  ");
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if last == '*' && n == '/' {
                        out.push(' ');
                        break;
                    }
                    out.push(if n == '\n' || n == '\r' { n } else { ' ' });
                    last = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Commas followed (past white space) by `]` or `}`; comments are gone by now.
fn trailing_commas(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(&escaped) = chars.get(i + 1) {
                    out.push(escaped);
                    i += 1;
                }
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == ',' && matches!(chars[i + 1..].iter().find(|n| !n.is_whitespace()), Some(']' | '}')) {
            out.push(' ');
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip;

    fn parse(text: &str) -> serde_json::Value {
        match serde_json::from_str(&strip(text)) {
            Ok(v) => v,
            Err(e) => panic!("{e}:\n{}", strip(text)),
        }
    }

    #[test]
    fn line_and_block_comments_go() {
        let v = parse("{\n  // a comment\n  \"a\": 1, /* inline */ \"b\": /* x\n y */ 2 // end\n}");
        assert_eq!(v, serde_json::json!({"a": 1, "b": 2}));
    }

    #[test]
    fn strings_keep_slashes_and_escaped_quotes() {
        let v =
            parse(r#"{"url": "http://host//x", "q": "say \"// not a comment\"", "c": "/* no */", "b": "\\"} // yes"#);
        assert_eq!(v["url"], "http://host//x");
        assert_eq!(v["q"], "say \"// not a comment\"");
        assert_eq!(v["c"], "/* no */");
        assert_eq!(v["b"], "\\");
    }

    #[test]
    fn trailing_commas_go_but_commas_in_strings_stay() {
        let v = parse("{\"a\": [1, 2, ], \"s\": \",]\", \"o\": {\"x\": 1, // c\n },\n}");
        assert_eq!(v, serde_json::json!({"a": [1, 2], "s": ",]", "o": {"x": 1}}));
    }

    #[test]
    fn lines_and_columns_are_kept() {
        let text = "{\n  /* two\n lines */ \"a\": 1 // x\n}";
        let out = strip(text);
        assert_eq!(out.lines().count(), text.lines().count());
        assert_eq!(out.len(), text.len());
    }

    #[test]
    fn an_unterminated_comment_does_not_panic() {
        assert!(serde_json::from_str::<serde_json::Value>(&strip("{\"a\": 1 /* open")).is_err());
        assert_eq!(strip("// only"), "       ");
    }
}
