//! A subset of Go's `text/template` over JSON values, with docker's extra
//! functions, for `--format`.
//!
//! Supported: text, `{{- -}}` trimming, comments, `.Field.Sub`, `.`, `$`,
//! variables (`$x := ...`, `range $k, $v := ...`), string/number/bool
//! literals, parentheses, pipelines (`|`), `if`/`else if`/`else`, `range`
//! (with `else`), `with`, and the functions json, index, join, split, len,
//! lower, upper, title, println, print, printf (%s %d %v %q), truncate, pad,
//! eq, ne, lt, le, gt, ge, and, or, not.

use serde_json::Value;

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action {
        decl: Vec<String>,
        pipe: Pipe,
    },
    If {
        pipe: Pipe,
        then: Vec<Node>,
        els: Vec<Node>,
    },
    Range {
        decl: Vec<String>,
        pipe: Pipe,
        body: Vec<Node>,
        els: Vec<Node>,
    },
    With {
        pipe: Pipe,
        body: Vec<Node>,
        els: Vec<Node>,
    },
}

type Pipe = Vec<Cmd>;

#[derive(Debug)]
struct Cmd {
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    Sub(Pipe),
    /// `(pipeline).Field.Path`: a field of a parenthesized result.
    SubField(Pipe, Vec<String>),
}

