//! Splitting a YAML stream into documents by `---` and parsing each into a `serde_json::Value`.

use serde_json::Value;

use super::MAX_DEPTH;
use super::error::ErrorKind;

/// One `---`-separated document of a YAML stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk<'a> {
    pub text: &'a str,
    /// 1-based line of the chunk's first line in the whole file.
    pub first_line: u64,
}

/// Is this line a document start marker (`---` alone or followed by whitespace)?
fn is_marker(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Does this text hold anything but blank lines, comments, markers and directives?
fn has_content(text: &str, allow_directives: bool) -> bool {
    text.lines().any(|l| {
        let l = if is_marker(l) { &l[3..] } else { l };
        let t = l.trim();
        !(t.is_empty()
            || t.starts_with('#')
            || t == "..."
            || (allow_directives && l.starts_with('%')))
    })
}

/// Does the chunk hold a document (anything beyond markers, comments and blank lines)?
pub(crate) fn chunk_has_content(chunk: &Chunk<'_>) -> bool {
    has_content(chunk.text, false)
}

/// Split a YAML stream into documents at `---` lines (YAML forbids such a line inside a scalar
/// or block, so this split is exact). A leading part with only comments or directives belongs
/// to the first document.
pub(crate) fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut starts: Vec<(usize, u64)> = vec![(0, 1)];
    let mut offset = 0;
    for (line_no, line) in (1u64..).zip(text.split_inclusive('\n')) {
        if offset > 0 && is_marker(line) {
            starts.push((offset, line_no));
        }
        offset += line.len();
    }
    // Merge a content-free preamble (comments, `%YAML` directives) into the next document.
    if starts.len() > 1 {
        let preamble = &text[..starts[1].0];
        if !has_content(preamble, true) && !preamble.lines().any(is_marker) {
            starts.remove(1);
        }
    }
    let mut chunks = Vec::with_capacity(starts.len());
    for (i, &(start, first_line)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |s| s.0);
        chunks.push(Chunk {
            text: &text[start..end],
            first_line,
        });
    }
    chunks
}

/// A YAML parse failure with its 1-based position in the whole file, where known.
#[derive(Debug)]
pub(crate) struct YamlError {
    pub kind: ErrorKind,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_documents = 1;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    opts.with_snippet = false;
    opts.alias_limits.max_total_replayed_events = 100_000;
    opts
}

/// Parse one document into a JSON value (`None` for an empty or null document).
pub(crate) fn parse_chunk(chunk: &Chunk<'_>) -> Result<Option<Value>, YamlError> {
    if !chunk_has_content(chunk) {
        return Ok(None);
    }
    match serde_saphyr::from_str_with_options::<Value>(chunk.text, options()) {
        Ok(Value::Null) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(map_error(&e, chunk.first_line - 1)),
    }
}

fn map_error(e: &serde_saphyr::Error, line_offset: u64) -> YamlError {
    let inner = e.without_snippet();
    let loc = inner.location();
    let (line, column) = match loc {
        Some(l) if l.line() > 0 => (Some(l.line() + line_offset), Some(l.column())),
        _ => (None, None),
    };
    let kind = match inner {
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => {
            ErrorKind::DuplicateKey(key.clone().unwrap_or_else(|| "<complex key>".to_string()))
        }
        serde_saphyr::Error::Budget { breach, .. } => {
            let text = format!("{breach:?}");
            if text.contains("Depth") {
                ErrorKind::TooDeep(MAX_DEPTH)
            } else {
                ErrorKind::LimitExceeded(text)
            }
        }
        other => {
            let mut ro = serde_saphyr::RenderOptions::default();
            ro.snippets = serde_saphyr::SnippetMode::Off;
            ro.line_offset = line_offset;
            ErrorKind::Syntax(other.render_with_options(ro))
        }
    };
    YamlError { kind, line, column }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_markers_only_at_column_zero() {
        let text = "# c\n%YAML 1.2\n---\na: 1\n---\nb: |\n  ---\n  x\n--- # c\nc: 3\n";
        let chunks = split_documents(text);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].first_line, 1);
        assert!(chunks[0].text.starts_with("# c\n%YAML"));
        assert_eq!(chunks[1].first_line, 5);
        assert_eq!(chunks[2].first_line, 9);
        assert!(!is_marker("----"));
        assert!(is_marker("--- {a: 1}"));
    }

    #[test]
    fn empty_documents() {
        let chunks = split_documents("---\n---\n# only a comment\n---\n");
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| !chunk_has_content(c)));
        assert!(
            split_documents("")
                .iter()
                .all(|c| parse_chunk(c).unwrap().is_none())
        );
    }
}
