//! `berth inspect`, `berth image inspect`, `berth container inspect`.

use berth_proto::gateway::v1::ContainerRef;
use serde_json::Value;
use tonic::Code;

use crate::ctx::{is_connect_error, Ctx};
use crate::eprint_err;
use crate::template;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Container,
    Image,
}

/// Fetches one container's inspect document.
pub async fn container_doc(ctx: &Ctx, name: &str) -> Result<Value, tonic::Status> {
    let resp = ctx
        .containers()
        .inspect(ctx.req(ContainerRef {
            id: name.to_string(),
        }))
        .await?
        .into_inner();
    serde_json::from_str(&resp.json)
        .map_err(|e| tonic::Status::internal(format!("bad inspect document from daemon: {e}")))
}

/// Docker's indented inspect output: a JSON array, 4-space indents.
pub fn to_indented_json(docs: &[Value]) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    docs.serialize(&mut ser).expect("serialize JSON values");
    String::from_utf8(buf).expect("JSON is UTF-8")
}

/// Inspects `names` (of `kind`, or container then image when `None`) and
/// prints them as docker does.
pub async fn run(ctx: &Ctx, names: &[String], format: Option<&str>, kind: Option<Kind>) -> i32 {
    let tmpl = match format_template(format) {
        Ok(t) => t,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let json_lines = format == Some("json");
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        let result = match kind {
            Some(Kind::Container) => container_doc(ctx, name).await,
            Some(Kind::Image) => crate::cmd::images::inspect_one(ctx, name).await,
            None => match container_doc(ctx, name).await {
                Err(s) if s.code() == Code::NotFound => {
                    match crate::cmd::images::inspect_one(ctx, name).await {
                        Err(s) if s.code() == Code::NotFound => {
                            match crate::cmd::networks::inspect_one(ctx, name).await {
                                Err(s) if s.code() == Code::NotFound => {
                                    errors.push(format!("Error: No such object: {name}"));
                                    continue;
                                }
                                other => other,
                            }
                        }
                        other => other,
                    }
                }
                other => other,
            },
        };
        match result {
            Ok(doc) => docs.push(doc),
            Err(s) if is_connect_error(&s) => {
                eprint_err(&ctx.cannot_connect());
                return 1;
            }
            Err(s) => errors.push(ctx.describe(&s)),
        }
    }
    print_docs(&docs, tmpl.as_ref(), json_lines, errors)
}

/// Fetches the document of each of `names` with `fetch` and prints them
/// as docker does (`--format`, errors after the documents); the exit code.
pub async fn fetch_and_print<'a, F, Fut>(
    ctx: &Ctx,
    names: &'a [String],
    format: Option<&str>,
    fetch: F,
) -> i32
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<Value, tonic::Status>>,
{
    let tmpl = match format_template(format) {
        Ok(t) => t,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        match fetch(name).await {
            Ok(d) => docs.push(d),
            Err(s) if is_connect_error(&s) => {
                eprint_err(&ctx.cannot_connect());
                return 1;
            }
            Err(s) => errors.push(ctx.describe(&s)),
        }
    }
    print_docs(&docs, tmpl.as_ref(), format == Some("json"), errors)
}

/// Prints inspect documents as docker does (indented JSON, `--format json`
/// lines, or a template per document), then the errors; the exit code.
pub fn print_docs(
    docs: &[Value],
    tmpl: Option<&template::Template>,
    json_lines: bool,
    errors: Vec<String>,
) -> i32 {
    let mut failed = !errors.is_empty();
    if let Some(t) = tmpl {
        for doc in docs {
            match t.render(doc) {
                Ok(s) => crate::outln(&s),
                Err(e) => {
                    eprint_err(&format!("template: {e}"));
                    failed = true;
                    break;
                }
            }
        }
    } else if json_lines {
        for doc in docs {
            crate::outln(&doc.to_string());
        }
    } else {
        crate::outln(&to_indented_json(docs));
    }
    for e in errors {
        eprint_err(&e);
    }
    i32::from(failed)
}

/// An inspect `--format` as a template (None: JSON output).
pub fn format_template(format: Option<&str>) -> Result<Option<template::Template>, String> {
    match format {
        Some(f) if !f.is_empty() && f != "json" => {
            let f = f.replace("\\t", "\t").replace("\\n", "\n");
            template::parse(&f)
                .map(Some)
                .map_err(|e| format!("template parsing error: {e}"))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indented_like_docker() {
        let doc: Value =
            serde_json::from_str(r#"{"Id":"x","RepoTags":["a:b"],"Config":{}}"#).unwrap();
        let out = to_indented_json(&[doc]);
        let expected = "[\n    {\n        \"Id\": \"x\",\n        \"RepoTags\": [\n            \"a:b\"\n        ],\n        \"Config\": {}\n    }\n]";
        assert_eq!(out, expected);
        assert_eq!(to_indented_json(&[]), "[]");
    }
}