impl Clone for Cmd {
    fn clone(&self) -> Self {
        Cmd {
            args: self.args.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    /// A field path right after `)`: `(index .Mounts 0).Source`.
    FieldOf(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    Pipe,
    LParen,
    RParen,
    Comma,
    Declare,
}

/// Parses `src`. Errors read like Go's ("template: :1: ...").
pub fn parse(src: &str) -> Result<Template, String> {
    let items = split(src)?;
    let mut pos = 0;
    let (nodes, term) = parse_list(&items, &mut pos)?;
    if let Some(t) = term {
        return Err(format!("template: unexpected {{{{{t}}}}}"));
    }
    Ok(Template { nodes })
}

impl Template {
    /// Executes the template with `dot` as data.
    pub fn render(&self, dot: &Value) -> Result<String, String> {
        let mut out = String::new();
        let mut vars = vec![("$".to_string(), dot.clone())];
        exec_list(&self.nodes, dot, &mut vars, &mut out)?;
        Ok(out)
    }
}

enum Item {
    Text(String),
    Action(String),
}

/// Splits the source into text and action items, applying trim markers.
fn split(src: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let (after, trim_prev) = match after.strip_prefix("- ") {
            Some(a) => (a, true),
            None => match after.strip_prefix("-\t").or(after.strip_prefix("-\n")) {
                Some(a) => (a, true),
                None => (after, false),
            },
        };
        if trim_prev {
            text = text.trim_end();
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let end = find_action_end(after).ok_or("template: unclosed action")?;
        let mut body = &after[..end];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        items.push(Item::Action(body.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        items.push(Item::Text(text.to_string()));
    }
    Ok(items)
}

/// Index of the closing "}}" of an action, skipping string literals.
fn find_action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses items until `end` or `else`, which is returned (with its rest).
fn parse_list(items: &[Item], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *pos < items.len() {
        let item = &items[*pos];
        *pos += 1;
        let action = match item {
            Item::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                continue;
            }
            Item::Action(a) => a.as_str(),
        };
        if action.starts_with("/*") {
            continue;
        }
        let (word, rest) = match action.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (action, ""),
        };
        match word {
            "end" => return Ok((nodes, Some("end".into()))),
            "else" => return Ok((nodes, Some(format!("else {rest}").trim().to_string()))),
            "if" => nodes.push(parse_if(rest, items, pos)?),
            "range" => {
                let (decl, pipe) = parse_decl_pipe(rest)?;
                let (body, term) = parse_list(items, pos)?;
                let els = match term.as_deref() {
                    Some("end") => Vec::new(),
                    Some("else") => expect_end(items, pos)?,
                    _ => return Err("template: unexpected EOF in range".into()),
                };
                nodes.push(Node::Range {
                    decl,
                    pipe,
                    body,
                    els,
                });
            }
            "with" => {
                let pipe = parse_pipe(&lex(rest)?)?;
                let (body, term) = parse_list(items, pos)?;
                let els = match term.as_deref() {
                    Some("end") => Vec::new(),
                    Some("else") => expect_end(items, pos)?,
                    _ => return Err("template: unexpected EOF in with".into()),
                };
                nodes.push(Node::With { pipe, body, els });
            }
            "define" | "template" | "block" | "break" | "continue" => {
                return Err(format!("template: {word:?} is not supported"))
            }
            _ => {
                let (decl, pipe) = parse_decl_pipe(action)?;
                nodes.push(Node::Action { decl, pipe });
            }
        }
    }
    Ok((nodes, None))
}

fn parse_if(cond: &str, items: &[Item], pos: &mut usize) -> Result<Node, String> {
    let pipe = parse_pipe(&lex(cond)?)?;
    let (then, term) = parse_list(items, pos)?;
    let els = match term.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => expect_end(items, pos)?,
        Some(t) if t.starts_with("else if ") => vec![parse_if(&t[8..], items, pos)?],
        _ => return Err("template: unexpected EOF in if".into()),
    };
    Ok(Node::If { pipe, then, els })
}

fn expect_end(items: &[Item], pos: &mut usize) -> Result<Vec<Node>, String> {
    let (nodes, term) = parse_list(items, pos)?;
    match term.as_deref() {
        Some("end") => Ok(nodes),
        _ => Err("template: expected {{end}}".into()),
    }
}

/// `[$a [, $b] :=] pipeline`
fn parse_decl_pipe(s: &str) -> Result<(Vec<String>, Pipe), String> {
    let toks = lex(s)?;
    if let Some(i) = toks.iter().position(|t| *t == Tok::Declare) {
        let mut decl = Vec::new();
        for t in &toks[..i] {
            match t {
                Tok::Var(name, path) if path.is_empty() => decl.push(name.clone()),
                Tok::Comma => {}
                _ => return Err("template: bad variable declaration".into()),
            }
        }
        if decl.is_empty() || decl.len() > 2 {
            return Err("template: bad variable declaration".into());
        }
        return Ok((decl, parse_pipe(&toks[i + 1..])?));
    }
    Ok((Vec::new(), parse_pipe(&toks)?))
}

fn parse_pipe(toks: &[Tok]) -> Result<Pipe, String> {
    let mut pos = 0;
    let pipe = parse_pipe_at(toks, &mut pos)?;
    if pos != toks.len() {
        return Err(format!("template: unexpected {:?} in operand", toks[pos]));
    }
    Ok(pipe)
}

fn parse_pipe_at(toks: &[Tok], pos: &mut usize) -> Result<Pipe, String> {
    let mut pipe = Vec::new();
    let mut args = Vec::new();
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Field(p) => args.push(Arg::Field(p.clone())),
            Tok::Var(n, p) => args.push(Arg::Var(n.clone(), p.clone())),
            Tok::Ident(n) => args.push(Arg::Ident(n.clone())),
            Tok::Lit(v) => args.push(Arg::Lit(v.clone())),
            Tok::LParen => {
                let sub = parse_pipe_at(toks, pos)?;
                if toks.get(*pos) != Some(&Tok::RParen) {
                    return Err("template: unclosed left paren".into());
                }
                *pos += 1;
                match toks.get(*pos) {
                    Some(Tok::FieldOf(path)) => {
                        *pos += 1;
                        args.push(Arg::SubField(sub, path.clone()));
                    }
                    _ => args.push(Arg::Sub(sub)),
                }
            }
            Tok::FieldOf(_) => return Err(format!("template: unexpected {t:?}")),
            Tok::RParen => {
                *pos -= 1;
                break;
            }
            Tok::Pipe => {
                if args.is_empty() {
                    return Err("template: missing command before |".into());
                }
                pipe.push(Cmd {
                    args: std::mem::take(&mut args),
                });
            }
            Tok::Comma | Tok::Declare => return Err(format!("template: unexpected {t:?}")),
        }
    }
    if args.is_empty() {
        return Err("template: missing value for command".into());
    }
    pipe.push(Cmd { args });
    Ok(pipe)
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let take_path = |i: &mut usize| -> Vec<String> {
        let mut path = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            let start = *i + 1;
            let mut j = start;
            while j < chars.len() && is_ident_char(chars[j]) {
                j += 1;
            }
            if j == start {
                // A lone "." (dot itself) ends the path.
                *i = j;
                break;
            }
            path.push(chars[start..j].iter().collect());
            *i = j;
        }
        path
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                toks.push(Tok::Pipe);
                i += 1
            }
            '(' => {
                toks.push(Tok::LParen);
                i += 1
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2
            }
            '=' => {
                toks.push(Tok::Declare);
                i += 1
            }
            '.' => {
                if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    return Err("template: bad number".into());
                }
                let chained = i > 0 && chars[i - 1] == ')';
                let path = take_path(&mut i);
                toks.push(if chained {
                    Tok::FieldOf(path)
                } else {
                    Tok::Field(path)
                });
            }
            '$' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && is_ident_char(chars[j]) {
                    j += 1;
                }
                let name: String = std::iter::once('$')
                    .chain(chars[start..j].iter().copied())
                    .collect();
                i = j;
                let path = take_path(&mut i);
                toks.push(Tok::Var(name, path));
            }
            '"' => {
                let mut out = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("template: unterminated quoted string".into());
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = chars.get(i).copied().unwrap_or('\\');
                            i += 1;
                            out.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '0' => '\0',
                                other => other,
                            });
                        }
                        c => out.push(c),
                    }
                }
                toks.push(Tok::Lit(Value::String(out)));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or("template: unterminated raw quoted string")?;
                toks.push(Tok::Lit(Value::String(
                    chars[start..start + end].iter().collect(),
                )));
                i = start + end + 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let v = if let Ok(n) = text.parse::<i64>() {
                    Value::from(n)
                } else if let Ok(f) = text.parse::<f64>() {
                    Value::from(f)
                } else {
                    return Err(format!("template: bad number syntax: {text:?}"));
                };
                toks.push(Tok::Lit(v));
            }
            c if is_ident_char(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                toks.push(match word.as_str() {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "nil" => Tok::Lit(Value::Null),
                    _ => Tok::Ident(word),
                });
            }
            c => return Err(format!("template: unexpected {c:?} in command")),
        }
    }
    Ok(toks)
}

