//! A gRPC server reflection client: the files declaring one service and their dependencies,
//! asked with `grpc.reflection.v1`, else `v1alpha` (the same messages) when the server answers
//! UNIMPLEMENTED.

use std::collections::HashSet;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use prost::Message as _;
use prost_types::FileDescriptorProto;

use crate::proto::h2::grpc_code_name;

const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
/// Descriptor answers of big APIs run to megabytes; more than this is not a descriptor answer.
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Rounds of asking for missing dependencies (each round asks for all that are missing).
const MAX_ROUNDS: usize = 32;
const UNIMPLEMENTED: u32 = 12;

#[derive(Clone, PartialEq, prost::Message)]
struct ServerReflectionRequest {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(oneof = "Ask", tags = "3, 4, 7")]
    ask: Option<Ask>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Ask {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServerReflectionResponse {
    #[prost(oneof = "Answer", tags = "4, 6, 7")]
    answer: Option<Answer>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Answer {
    #[prost(message, tag = "4")]
    Files(FileDescriptorResponse),
    #[prost(message, tag = "6")]
    Services(ListServiceResponse),
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file_descriptor_proto: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// A call that did not give answers: the server does not know the method, or another failure.
enum CallError {
    Unimplemented(String),
    Failed(String),
}

/// The files declaring `service` (full name) on the server behind `sender`, with their
/// dependencies as far as the server has them. `base` gives the scheme and authority;
/// `headers` go with every call (content-type, te and the user's `-H` headers).
pub(crate) async fn fetch(
    sender: &mut SendRequest<Full<Bytes>>,
    base: &Uri,
    headers: &HeaderMap,
    service: &str,
) -> Result<Vec<FileDescriptorProto>, String> {
    let mut unimplemented = Vec::new();
    for path in [V1, V1ALPHA] {
        let uri = with_path(base, path)?;
        let first = [
            Ask::ListServices(String::new()),
            Ask::FileContainingSymbol(service.to_owned()),
        ];
        match call(sender, &uri, headers, &first).await {
            Ok(answers) => return files_of(sender, &uri, headers, service, answers).await,
            Err(CallError::Unimplemented(message)) => unimplemented.push(message),
            Err(CallError::Failed(message)) => return Err(message),
        }
    }
    Err(format!(
        "the server does not serve gRPC server reflection (grpc.reflection.v1 and v1alpha \
         both answered UNIMPLEMENTED: {}); give the descriptors with --proto-set instead",
        unimplemented.join("; ")
    ))
}

async fn files_of(
    sender: &mut SendRequest<Full<Bytes>>,
    uri: &Uri,
    headers: &HeaderMap,
    service: &str,
    answers: Vec<ServerReflectionResponse>,
) -> Result<Vec<FileDescriptorProto>, String> {
    let [listed, found] = <[ServerReflectionResponse; 2]>::try_from(answers)
        .map_err(|a| format!("answered {} messages to 2 reflection requests", a.len()))?;
    let services: Vec<String> = match listed.answer {
        Some(Answer::Services(list)) => list.service.into_iter().map(|s| s.name).collect(),
        _ => Vec::new(),
    };
    let mut files = Vec::new();
    match found.answer {
        Some(Answer::Files(f)) => decode_files(&f, &mut files)?,
        Some(Answer::Error(e)) if !services.iter().any(|s| s == service) => {
            return Err(format!(
                "the server does not serve {service} ({}); it serves: {}",
                e.error_message,
                super::pool::list(services.iter().map(String::as_str))
            ));
        }
        Some(Answer::Error(e)) => {
            return Err(format!(
                "the server lists {service} but has no descriptor for it: error {} {}",
                e.error_code, e.error_message
            ));
        }
        _ => return Err(format!("no answer to the request for {service}'s file")),
    }
    // Dependencies the server did not send along: ask for them by name until none is missing
    // or the server has no more (a missing type then shows when the message is encoded).
    let mut asked: HashSet<String> = HashSet::new();
    for _ in 0..MAX_ROUNDS {
        let have: HashSet<&str> = files
            .iter()
            .map(|f: &FileDescriptorProto| f.name())
            .collect();
        let missing: Vec<String> = files
            .iter()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !have.contains(d.as_str()) && !asked.contains(d.as_str()))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            break;
        }
        asked.extend(missing.iter().cloned());
        let asks: Vec<Ask> = missing.into_iter().map(Ask::FileByFilename).collect();
        let answers = call(sender, uri, headers, &asks)
            .await
            .map_err(|e| match e {
                CallError::Unimplemented(m) | CallError::Failed(m) => m,
            })?;
        for answer in answers {
            if let Some(Answer::Files(f)) = answer.answer {
                decode_files(&f, &mut files)?;
            }
        }
    }
    Ok(files)
}

fn decode_files(
    response: &FileDescriptorResponse,
    files: &mut Vec<FileDescriptorProto>,
) -> Result<(), String> {
    for bytes in &response.file_descriptor_proto {
        let file = FileDescriptorProto::decode(bytes.as_ref())
            .map_err(|e| format!("sent a file descriptor that does not decode: {e}"))?;
        if !files.iter().any(|f| f.name() == file.name()) {
            files.push(file);
        }
    }
    Ok(())
}

fn with_path(base: &Uri, path: &'static str) -> Result<Uri, String> {
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static(path));
    Uri::from_parts(parts).map_err(|e| format!("reflection URI: {e}"))
}

