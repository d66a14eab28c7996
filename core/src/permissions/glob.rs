//! The gitignore-style glob matcher.
//!
//! A pattern compiles to a list of segments: literal names, wildcard names (`*`, `?`, classes,
//! escapes) and `**` (any number of whole segments). Matching runs the segments as an NFA over
//! the path's segments: the set of pattern positions still alive is a bitset, each path segment
//! moves every live position at most one step, and `**` keeps its position alive. That costs
//! O(path segments × pattern segments) segment matches whatever the pattern, so no pattern can
//! make matching exponential. Within one segment, `*` is matched by the usual greedy scan that
//! backtracks only to the last `*` (O(name × pattern) at worst).

/// A compiled glob (see the module docs of `permissions` for the syntax).
#[derive(Clone, Debug)]
pub(crate) struct Glob {
    segs: Vec<Seg>,
    /// The pattern ended with `/` (or `/**`): its last segment matches only directories.
    dir_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    /// `**`: zero or more whole segments.
    AnyDepth,
    /// A name without wildcards (escapes resolved).
    Literal(String),
    /// A name with at least one wildcard or class.
    Wild(Vec<Tok>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Char(char),
    /// `?`
    AnyChar,
    /// `*`
    Star,
    /// `[...]`: inclusive ranges (single characters are `(c, c)`).
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    /// Compiles `pattern`; the error is the reason, without the rule's name.
    pub(crate) fn parse(pattern: &str) -> Result<Glob, String> {
        let mut p = pattern;
        let leading_slash = p.starts_with('/');
        if leading_slash {
            p = &p[1..];
        }
        let mut dir_only = false;
        // A trailing '/' is escaped only by an odd run of backslashes before it (`a\\/` is the
        // name `a\` for directories only).
        let escaped =
            p.strip_suffix('/').is_some_and(|rest| rest.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1);
        if p.ends_with('/') && !escaped {
            p = &p[..p.len() - 1];
            dir_only = true;
        }
        if p.is_empty() {
            return Err("the pattern names no path (use `**` for everything)".into());
        }
        let anchored = leading_slash || p.contains('/');
        let mut segs = Vec::new();
        if !anchored {
            segs.push(Seg::AnyDepth);
        }
        for raw in p.split('/') {
            let seg = parse_segment(raw)?;
            if !(seg == Seg::AnyDepth && segs.last() == Some(&Seg::AnyDepth)) {
                segs.push(seg);
            }
        }
        // `x/**` means `x/`: the directory and, as for any directory match, all beneath it.
        if segs.len() > 1 && segs.last() == Some(&Seg::AnyDepth) {
            segs.pop();
            dir_only = true;
        }
        Ok(Glob { segs, dir_only })
    }

    /// Whether the pattern matches `path` (its segments; empty for the root), or matches one of
    /// its ancestors, which are directories (a matched directory covers everything beneath it).
    pub(crate) fn matches(&self, path: &[&str], is_dir: bool) -> bool {
        let m = self.segs.len();
        let mut live = self.start();
        if live.get(m) {
            // The pattern matches the root (it is `**`): the root is a directory.
            return true;
        }
        for (k, name) in path.iter().enumerate() {
            live = self.step(&live, name);
            if live.is_empty() {
                return false;
            }
            if live.get(m) {
                let is_last = k + 1 == path.len();
                return !is_last || is_dir || !self.dir_only;
            }
        }
        false
    }

    /// Whether some path strictly beneath the directory `dir` could match, judged by the pattern
    /// alone (every remaining segment is assumed satisfiable by some name). Callers ask this only
    /// when [`Glob::matches`] is false for `dir` itself.
    pub(crate) fn could_match_beneath(&self, dir: &[&str]) -> bool {
        let mut live = self.start();
        for name in dir {
            live = self.step(&live, name);
            if live.is_empty() {
                return false;
            }
        }
        (0..self.segs.len()).any(|i| live.get(i))
    }

    fn start(&self) -> Live {
        let mut live = Live::new(self.segs.len() + 1);
        live.set(0);
        self.close(&mut live);
        live
    }

    /// Moves every live position over one path segment.
    fn step(&self, live: &Live, name: &str) -> Live {
        let mut next = Live::new(self.segs.len() + 1);
        let mut chars: Option<Vec<char>> = None;
        for (i, seg) in self.segs.iter().enumerate() {
            if !live.get(i) {
                continue;
            }
            let hit = match seg {
                Seg::AnyDepth => {
                    next.set(i);
                    continue;
                }
                Seg::Literal(lit) => lit == name,
                Seg::Wild(toks) => match_segment(toks, chars.get_or_insert_with(|| name.chars().collect())),
            };
            if hit {
                next.set(i + 1);
            }
        }
        self.close(&mut next);
        next
    }

    /// Adds the positions reachable without consuming a segment (past a `**` matching zero).
    fn close(&self, live: &mut Live) {
        for (i, seg) in self.segs.iter().enumerate() {
            if *seg == Seg::AnyDepth && live.get(i) {
                live.set(i + 1);
            }
        }
    }
}

/// The byte length of the pattern's literal prefix: everything before its first `*`, `?`, `[` or
/// `\`, after dropping one leading `/`.
pub(crate) fn literal_prefix_len(pattern: &str) -> usize {
    let p = pattern.strip_prefix('/').unwrap_or(pattern);
    p.find(['*', '?', '[', '\\']).unwrap_or(p.len())
}

/// A set of NFA positions.
struct Live(Vec<u64>);

impl Live {
    fn new(positions: usize) -> Live {
        Live(vec![0; positions.div_ceil(64)])
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

fn parse_segment(raw: &str) -> Result<Seg, String> {
    match raw {
        "" => return Err("empty path segment ('//')".into()),
        "." | ".." => return Err(format!("'{raw}' segments are not allowed")),
        "**" => return Ok(Seg::AnyDepth),
        _ => {}
    }
    let chars: Vec<char> = raw.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let c = *chars.get(i + 1).ok_or("a '\\' at the end of a segment escapes nothing")?;
                toks.push(Tok::Char(c));
                i += 2;
            }
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                toks.push(Tok::AnyChar);
                i += 1;
            }
            '[' => {
                let (tok, next) = parse_class(&chars, i + 1)?;
                toks.push(tok);
                i = next;
            }
            c => {
                toks.push(Tok::Char(c));
                i += 1;
            }
        }
    }
    if toks.iter().all(|t| matches!(t, Tok::Char(_))) {
        return Ok(Seg::Literal(toks.iter().map(|t| if let Tok::Char(c) = t { *c } else { '\0' }).collect()));
    }
    Ok(Seg::Wild(toks))
}