type Vars = Vec<(String, Value)>;

fn exec_list(nodes: &[Node], dot: &Value, vars: &mut Vars, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action { decl, pipe } => {
                let v = eval_pipe(pipe, dot, vars)?;
                if decl.is_empty() {
                    out.push_str(&go_print(&v));
                } else {
                    vars.push((decl[0].clone(), v));
                }
            }
            Node::If { pipe, then, els } => {
                let v = eval_pipe(pipe, dot, vars)?;
                let mark = vars.len();
                if truthy(&v) {
                    exec_list(then, dot, vars, out)?;
                } else {
                    exec_list(els, dot, vars, out)?;
                }
                vars.truncate(mark);
            }
            Node::With { pipe, body, els } => {
                let v = eval_pipe(pipe, dot, vars)?;
                let mark = vars.len();
                if truthy(&v) {
                    exec_list(body, &v, vars, out)?;
                } else {
                    exec_list(els, dot, vars, out)?;
                }
                vars.truncate(mark);
            }
            Node::Range {
                decl,
                pipe,
                body,
                els,
            } => {
                let v = eval_pipe(pipe, dot, vars)?;
                let entries: Vec<(Value, Value)> = match &v {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x.clone()))
                        .collect(),
                    Value::Object(m) => {
                        let mut keys: Vec<&String> = m.keys().collect();
                        keys.sort();
                        keys.into_iter()
                            .map(|k| (Value::String(k.clone()), m[k].clone()))
                            .collect()
                    }
                    Value::Null => Vec::new(),
                    Value::Number(n) if n.as_i64().is_some() => (0..n.as_i64().unwrap_or(0))
                        .map(|i| (Value::from(i), Value::from(i)))
                        .collect(),
                    other => return Err(format!("range can't iterate over {}", go_print(other))),
                };
                if entries.is_empty() {
                    let mark = vars.len();
                    exec_list(els, dot, vars, out)?;
                    vars.truncate(mark);
                }
                for (k, x) in entries {
                    let mark = vars.len();
                    match decl.len() {
                        1 => vars.push((decl[0].clone(), x.clone())),
                        2 => {
                            vars.push((decl[0].clone(), k));
                            vars.push((decl[1].clone(), x.clone()));
                        }
                        _ => {}
                    }
                    exec_list(body, &x, vars, out)?;
                    vars.truncate(mark);
                }
            }
        }
    }
    Ok(())
}

