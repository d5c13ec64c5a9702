//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, the same messages) for
//! grpc-echo's own services, answered from the committed descriptor set.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use bytes::{Buf as _, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};
use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use tokio::sync::mpsc;

use super::framing::{GrpcBody, MAX_MESSAGE, code, encode, status_headers};
use super::proto::DESCRIPTOR_SET;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ServerReflectionRequest {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(oneof = "MessageRequest", tags = "3, 4, 5, 6, 7")]
    pub message_request: Option<MessageRequest>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum MessageRequest {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExtensionRequest {
    #[prost(string, tag = "1")]
    pub containing_type: String,
    #[prost(int32, tag = "2")]
    pub extension_number: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ServerReflectionResponse {
    #[prost(string, tag = "1")]
    pub valid_host: String,
    #[prost(message, optional, tag = "2")]
    pub original_request: Option<ServerReflectionRequest>,
    #[prost(oneof = "MessageResponse", tags = "4, 5, 6, 7")]
    pub message_response: Option<MessageResponse>,
}

// The variant names are the proto's oneof members.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum MessageResponse {
    #[prost(message, tag = "4")]
    FileDescriptorResponse(FileDescriptorResponse),
    #[prost(message, tag = "5")]
    AllExtensionNumbersResponse(ExtensionNumberResponse),
    #[prost(message, tag = "6")]
    ListServicesResponse(ListServiceResponse),
    #[prost(message, tag = "7")]
    ErrorResponse(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FileDescriptorResponse {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExtensionNumberResponse {
    #[prost(string, tag = "1")]
    pub base_type_name: String,
    #[prost(int32, repeated, tag = "2")]
    pub extension_number: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ServiceResponse {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ErrorResponse {
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// The descriptor set, indexed for the reflection requests.
#[derive(Debug)]
pub(crate) struct Index {
    /// Each file's name, serialized `FileDescriptorProto` and dependencies (file names).
    files: Vec<(String, Bytes, Vec<String>)>,
    by_name: HashMap<String, usize>,
    /// Every fully-qualified symbol (service, method, message, field, enum, enum value) → file.
    symbols: HashMap<String, usize>,
    /// The full names of the services, in file order.
    services: Vec<String>,
    /// Full names of the message types (those have extension numbers to ask for, none here).
    messages: HashSet<String>,
}

/// Built once from the embedded bytes (a unit test proves they decode).
static INDEX: LazyLock<Result<Index, String>> = LazyLock::new(|| Index::build(DESCRIPTOR_SET));

impl Index {
    pub(crate) fn build(set: &[u8]) -> Result<Index, String> {
        let set = FileDescriptorSet::decode(set)
            .map_err(|e| format!("the embedded descriptor set does not decode: {e}"))?;
        let mut index = Index {
            files: Vec::new(),
            by_name: HashMap::new(),
            symbols: HashMap::new(),
            services: Vec::new(),
            messages: HashSet::new(),
        };
        for file in set.file {
            let i = index.files.len();
            let prefix = match file.package() {
                "" => String::new(),
                package => format!("{package}."),
            };
            for service in &file.service {
                let name = format!("{prefix}{}", service.name());
                for method in &service.method {
                    index.symbols.insert(format!("{name}.{}", method.name()), i);
                }
                index.symbols.insert(name.clone(), i);
                index.services.push(name);
            }
            for message in &file.message_type {
                index.add_message(&prefix, message, i);
            }
            for e in &file.enum_type {
                index.add_enum(&prefix, e, i);
            }
            let name = file.name().to_owned();
            index.by_name.insert(name.clone(), i);
            let bytes = Bytes::from(file.encode_to_vec());
            index.files.push((name, bytes, file.dependency));
        }
        Ok(index)
    }

    fn add_message(&mut self, prefix: &str, message: &DescriptorProto, file: usize) {
        let name = format!("{prefix}{}", message.name());
        for field in &message.field {
            self.symbols
                .insert(format!("{name}.{}", field.name()), file);
        }
        let inner = format!("{name}.");
        for nested in &message.nested_type {
            self.add_message(&inner, nested, file);
        }
        for e in &message.enum_type {
            self.add_enum(&inner, e, file);
        }
        self.symbols.insert(name.clone(), file);
        self.messages.insert(name);
    }

    fn add_enum(&mut self, prefix: &str, e: &EnumDescriptorProto, file: usize) {
        // Enum values are scoped beside their enum, not inside it (C++ scoping rules).
        for value in &e.value {
            self.symbols
                .insert(format!("{prefix}{}", value.name()), file);
        }
        self.symbols.insert(format!("{prefix}{}", e.name()), file);
    }

    /// File `i` and, transitively, the dependencies not yet sent on this stream.
    fn with_dependencies(&self, i: usize, sent: &mut HashSet<usize>) -> Vec<Bytes> {
        let mut out = vec![self.files[i].1.clone()];
        sent.insert(i);
        let mut todo: Vec<usize> = vec![i];
        while let Some(next) = todo.pop() {
            for dep in &self.files[next].2 {
                if let Some(&d) = self.by_name.get(dep)
                    && sent.insert(d)
                {
                    out.push(self.files[d].1.clone());
                    todo.push(d);
                }
            }
        }
        out
    }

    /// The answer to one request; `sent` holds the files already sent on this stream.
    pub(crate) fn answer(
        &self,
        request: ServerReflectionRequest,
        sent: &mut HashSet<usize>,
    ) -> Option<ServerReflectionResponse> {
        let not_found = |what: String| {
            MessageResponse::ErrorResponse(ErrorResponse {
                error_code: code::NOT_FOUND as i32,
                error_message: what,
            })
        };
        let files = |i: usize, sent: &mut HashSet<usize>| {
            MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto: self.with_dependencies(i, sent),
            })
        };
        let response = match request.message_request.as_ref()? {
            MessageRequest::FileByFilename(name) => match self.by_name.get(name) {
                Some(&i) => files(i, sent),
                None => not_found(format!("unknown file {name:?}")),
            },
            MessageRequest::FileContainingSymbol(symbol) => match self.symbols.get(symbol) {
                Some(&i) => files(i, sent),
                None => not_found(format!("unknown symbol {symbol:?}")),
            },
            MessageRequest::FileContainingExtension(e) => not_found(format!(
                "no extension {} of {:?}: these files declare no extensions",
                e.extension_number, e.containing_type
            )),
            MessageRequest::AllExtensionNumbersOfType(name) => {
                if self.messages.contains(name) {
                    MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                        base_type_name: name.clone(),
                        extension_number: Vec::new(),
                    })
                } else {
                    not_found(format!("unknown message type {name:?}"))
                }
            }
            MessageRequest::ListServices(_) => {
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
        };
        Some(ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(response),
        })
    }
}

/// The bidirectional `ServerReflectionInfo` call: one response per request as each arrives,
/// status OK in the trailers once the client half-closes.
pub(crate) fn serve(body: Incoming) -> GrpcBody {
    // Small: a reflection client waits for each answer before it asks the next question.
    let (frames, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let (status, message) = answer_stream(body, &frames).await;
        let mut trailers = http::HeaderMap::new();
        status_headers(&mut trailers, status, &message);
        let _ = frames.send(Frame::trailers(trailers)).await;
    });
    GrpcBody::streaming(rx)
}

async fn answer_stream(mut body: Incoming, frames: &mpsc::Sender<Frame<Bytes>>) -> (u32, String) {
    let index = match &*INDEX {
        Ok(index) => index,
        Err(e) => return (code::INTERNAL, e.clone()),
    };
    let mut buf = BytesMut::new();
    let mut sent = HashSet::new();
    loop {
        loop {
            let message = match next_message(&mut buf) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => return status,
            };
            let request = match ServerReflectionRequest::decode(message) {
                Ok(request) => request,
                Err(e) => {
                    return (
                        code::INVALID_ARGUMENT,
                        format!("bad ServerReflectionRequest: {e}"),
                    );
                }
            };
            let Some(response) = index.answer(request, &mut sent) else {
                return (
                    code::INVALID_ARGUMENT,
                    "the ServerReflectionRequest asks nothing (no message_request set)".into(),
                );
            };
            if frames.send(Frame::data(encode(&response))).await.is_err() {
                // The client went away: nobody reads the status either.
                return (code::OK, String::new());
            }
        }
        match body.frame().await {
            None => break,
            Some(Err(e)) => return (code::INTERNAL, format!("cannot read the request: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    if buf.is_empty() {
        (code::OK, String::new())
    } else {
        (
            code::INTERNAL,
            format!("the request ended inside a message ({} bytes)", buf.len()),
        )
    }
}

/// The next whole length-prefixed message of `buf`, if one has arrived.
fn next_message(buf: &mut BytesMut) -> Result<Option<Bytes>, (u32, String)> {
    let Some(header) = buf.first_chunk::<5>() else {
        return Ok(None);
    };
    if header[0] != 0 {
        return Err((
            code::UNIMPLEMENTED,
            "compressed messages are not supported: send identity encoding".into(),
        ));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err((
            code::RESOURCE_EXHAUSTED,
            format!("a {len}-byte message is over the {MAX_MESSAGE}-byte limit"),
        ));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ask(index: &Index, request: MessageRequest) -> MessageResponse {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        index
            .answer(request.clone(), &mut HashSet::new())
            .unwrap()
            .message_response
            .unwrap()
    }

    fn file_names(response: MessageResponse) -> Vec<String> {
        let MessageResponse::FileDescriptorResponse(files) = response else {
            panic!("not files: {response:?}")
        };
        files
            .file_descriptor_proto
            .iter()
            .map(|b| {
                prost_types::FileDescriptorProto::decode(b.as_ref())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn services_symbols_and_files_are_found() {
        let index = Index::build(DESCRIPTOR_SET).unwrap();
        let MessageResponse::ListServicesResponse(list) =
            ask(&index, MessageRequest::ListServices(String::new()))
        else {
            panic!("not a list")
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "skiff.echo.v1.Echo",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"
            ]
        );
        for (symbol, file) in [
            ("skiff.echo.v1.Echo", "skiff/echo/v1/echo.proto"),
            ("skiff.echo.v1.Echo.Echo", "skiff/echo/v1/echo.proto"),
            ("skiff.echo.v1.EchoResponse.pod", "skiff/echo/v1/echo.proto"),
            (
                "grpc.health.v1.HealthCheckResponse.ServingStatus",
                "grpc/health/v1/health.proto",
            ),
            (
                "grpc.health.v1.HealthCheckResponse.SERVING",
                "grpc/health/v1/health.proto",
            ),
            (
                "grpc.reflection.v1alpha.ServerReflection",
                "grpc/reflection/v1alpha/reflection.proto",
            ),
        ] {
            assert_eq!(
                file_names(ask(
                    &index,
                    MessageRequest::FileContainingSymbol(symbol.into())
                )),
                [file],
                "{symbol}"
            );
        }
        assert_eq!(
            file_names(ask(
                &index,
                MessageRequest::FileByFilename("grpc/health/v1/health.proto".into())
            )),
            ["grpc/health/v1/health.proto"]
        );
        for request in [
            MessageRequest::FileContainingSymbol("skiff.echo.v1.Nope".into()),
            MessageRequest::FileByFilename("nope.proto".into()),
            MessageRequest::AllExtensionNumbersOfType("nope.Nope".into()),
            MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type: "skiff.echo.v1.EchoRequest".into(),
                extension_number: 100,
            }),
        ] {
            let MessageResponse::ErrorResponse(e) = ask(&index, request.clone()) else {
                panic!("{request:?} found")
            };
            assert_eq!(e.error_code, 5, "{request:?}");
        }
        assert!(matches!(
            ask(&index, MessageRequest::AllExtensionNumbersOfType("skiff.echo.v1.EchoRequest".into())),
            MessageResponse::AllExtensionNumbersResponse(r) if r.extension_number.is_empty()
        ));
        let empty = ServerReflectionRequest {
            host: String::new(),
            message_request: None,
        };
        assert!(index.answer(empty, &mut HashSet::new()).is_none());
    }

    #[test]
    fn messages_are_cut_from_the_stream_as_they_complete() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 2, 0x3a][..]);
        assert_eq!(next_message(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[0x00, 0, 0, 0, 0, 0]);
        assert_eq!(next_message(&mut buf).unwrap().unwrap(), &[0x3a, 0][..]);
        assert_eq!(next_message(&mut buf).unwrap().unwrap(), &[][..]);
        assert!(buf.is_empty());
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        assert_eq!(
            next_message(&mut compressed).unwrap_err().0,
            code::UNIMPLEMENTED
        );
        let mut huge = BytesMut::from(&[0u8, 0xff, 0, 0, 0][..]);
        assert_eq!(
            next_message(&mut huge).unwrap_err().0,
            code::RESOURCE_EXHAUSTED
        );
    }

    /// Over a real HTTP/2 stream: each answer arrives while the request side is still open
    /// (what grpcurl waits for), and the status once the client half-closes.
    #[tokio::test]
    async fn the_stream_answers_each_request_as_it_arrives() {
        use http_body_util::StreamBody;
        use hyper_util::rt::{TokioExecutor, TokioIo};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = crate::images::grpc_echo::GrpcEchoConfig::new(0);
        tokio::spawn(crate::images::grpc_echo::serve_on(
            listener,
            config,
            std::future::pending(),
        ));
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        for path in [
            super::super::proto::REFLECTION_V1_PATH,
            super::super::proto::REFLECTION_V1ALPHA_PATH,
        ] {
            let (requests, rx) = mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
            let body =
                StreamBody::new(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|frame| (frame, rx))
                })));
            let request = http::Request::post(format!("http://{addr}{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(body)
                .unwrap();
            let ask = |request: MessageRequest| {
                Frame::data(encode(&ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request),
                }))
            };
            requests
                .send(Ok(ask(MessageRequest::ListServices("*".into()))))
                .await
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let mut next_response = async || {
                let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
                ServerReflectionResponse::decode(&data[5..]).unwrap()
            };
            let first = next_response().await;
            assert!(
                matches!(&first.message_response, Some(MessageResponse::ListServicesResponse(l)) if l.service.len() == 4),
                "{first:?}"
            );
            requests
                .send(Ok(ask(MessageRequest::FileContainingSymbol(
                    "skiff.echo.v1.EchoRequest".into(),
                ))))
                .await
                .unwrap();
            let second = next_response().await;
            assert_eq!(
                file_names(second.message_response.unwrap()),
                ["skiff/echo/v1/echo.proto"]
            );
            drop(requests);
            let trailers = body
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_trailers()
                .unwrap();
            assert_eq!(trailers["grpc-status"], "0");
        }
    }
}