/// Parses a class whose content starts at `chars[start]` (just after `[`); returns it and the
/// index just after its closing `]`. A `]` right after `[` or `[!` is a member.
fn parse_class(chars: &[char], start: usize) -> Result<(Tok, usize), String> {
    let mut j = start;
    let negated = matches!(chars.get(j), Some('!' | '^'));
    if negated {
        j += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(j).ok_or("unclosed '[' character class")?;
        if c == ']' && !first {
            return Ok((Tok::Class { negated, ranges }, j + 1));
        }
        if c == '[' && chars.get(j + 1) == Some(&':') {
            return Err("POSIX character classes ('[:name:]') are not supported".into());
        }
        let (lo, after) = class_char(chars, j)?;
        j = after;
        if chars.get(j) == Some(&'-') && chars.get(j + 1).is_some_and(|n| *n != ']') {
            let (hi, after) = class_char(chars, j + 1)?;
            if hi < lo {
                return Err(format!("character range '{lo}-{hi}' is reversed"));
            }
            ranges.push((lo, hi));
            j = after;
        } else {
            ranges.push((lo, lo));
        }
        first = false;
    }
}

/// One (possibly escaped) member character at `chars[j]` and the index after it.
fn class_char(chars: &[char], j: usize) -> Result<(char, usize), String> {
    match chars.get(j) {
        Some('\\') => chars.get(j + 1).map(|c| (*c, j + 2)).ok_or_else(|| "unclosed '[' character class".to_string()),
        Some(c) => Ok((*c, j + 1)),
        None => Err("unclosed '[' character class".into()),
    }
}