fn eval_pipe(pipe: &Pipe, dot: &Value, vars: &Vars) -> Result<Value, String> {
    let mut prev: Option<Value> = None;
    for cmd in pipe {
        prev = Some(eval_cmd(cmd, dot, vars, prev)?);
    }
    Ok(prev.unwrap_or(Value::Null))
}

fn eval_cmd(cmd: &Cmd, dot: &Value, vars: &Vars, piped: Option<Value>) -> Result<Value, String> {
    match &cmd.args[0] {
        Arg::Ident(name) => {
            let mut args = cmd.args[1..]
                .iter()
                .map(|a| eval_arg(a, dot, vars))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(p) = piped {
                args.push(p);
            }
            call(name, args)
        }
        first => {
            if cmd.args.len() > 1 || piped.is_some() {
                return Err(format!("can't give argument to non-function {first:?}"));
            }
            eval_arg(first, dot, vars)
        }
    }
}

fn eval_arg(arg: &Arg, dot: &Value, vars: &Vars) -> Result<Value, String> {
    match arg {
        Arg::Field(path) => Ok(walk(dot, path)),
        Arg::Var(name, path) => {
            let v = vars
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("undefined variable: {name}"))?;
            Ok(walk(v, path))
        }
        Arg::Lit(v) => Ok(v.clone()),
        Arg::Sub(p) => eval_pipe(p, dot, vars),
        Arg::SubField(p, path) => Ok(walk(&eval_pipe(p, dot, vars)?, path)),
        Arg::Ident(name) => call(name, Vec::new()),
    }
}

fn walk(v: &Value, path: &[String]) -> Value {
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return Value::Null,
        }
    }
    cur.clone()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Go's `%v` of a decoded JSON value.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e21 {
                    format!("{f:.0}")
                } else {
                    f.to_string()
                }
            }
        }
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(go_print_inner).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_print_inner(&m[k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn go_print_inner(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        other => go_print(other),
    }
}

fn as_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => go_print(other),
    }
}

fn as_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| "bad number".to_string()),
        Value::String(s) => s
            .parse()
            .map_err(|_| format!("expected integer, got {s:?}")),
        _ => Err(format!("expected integer, got {}", go_print(v))),
    }
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).ok_or_else(|| "incomparable".into())
        }
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => Err("incompatible types for comparison".into()),
    }
}