/// One `ServerReflectionInfo` call with all of `asks` sent at once, then half-closed: the
/// server answers each in order (the protocol's one response per request).
async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    uri: &Uri,
    headers: &HeaderMap,
    asks: &[Ask],
) -> Result<Vec<ServerReflectionResponse>, CallError> {
    let path = uri.path();
    let failed = |problem: String| CallError::Failed(format!("{path}: {problem}"));
    let mut body = BytesMut::new();
    for ask in asks {
        let message = ServerReflectionRequest {
            host: String::new(),
            ask: Some(ask.clone()),
        }
        .encode_to_vec();
        body.put_u8(0);
        body.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        body.put_slice(&message);
    }
    let mut request = Request::new(Full::new(body.freeze()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers.clone();
    sender
        .ready()
        .await
        .map_err(|e| failed(format!("HTTP/2: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(format!("HTTP/2: {e}")))?;
    let status = response.status();
    // Trailers-only: the status is in the head, no body follows.
    if let Some(result) = grpc_status(response.headers()) {
        result.map_err(|(code, m)| status_error(code, m, path))?;
    }
    if !status.is_success() {
        return Err(failed(format!(
            "answered HTTP {status}, not a gRPC response"
        )));
    }
    let collected = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| failed(format!("reading the answer: {e}")))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut data = collected.to_bytes();
    match grpc_status(&trailers) {
        Some(Ok(())) => {}
        Some(Err((code, message))) => return Err(status_error(code, message, path)),
        None => return Err(failed("no grpc-status in the answer".into())),
    }
    let mut answers = Vec::new();
    while data.has_remaining() {
        if data.remaining() < 5 || data[0] != 0 {
            return Err(failed(
                "a malformed or compressed message in the answer".into(),
            ));
        }
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if data.remaining() < 5 + len {
            return Err(failed("the answer ends inside a message".into()));
        }
        data.advance(5);
        let message = data.split_to(len);
        answers.push(
            ServerReflectionResponse::decode(message)
                .map_err(|e| failed(format!("an answer does not decode: {e}")))?,
        );
    }
    if answers.len() != asks.len() {
        return Err(failed(format!(
            "{} answers to {} requests",
            answers.len(),
            asks.len()
        )));
    }
    Ok(answers)
}

/// `grpc-status` (with `grpc-message`) if present: `Ok` for 0.
fn grpc_status(headers: &HeaderMap) -> Option<Result<(), (u32, String)>> {
    let code = headers.get("grpc-status")?;
    let code: u32 = code
        .to_str()
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(2);
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some(Err((code, message)))
}

fn status_error(code: u32, message: String, path: &str) -> CallError {
    let text = format!(
        "{path}: gRPC status {code} {} {message}",
        grpc_code_name(code)
    );
    if code == UNIMPLEMENTED {
        CallError::Unimplemented(text.trim_end().to_owned())
    } else {
        CallError::Failed(text.trim_end().to_owned())
    }
}
