//! Reading a batch's items from JSON Lines: one object per line, validated field by field so a
//! bad line is reported with its line number and the field before anything is submitted.

use std::collections::HashMap;

use corral_client::v1 as pb;
use serde_json::{Map, Value};

const FIELDS: &[&str] = &[
    "argv",
    "shell",
    "language",
    "code",
    "runtime",
    "image",
    "env",
    "timeout_seconds",
    "cpus",
    "memory_mb",
    "internet_access",
    "stdin",
    "labels",
];

/// A bad line: where, which field (empty when the line as a whole is wrong), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: field {:?}: {}", self.line, self.field, self.message)
        }
    }
}

/// Parses one line's raw bytes: `None` for a blank line.
pub fn parse_bytes(line: usize, raw: &[u8]) -> Result<Option<pb::JobSpec>, LineError> {
    let text = std::str::from_utf8(raw).map_err(|e| LineError {
        line,
        field: String::new(),
        message: format!("not UTF-8: invalid byte at byte {}", e.valid_up_to()),
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_line(line, text).map(Some)
}

/// One line: a JSON object with exactly one of `argv`, `shell` or `language` + `code`.
pub fn parse_line(line: usize, text: &str) -> Result<pb::JobSpec, LineError> {
    let err = |field: &str, message: String| LineError { line, field: field.to_owned(), message };
    let value: Value = serde_json::from_str(text).map_err(|e| err("", format!("not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(err("", format!("expected a JSON object, found {}", kind(&value))));
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(err(unknown, format!("unknown field (known: {})", FIELDS.join(", "))));
    }
    let f = Fields { obj: &obj, line };
    let mut spec = pb::JobSpec {
        argv: f.argv()?,
        shell: f.string("shell")?.unwrap_or_default(),
        language: f.string("language")?.unwrap_or_default(),
        code: f.string("code")?.unwrap_or_default(),
        image: f.string("image")?.unwrap_or_default(),
        env: f.string_map("env")?,
        timeout_seconds: f.non_negative("timeout_seconds")?,
        cpus: f.non_negative("cpus")?,
        memory_mb: f.memory_mb()?,
        internet_access: f.bool("internet_access")?,
        stdin: f.string("stdin")?.unwrap_or_default().into_bytes(),
        labels: f.string_map("labels")?,
        ..Default::default()
    };
    spec.runtime = f.runtime()?;
    check_command(&obj, &spec).map_err(|(field, m)| err(field, m))?;
    check_nul(&spec).map_err(|(field, m)| err(&field, m))?;
    if !spec.image.is_empty() && spec.runtime != pb::Runtime::Docker as i32 {
        return Err(err("image", "an image needs \"runtime\": \"docker\"".into()));
    }
    Ok(spec)
}

/// Exactly one way to give the command; a language the registry knows.
fn check_command(obj: &Map<String, Value>, spec: &pb::JobSpec) -> Result<(), (&'static str, String)> {
    match (obj.contains_key("language"), obj.contains_key("code")) {
        (true, false) => return Err(("code", "\"language\" needs \"code\"".into())),
        (false, true) => return Err(("language", "\"code\" needs a \"language\"".into())),
        _ => {}
    }
    let given: Vec<&str> = ["argv", "shell", "code"].into_iter().filter(|k| obj.contains_key(*k)).collect();
    match given.as_slice() {
        [] => return Err(("", "give exactly one of \"argv\", \"shell\" or \"language\" + \"code\"".into())),
        [_] => {}
        [a, b, ..] => return Err((*b, format!("{a:?} and {b:?} cannot both be given; use exactly one"))),
    }
    if obj.contains_key("argv") && spec.argv.is_empty() {
        return Err(("argv", "must hold at least the program".into()));
    }
    if obj.contains_key("shell") && spec.shell.trim().is_empty() {
        return Err(("shell", "must not be empty".into()));
    }
    if obj.contains_key("code") && spec.code.is_empty() {
        return Err(("code", "must not be empty".into()));
    }
    if obj.contains_key("language") && spec.language.is_empty() {
        let known: Vec<&str> = corral_core::languages::LANGUAGES.iter().map(|l| l.name).collect();
        return Err(("language", format!("must not be empty (known: {})", known.join(", "))));
    }
    if !spec.language.is_empty() && corral_core::languages::resolve(&spec.language).is_none() {
        let known: Vec<&str> = corral_core::languages::LANGUAGES.iter().map(|l| l.name).collect();
        return Err(("language", format!("unknown language {:?} (known: {})", spec.language, known.join(", "))));
    }
    Ok(())
}

/// No argv, command line, source, environment or label value can carry a NUL byte; says where.
fn check_nul(spec: &pb::JobSpec) -> Result<(), (String, String)> {
    let at = |s: &str| s.bytes().position(|b| b == 0);
    for (i, arg) in spec.argv.iter().enumerate() {
        if let Some(n) = at(arg) {
            return Err(("argv".into(), format!("element {i} contains a NUL byte at byte {n}")));
        }
    }
    for (field, value) in [("shell", &spec.shell), ("code", &spec.code)] {
        if let Some(n) = at(value) {
            return Err((field.into(), format!("contains a NUL byte at byte {n}")));
        }
    }
    for (field, map) in [("env", &spec.env), ("labels", &spec.labels)] {
        if let Some((k, n)) = map.iter().find_map(|(k, v)| at(v).map(|n| (k, n))) {
            return Err((field.into(), format!("the value of {k:?} contains a NUL byte at byte {n}")));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to the fields of one line's object.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    line: usize,
}

impl Fields<'_> {
    fn err<T>(&self, field: &str, message: String) -> Result<T, LineError> {
        Err(LineError { line: self.line, field: field.to_owned(), message })
    }

    fn string(&self, field: &str) -> Result<Option<String>, LineError> {
        match self.obj.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => self.err(field, format!("expected a string, found {}", kind(v))),
        }
    }

    fn bool(&self, field: &str) -> Result<bool, LineError> {
        match self.obj.get(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => self.err(field, format!("expected true or false, found {}", kind(v))),
        }
    }

    fn non_negative(&self, field: &str) -> Result<f64, LineError> {
        match self.obj.get(field) {
            None => Ok(0.0),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x >= 0.0 && x.is_finite() => Ok(x),
                _ => self.err(field, format!("expected a number ≥ 0, found {n}")),
            },
            Some(v) => self.err(field, format!("expected a number, found {}", kind(v))),
        }
    }

    fn memory_mb(&self) -> Result<i64, LineError> {
        match self.obj.get("memory_mb") {
            None => Ok(0),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(x) if x >= 0 => Ok(x),
                _ => self.err("memory_mb", format!("expected a whole number of MiB ≥ 0, found {n}")),
            },
            Some(v) => self.err("memory_mb", format!("expected a number, found {}", kind(v))),
        }
    }

    fn argv(&self) -> Result<Vec<String>, LineError> {
        let Some(v) = self.obj.get("argv") else { return Ok(Vec::new()) };
        let Value::Array(words) = v else {
            return self.err("argv", format!("expected an array of strings, found {}", kind(v)));
        };
        words
            .iter()
            .enumerate()
            .map(|(i, w)| match w {
                Value::String(s) => Ok(s.clone()),
                other => self.err("argv", format!("element {i} is {}, not a string", kind(other))),
            })
            .collect()
    }

    fn string_map(&self, field: &str) -> Result<HashMap<String, String>, LineError> {
        let Some(v) = self.obj.get(field) else { return Ok(HashMap::new()) };
        let Value::Object(map) = v else {
            return self.err(field, format!("expected an object of strings, found {}", kind(v)));
        };
        map.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => self.err(field, format!("the value of {k:?} is {}, not a string", kind(other))),
            })
            .collect()
    }

    fn runtime(&self) -> Result<i32, LineError> {
        match self.string("runtime")?.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => Ok(pb::Runtime::Unspecified as i32),
            Some("bwrap") => Ok(pb::Runtime::Bwrap as i32),
            Some("docker") => Ok(pb::Runtime::Docker as i32),
            Some(other) => self.err("runtime", format!("{other:?} is not a runtime (\"bwrap\" or \"docker\")")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(text: &str) -> LineError {
        match parse_line(7, text) {
            Ok(spec) => panic!("{text} was accepted as {spec:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn each_kind_of_command_parses() {
        let argv = parse_line(1, r#"{"argv": ["python3", "-c", "print(1)"]}"#).unwrap();
        assert_eq!(argv.argv, ["python3", "-c", "print(1)"]);
        let shell = parse_line(1, r#"{"shell": "echo hi | wc -c"}"#).unwrap();
        assert_eq!(shell.shell, "echo hi | wc -c");
        let code = parse_line(1, r#"{"language": "py", "code": "print(2)"}"#).unwrap();
        assert_eq!((code.language.as_str(), code.code.as_str()), ("py", "print(2)"));
    }

    #[test]
    fn every_optional_field_is_carried() {
        let line = r#"{"shell": "env", "runtime": "docker", "image": "corral/python", "env": {"A": "1"},
            "timeout_seconds": 2.5, "cpus": 0.5, "memory_mb": 256, "internet_access": true,
            "stdin": "data", "labels": {"team": "eval"}}"#
            .replace('\n', " ");
        let s = parse_line(1, &line).unwrap();
        assert_eq!(s.runtime, pb::Runtime::Docker as i32);
        assert_eq!(s.image, "corral/python");
        assert_eq!(s.env.get("A").map(String::as_str), Some("1"));
        assert_eq!((s.timeout_seconds, s.cpus, s.memory_mb), (2.5, 0.5, 256));
        assert!(s.internet_access);
        assert_eq!(s.stdin, b"data");
        assert_eq!(s.labels.get("team").map(String::as_str), Some("eval"));
    }

    #[test]
    fn bad_lines_name_the_line_and_the_field() {
        let cases = [
            (r#"{"argv": "ls"}"#, "argv", "array"),
            (r#"{"argv": ["ls", 3]}"#, "argv", "element 1"),
            (r#"{"argv": []}"#, "argv", "program"),
            (r#"{"shell": "ls", "argv": ["ls"]}"#, "shell", "cannot both"),
            (r#"{"code": "print(1)"}"#, "language", "needs"),
            (r#"{"language": "python"}"#, "code", "needs"),
            (r#"{"language": "cobol", "code": "x"}"#, "language", "unknown language"),
            // Found by fuzz/regressions/batch_items/empty-code: the server refused the whole
            // batch with a message about `language` instead.
            (r#"{"language": "py", "code": ""}"#, "code", "must not be empty"),
            // fuzz/regressions/batch_items/empty-language: accepted, then refused by the server.
            (r#"{"language": "", "code": "print(2)"}"#, "language", "must not be empty"),
            (r#"{"shell": "ls", "env": {"A": 1}}"#, "env", "\"A\""),
            (r#"{"shell": "ls", "labels": []}"#, "labels", "object"),
            (r#"{"shell": "ls", "timeout_seconds": -1}"#, "timeout_seconds", "≥ 0"),
            (r#"{"shell": "ls", "memory_mb": 1.5}"#, "memory_mb", "whole"),
            (r#"{"shell": "ls", "internet_access": "yes"}"#, "internet_access", "true or false"),
            (r#"{"shell": "ls", "runtime": "qemu"}"#, "runtime", "qemu"),
            (r#"{"shell": "ls", "image": "corral/base"}"#, "image", "docker"),
            (r#"{"shell": "ls", "stdn": "x"}"#, "stdn", "unknown field"),
        ];
        for (text, field, needle) in cases {
            let e = bad(text);
            assert_eq!((e.line, e.field.as_str()), (7, field), "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e} does not mention {needle:?}");
            assert!(e.to_string().starts_with("line 7: "), "{e}");
        }
    }

    #[test]
    fn lines_that_are_not_objects_are_refused() {
        assert!(bad("[1, 2]").message.contains("JSON object"));
        assert!(bad("{\"shell\": ").message.contains("not JSON"));
        assert!(bad("{}").message.contains("exactly one"));
    }

    #[test]
    fn nul_bytes_and_bad_utf8_are_named_exactly() {
        let e = bad(r#"{"argv": ["echo", "hello\u0000"]}"#);
        assert_eq!(e.to_string(), "line 7: field \"argv\": element 1 contains a NUL byte at byte 5");
        let e = bad(r#"{"shell": "ls", "env": {"A": "\u0000"}}"#);
        assert_eq!(e.to_string(), "line 7: field \"env\": the value of \"A\" contains a NUL byte at byte 0");
        let e = parse_bytes(3, b"{\"shell\": \"caf\xe9\"}\n").unwrap_err();
        assert_eq!(e.to_string(), "line 3: not UTF-8: invalid byte at byte 14");
        assert_eq!(parse_bytes(4, b"  \r\n").unwrap(), None);
        assert_eq!(parse_bytes(5, b"{\"shell\": \"a\"}\r\n").unwrap().unwrap().shell, "a");
    }
}