fn call(name: &str, args: Vec<Value>) -> Result<Value, String> {
    let want = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ))
        }
    };
    Ok(match name {
        "json" => {
            want(1)?;
            Value::String(serde_json::to_string(&args[0]).map_err(|e| e.to_string())?)
        }
        "index" => {
            if args.is_empty() {
                return Err("wrong number of args for index".into());
            }
            let mut cur = args[0].clone();
            for key in &args[1..] {
                cur = match (&cur, key) {
                    (Value::Object(m), k) => m.get(&as_str(k)).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), k) => {
                        let i = as_int(k)?;
                        a.get(usize::try_from(i).map_err(|_| "index out of range")?)
                            .cloned()
                            .ok_or_else(|| {
                                format!("error calling index: index out of range: {i}")
                            })?
                    }
                    (Value::Null, _) => Value::Null,
                    (other, _) => {
                        return Err(format!("can't index item of type {}", go_print(other)))
                    }
                };
            }
            cur
        }
        "join" => {
            want(2)?;
            let items: Vec<String> = match &args[0] {
                Value::Array(a) => a.iter().map(as_str).collect(),
                Value::Null => Vec::new(),
                other => return Err(format!("join: expected a list, got {}", go_print(other))),
            };
            Value::String(items.join(&as_str(&args[1])))
        }
        "split" => {
            want(2)?;
            let (s, sep) = (as_str(&args[0]), as_str(&args[1]));
            let parts: Vec<Value> = if sep.is_empty() {
                s.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                s.split(sep.as_str())
                    .map(|p| Value::String(p.into()))
                    .collect()
            };
            Value::Array(parts)
        }
        "len" => {
            want(1)?;
            Value::from(match &args[0] {
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::String(s) => s.len(),
                Value::Null => 0,
                other => return Err(format!("len of {}", go_print(other))),
            })
        }
        "lower" => {
            want(1)?;
            Value::String(as_str(&args[0]).to_lowercase())
        }
        "upper" => {
            want(1)?;
            Value::String(as_str(&args[0]).to_uppercase())
        }
        "title" => {
            want(1)?;
            let s = as_str(&args[0]);
            let mut out = String::with_capacity(s.len());
            let mut start = true;
            for c in s.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            Value::String(out)
        }
        "println" => {
            let parts: Vec<String> = args.iter().map(go_print).collect();
            Value::String(format!("{}\n", parts.join(" ")))
        }
        "print" => Value::String(args.iter().map(go_print).collect::<Vec<_>>().concat()),
        "printf" => {
            if args.is_empty() {
                return Err("wrong number of args for printf".into());
            }
            Value::String(printf(&as_str(&args[0]), &args[1..]))
        }
        "truncate" => {
            want(2)?;
            let n = usize::try_from(as_int(&args[1])?).unwrap_or(0);
            Value::String(as_str(&args[0]).chars().take(n).collect())
        }
        "pad" => {
            want(3)?;
            let l = usize::try_from(as_int(&args[1])?).unwrap_or(0);
            let r = usize::try_from(as_int(&args[2])?).unwrap_or(0);
            Value::String(format!(
                "{}{}{}",
                " ".repeat(l),
                as_str(&args[0]),
                " ".repeat(r)
            ))
        }
        "eq" => {
            if args.len() < 2 {
                return Err("missing argument for comparison".into());
            }
            Value::Bool(args[1..].iter().any(|b| values_eq(&args[0], b)))
        }
        "ne" => {
            want(2)?;
            Value::Bool(!values_eq(&args[0], &args[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
            let o = compare(&args[0], &args[1])?;
            Value::Bool(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "and" => {
            if args.is_empty() {
                return Err("wrong number of args for and".into());
            }
            args.iter()
                .find(|a| !truthy(a))
                .unwrap_or(&args[args.len() - 1])
                .clone()
        }
        "or" => {
            if args.is_empty() {
                return Err("wrong number of args for or".into());
            }
            args.iter()
                .find(|a| truthy(a))
                .unwrap_or(&args[args.len() - 1])
                .clone()
        }
        "not" => {
            want(1)?;
            Value::Bool(!truthy(&args[0]))
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

fn values_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(&crate::render::go_quote(
                &args.next().map(as_str).unwrap_or_default(),
            )),
            Some(v @ ('s' | 'd' | 'v')) => match args.next() {
                Some(a) => out.push_str(&go_print(a)),
                None => out.push_str(&format!("%!{v}(MISSING)")),
            },
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push_str("%!(NOVERB)"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        parse(t).unwrap().render(v).unwrap()
    }

    fn doc() -> Value {
        json!({
            "Id": "sha256:abc",
            "RepoTags": ["busybox:latest", "bb:1"],
            "State": {"Pid": 42, "Running": true, "Status": "running"},
            "Config": {
                "Labels": {"b": "2", "a": "1"},
                "Env": ["PATH=/bin", "X=1"],
                "Cmd": null,
                "Entrypoint": ["/bin/sh", "-c"]
            },
            "Size": 4261234
        })
    }

    #[test]
    fn fields_of_parenthesized_results() {
        let d = serde_json::json!({"Mounts": [{"Source": "/a", "RW": true}, {"Source": "/b"}]});
        let r = |t: &str| parse(t).unwrap().render(&d).unwrap();
        assert_eq!(r("{{(index .Mounts 1).Source}}"), "/b");
        assert_eq!(r("{{(index .Mounts 0).RW}}"), "true");
        assert_eq!(r("{{ (index .Mounts 0).Source | printf \"%s!\" }}"), "/a!");
    }

    #[test]
    fn fields() {
        let d = doc();
        assert_eq!(r("{{.State.Pid}}", &d), "42");
        assert_eq!(
            r("pid={{ .State.Pid }} id={{.Id}}", &d),
            "pid=42 id=sha256:abc"
        );
        assert_eq!(r("{{.State.Running}}", &d), "true");
        assert_eq!(r("{{.Size}}", &d), "4261234");
        assert_eq!(r("{{.Nope}}", &d), "<no value>");
        assert_eq!(r("{{.RepoTags}}", &d), "[busybox:latest bb:1]");
        assert_eq!(r("{{.Config.Labels}}", &d), "map[a:1 b:2]");
    }

    #[test]
    fn functions() {
        let d = doc();
        assert_eq!(r("{{json .RepoTags}}", &d), r#"["busybox:latest","bb:1"]"#);
        assert_eq!(
            r("{{json .State}}", &d),
            r#"{"Pid":42,"Running":true,"Status":"running"}"#
        );
        assert_eq!(r("{{json .Config.Cmd}}", &d), "null");
        assert_eq!(r(r#"{{index .Config.Labels "a"}}"#, &d), "1");
        assert_eq!(r("{{index .RepoTags 1}}", &d), "bb:1");
        assert_eq!(r(r#"{{join .Config.Env ","}}"#, &d), "PATH=/bin,X=1");
        assert_eq!(r(r#"{{join .Config.Entrypoint " "}}"#, &d), "/bin/sh -c");
        assert_eq!(r("{{.State.Status | upper}}", &d), "RUNNING");
        assert_eq!(r("{{len .RepoTags}}", &d), "2");
        assert_eq!(r(r#"{{json (index .Config.Labels "b")}}"#, &d), r#""2""#);
        assert_eq!(
            r(r#"{{printf "%s=%d" .Id .State.Pid}}"#, &d),
            "sha256:abc=42"
        );
        assert_eq!(r("{{println .Id}}", &d), "sha256:abc\n");
    }

    #[test]
    fn control() {
        let d = doc();
        assert_eq!(
            r("{{range .RepoTags}}[{{.}}]{{end}}", &d),
            "[busybox:latest][bb:1]"
        );
        assert_eq!(
            r(
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
                &d
            ),
            "a=1;b=2;"
        );
        assert_eq!(r("{{range .Config.Cmd}}x{{else}}empty{{end}}", &d), "empty");
        assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}}", &d), "up");
        assert_eq!(
            r(
                r#"{{if eq .State.Status "exited"}}E{{else if .State.Running}}R{{else}}?{{end}}"#,
                &d
            ),
            "R"
        );
        assert_eq!(r("{{with .State}}{{.Pid}}{{end}}", &d), "42");
        assert_eq!(r("{{with .Nope}}x{{else}}none{{end}}", &d), "none");
        assert_eq!(
            r("{{range .RepoTags}}{{$.Id}} {{end}}", &d),
            "sha256:abc sha256:abc "
        );
        assert_eq!(r("a {{- /* c */ -}} b", &d), "ab");
        assert_eq!(
            r("{{range .RepoTags -}}\n  {{.}}\n{{- end}}", &d),
            "busybox:latestbb:1"
        );
    }

    #[test]
    fn errors() {
        assert!(parse("{{.Id").is_err());
        assert!(parse("{{if .X}}").is_err());
        assert!(parse("{{end}}").is_err());
        assert!(parse("{{nosuch .X}}").unwrap().render(&doc()).is_err());
    }
}
