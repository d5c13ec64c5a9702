//! Kubernetes `Status` objects: HTTP error bodies and the exec error channel's verdict.

use serde_json::{Value, json};

use super::StreamError;

/// A `Failure` Status with `code`, `reason` and `message`.
pub fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// The HTTP code and Status reason of an error.
pub fn code_and_reason(err: &StreamError) -> (u16, &'static str) {
    match err {
        StreamError::NotFound(_) => (404, "NotFound"),
        StreamError::BadRequest(_) => (400, "BadRequest"),
        StreamError::Unsupported(_) => (501, "NotImplemented"),
        _ => (500, "InternalError"),
    }
}

/// The Status of an error.
pub fn of_error(err: &StreamError) -> Value {
    let (code, reason) = code_and_reason(err);
    failure(code, reason, &err.to_string())
}

/// What the error channel carries when a command ends, as upstream's kubelet writes it:
/// `Success`, or `Failure` with reason `NonZeroExitCode` and the code as an `ExitCode` cause
/// (kubectl exits with it).
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, \
             exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A failure on the error channel (the command could not run).
pub fn stream_failure(err: &StreamError) -> Value {
    let (code, reason) = code_and_reason(err);
    json!({"metadata": {}, "status": "Failure", "message": err.to_string(),
           "reason": reason, "code": code})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_carries_the_code_as_kubectl_reads_it() {
        let ok = exit_status(&["true".into()], 0);
        assert_eq!(ok["status"], "Success");
        let bad = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(bad["status"], "Failure");
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(bad["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(bad["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn errors_map_to_codes() {
        let s = of_error(&StreamError::NotFound("pod x not found".into()));
        assert_eq!(
            (s["code"].as_u64(), s["reason"].as_str()),
            (Some(404), Some("NotFound"))
        );
        let s = of_error(&StreamError::Unsupported("no".into()));
        assert_eq!(s["code"], 501);
    }
}
