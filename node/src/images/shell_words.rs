//! Splitting a command string into argv as a POSIX shell would (quotes, backslashes), without running a shell.

/// Why a command string could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unterminated single quote: close it with '")]
    UnterminatedSingleQuote,
    #[error("unterminated double quote: close it with \"")]
    UnterminatedDoubleQuote,
    #[error("trailing backslash: escape it as \\\\ or remove it")]
    TrailingBackslash,
}

/// Words of `text`: separated by unquoted whitespace; `'...'` literal; `"..."` with `\"`, `\\`,
/// `\$`, `` \` `` and line continuations; an unquoted `\` escapes the next character. No
/// expansion of variables, globs or `~`: what is written is what the program gets.
pub(crate) fn split(text: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once anything (even an empty quote pair) was written for it.
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedSingleQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(SplitError::UnterminatedDoubleQuote),
                        },
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedDoubleQuote),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(SplitError::TrailingBackslash),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::{SplitError, split};

    fn ok(text: &str) -> Vec<String> {
        split(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn splits_on_unquoted_whitespace() {
        assert_eq!(
            ok("  python3 -m  http.server\t8080\n"),
            ["python3", "-m", "http.server", "8080"]
        );
        assert!(ok("   ").is_empty());
    }

    #[test]
    fn quotes_group_and_are_removed() {
        assert_eq!(
            ok(r#"sh -c 'echo "$HOME" && exit 1'"#),
            ["sh", "-c", r#"echo "$HOME" && exit 1"#]
        );
        assert_eq!(
            ok(r#"printf "a \"b\" \\ \$x \n""#),
            ["printf", r#"a "b" \ $x \n"#]
        );
        assert_eq!(ok(r#"a'b'"c"d"#), ["abcd"]);
        assert_eq!(ok(r#"x '' """#), ["x", "", ""]);
    }

    #[test]
    fn backslash_escapes_outside_quotes() {
        assert_eq!(ok(r"a\ b c\'d"), ["a b", "c'd"]);
        assert_eq!(ok("a \\\nb"), ["a", "b"]);
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert_eq!(split("a 'b"), Err(SplitError::UnterminatedSingleQuote));
        assert_eq!(split("a \"b"), Err(SplitError::UnterminatedDoubleQuote));
        assert_eq!(split("a \\"), Err(SplitError::TrailingBackslash));
    }
}
