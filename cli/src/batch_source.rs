//! The items file of `corral batch run`, read as a stream and never whole: a first pass checks
//! every line (copying standard input to a temporary file), a second pass reads the items again
//! while they are uploaded part by part. Only the current line is in memory, plus one line number
//! per item (for the summary).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use corral_client::v1 as pb;

use crate::batch_items::{LineError, parse_bytes};

/// At most this many bad lines are listed; the rest are only counted.
const MAX_REPORTED: usize = 20;
/// Longest line: an item must fit in one request part with room to spare.
pub const MAX_LINE: usize = 3 * 1024 * 1024;

/// A checked items file.
pub struct Items {
    /// Where the items are read from the second time (a copy of standard input lives as long as
    /// this).
    path: PathBuf,
    _spool: Option<tempfile::NamedTempFile>,
    /// The 1-based line of each item (`lines[i]` is item `i`'s).
    pub lines: Vec<usize>,
}

impl Items {
    pub fn total(&self) -> u32 {
        self.lines.len() as u32
    }

    /// The items again, in order, one line at a time.
    pub fn specs(&self) -> io::Result<impl Iterator<Item = io::Result<pb::JobSpec>> + use<>> {
        let mut reader = BufReader::new(File::open(&self.path)?);
        let (mut buf, mut line) = (Vec::new(), 0);
        Ok(std::iter::from_fn(move || {
            loop {
                line += 1;
                match read_line(&mut reader, &mut buf, line) {
                    Ok(false) => return None,
                    Ok(true) => {}
                    Err(e) => return Some(Err(e)),
                }
                match parse_bytes(line, &buf) {
                    Ok(None) => {}
                    Ok(Some(spec)) => return Some(Ok(spec)),
                    Err(e) => {
                        let why = format!("{e} (the file changed while it was uploaded)");
                        return Some(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                    }
                }
            }
        }))
    }
}

/// Reads one line (with its newline) into `buf`; false at the end. A line over [`MAX_LINE`]
/// is an error (`InvalidInput`) after the rest of it is skipped.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, line: usize) -> io::Result<bool> {
    buf.clear();
    let n = reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
        skip_line(reader)?;
        let why = format!("line {line}: longer than {MAX_LINE} bytes (an item must fit in one request part)");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    Ok(true)
}

fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

/// Checks every line of `file` (`-`: standard input, copied aside for the second pass); all bad
/// lines are reported together and nothing is submitted.
pub fn scan(file: &Path) -> anyhow::Result<Items> {
    if file.as_os_str() == "-" {
        let mut spool = tempfile::NamedTempFile::new()?;
        let lines = {
            let mut copy = io::BufWriter::new(spool.as_file_mut());
            let lines = check("standard input", io::stdin().lock(), Some(&mut copy))?;
            copy.flush()?;
            lines
        };
        return Ok(Items { path: spool.path().to_owned(), _spool: Some(spool), lines });
    }
    let opened = File::open(file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    let lines = check(&file.display().to_string(), BufReader::new(opened), None)?;
    Ok(Items { path: file.to_owned(), _spool: None, lines })
}

/// The line numbers of the items of `reader`, or an error listing its bad lines.
pub fn check(source: &str, mut reader: impl BufRead, mut copy: Option<&mut dyn Write>) -> anyhow::Result<Vec<usize>> {
    let (mut buf, mut lines, mut errors, mut bad) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
    let mut line = 0;
    loop {
        line += 1;
        let result = match read_line(&mut reader, &mut buf, line) {
            Ok(false) => break,
            Ok(true) => {
                if let Some(w) = copy.as_mut() {
                    w.write_all(&buf)?;
                }
                parse_bytes(line, &buf)
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                if let Some(w) = copy.as_mut() {
                    w.write_all(b"\n")?;
                }
                Err(LineError {
                    line,
                    field: String::new(),
                    message: e.to_string().replacen(&format!("line {line}: "), "", 1),
                })
            }
            Err(e) => return Err(anyhow::anyhow!("reading {source}: {e}")),
        };
        match result {
            Ok(Some(_)) => lines.push(line),
            Ok(None) => {}
            Err(e) => {
                bad += 1;
                if errors.len() < MAX_REPORTED {
                    errors.push(e);
                }
            }
        }
    }
    if bad > 0 {
        let mut msg = format!("{source}: {bad} bad line(s), nothing was submitted");
        for e in &errors {
            msg.push_str(&format!("\n  {e}"));
        }
        if bad > MAX_REPORTED {
            msg.push_str(&format!("\n  … and {} more", bad - MAX_REPORTED));
        }
        anyhow::bail!(msg);
    }
    anyhow::ensure!(!lines.is_empty(), "{source}: no items (one JSON object per line)");
    anyhow::ensure!(lines.len() <= u32::MAX as usize, "{source}: {} items; a batch holds fewer", lines.len());
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(text: &str) -> anyhow::Result<Vec<usize>> {
        check("f", text.as_bytes(), None)
    }

    #[test]
    fn a_file_keeps_line_numbers_and_skips_blank_lines() {
        assert_eq!(check_text("{\"shell\": \"a\"}\n\n  \n{\"argv\": [\"b\"]}\n").unwrap(), [1, 4]);
        assert_eq!(check_text("{\"shell\": \"a\"}").unwrap(), [1], "no newline at the end");
    }

    #[test]
    fn a_file_reports_every_bad_line_at_once() {
        let text = "{\"shell\": \"ok\"}\n{\"argv\": 1}\n{\"shell\": \"ok\"}\nnope\n";
        let msg = check("items.jsonl", text.as_bytes(), None).unwrap_err().to_string();
        assert!(msg.starts_with("items.jsonl: 2 bad line(s), nothing was submitted"), "{msg}");
        assert!(msg.contains("line 2: field \"argv\"") && msg.contains("line 4: not JSON"), "{msg}");
    }

    #[test]
    fn no_items_or_many_bad_lines_are_summarised() {
        assert!(check_text("\n\n").unwrap_err().to_string().contains("no items"));
        let msg = check_text(&"x\n".repeat(25)).unwrap_err().to_string();
        assert!(msg.contains("25 bad line(s)") && msg.contains("and 5 more"), "{msg}");
    }

    #[test]
    fn an_over_long_line_is_reported_and_skipped() {
        let long = format!("{{\"shell\": \"{}\"}}\n", "x".repeat(MAX_LINE));
        let text = format!("{{\"shell\": \"a\"}}\n{long}bad\n");
        let msg = check_text(&text).unwrap_err().to_string();
        assert!(msg.contains(&format!("line 2: longer than {MAX_LINE} bytes")), "{msg}");
        assert!(msg.contains("line 3: not JSON"), "the line after the long one is read on its own: {msg}");
    }

    #[test]
    fn the_second_pass_yields_the_same_items_and_notices_a_changed_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"{\"shell\": \"a\"}\n\n{\"argv\": [\"b\"]}\n").unwrap();
        let items = scan(f.path()).unwrap();
        assert_eq!((items.total(), items.lines.as_slice()), (2, [1, 3].as_slice()));
        let specs: Vec<pb::JobSpec> = items.specs().unwrap().collect::<io::Result<_>>().unwrap();
        assert_eq!((specs[0].shell.as_str(), specs[1].argv.as_slice()), ("a", ["b".to_owned()].as_slice()));
        std::fs::write(f.path(), b"{\"shell\": \"a\"}\nnope\n").unwrap();
        let err = items.specs().unwrap().nth(1).unwrap().unwrap_err().to_string();
        assert!(err.contains("line 2: not JSON") && err.contains("changed"), "{err}");
    }
}
