//! Glob matching for `--image-map` patterns: `*` is any run of characters (`/`, `:` and `@` included), `?` exactly one.

/// Whether `text` matches `pattern` as a whole. Iterative with one backtrack point, so it is
/// linear-ish and never recursive, whatever the pattern.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where the last `*` was in the pattern, and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some('?') => {
                pi += 1;
                ti += 1;
            }
            Some(c) if *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry from there.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(matches("nginx:1.25", "nginx:1.25"));
        assert!(!matches("nginx:1.25", "nginx:1.26"));
        assert!(!matches("nginx", "nginx:1.25"));
        assert!(!matches("nginx:1.25", "nginx"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn star_matches_any_run_including_separators() {
        assert!(matches("nginx*", "nginx"));
        assert!(matches("nginx*", "nginx:1.25"));
        assert!(matches("nginx:*", "nginx:1.25@sha256:abc"));
        assert!(matches("*/nginx:*", "docker.io/library/nginx:1.25"));
        assert!(matches("*", "anything/at:all"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(matches("a*b*c", "abcbc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("*@sha256:*", "repo@sha256:0123"));
        assert!(!matches("*@sha256:*", "repo:latest"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(matches("redis:?", "redis:7"));
        assert!(!matches("redis:?", "redis:"));
        assert!(!matches("redis:?", "redis:7.2"));
        assert!(matches("redis:?.?", "redis:7.2"));
        assert!(matches("ü?", "üx"));
    }
}