impl Tok {
    fn matches_char(&self, c: char) -> bool {
        match self {
            Tok::Char(x) => *x == c,
            Tok::AnyChar => true,
            Tok::Star => false,
            Tok::Class { negated, ranges } => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated,
        }
    }
}

/// Matches one name against one segment's tokens: a greedy scan that, on a mismatch, retries
/// from the last `*` one character further (the classic linear-space wildcard match).
fn match_segment(toks: &[Tok], name: &[char]) -> bool {
    let (mut t, mut n) = (0, 0);
    // After the last `*` seen: the token index following it and where its match ends so far.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match toks.get(t) {
            Some(Tok::Star) => {
                star = Some((t + 1, n));
                t += 1;
                continue;
            }
            Some(tok) if tok.matches_char(name[n]) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((after, end)) => {
                t = after;
                n = end + 1;
                star = Some((after, end + 1));
            }
            None => return false,
        }
    }
    toks[t..].iter().all(|tok| *tok == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<&str> {
        path.split('/').filter(|s| !s.is_empty()).collect()
    }

    fn m(pattern: &str, path: &str, is_dir: bool) -> bool {
        Glob::parse(pattern).unwrap().matches(&segs(path), is_dir)
    }

    #[test]
    fn segment_wildcards() {
        let toks = |p: &str| match parse_segment(p).unwrap() {
            Seg::Wild(t) => t,
            other => panic!("{other:?}"),
        };
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(match_segment(&toks("*.rs"), &chars("main.rs")));
        assert!(!match_segment(&toks("*.rs"), &chars("main.rsx")));
        assert!(match_segment(&toks("a*b*c"), &chars("aXbYbZc")));
        assert!(match_segment(&toks("?x"), &chars("éx")));
        assert!(match_segment(&toks("[]a]"), &chars("]")));
        assert!(match_segment(&toks("[!a-c]"), &chars("d")));
        assert!(!match_segment(&toks("[^a-c]"), &chars("b")));
        assert!(match_segment(&toks("\\*[*]"), &chars("**")));
        // Pathological input stays quadratic at worst.
        let long = "a".repeat(200);
        assert!(!match_segment(&toks("*a*a*a*a*a*a*a*b"), &chars(&long)));
    }

    #[test]
    fn many_double_stars_are_cheap() {
        let pattern = "**/a/".repeat(300) + "b";
        let path: Vec<&str> = std::iter::repeat_n("a", 400).collect();
        assert!(!Glob::parse(&pattern).unwrap().matches(&path, false));
    }

    #[test]
    fn ancestors_and_dir_only() {
        assert!(m(".git/", ".git", true));
        assert!(!m(".git/", ".git", false));
        assert!(m(".git/", "x/.git/config", false));
        assert!(m("secrets/**", "secrets", true));
        assert!(!m("secrets/**", "secrets", false));
        assert!(m("**", "", true));
        assert!(m("**", "a/b", false));
    }

    #[test]
    fn beneath() {
        let g = Glob::parse("/a/b/*.md").unwrap();
        assert!(g.could_match_beneath(&[]));
        assert!(g.could_match_beneath(&["a"]));
        assert!(g.could_match_beneath(&["a", "b"]));
        assert!(!g.could_match_beneath(&["a", "c"]));
        assert!(Glob::parse("*.md").unwrap().could_match_beneath(&["x", "y"]));
    }
}
