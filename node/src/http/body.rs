//! Reading an ingest request body: the raw bytes under `BODY_BYTES_MAX`,
//! then, for `Content-Encoding: gzip` or `deflate`, the decompressed bytes
//! under the same limit (docs/api.md, "Compressed bodies").
//!
//! The limit bounds what the node holds, so it counts the decompressed
//! bytes: a small gzip "bomb" that inflates to gigabytes is refused after
//! `BODY_BYTES_MAX` + 1 bytes of output, never inflated into memory whole.

use super::error::ApiError;
use super::AppState;
use crate::limits;
use actix_web::http::header::{HeaderMap, CONTENT_ENCODING};
use actix_web::http::StatusCode;
use actix_web::web;
use futures::StreamExt;
use sessiondb_protocol::ErrorCode;
use std::io::Read;
use std::sync::atomic::Ordering;

/// How the body's bytes are encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// HTTP's `deflate` is zlib-wrapped (RFC 9110, 8.4.1.2); some senders
    /// send a raw deflate stream instead, which is accepted too.
    Deflate,
}

/// Why a `Content-Encoding` header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    #[error("Content-Encoding `{value}` is not supported; send gzip, deflate or identity")]
    Unsupported { value: String },
    #[error(
        "Content-Encoding `{value}` names more than one coding; send at most one of gzip, deflate"
    )]
    Stacked { value: String },
    #[error("the Content-Encoding header is not visible ASCII")]
    NotAscii,
}

impl Encoding {
    /// The request's encoding; no header is `Identity`.
    pub fn of(headers: &HeaderMap) -> Result<Encoding, EncodingError> {
        let mut codings = Vec::new();
        for value in headers.get_all(CONTENT_ENCODING) {
            let value = value.to_str().map_err(|_| EncodingError::NotAscii)?;
            for coding in value.split(',') {
                let coding = coding.trim();
                if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                    codings.push(coding.to_string());
                }
            }
        }
        match codings.as_slice() {
            [] => Ok(Encoding::Identity),
            [one] if one.eq_ignore_ascii_case("gzip") || one.eq_ignore_ascii_case("x-gzip") => {
                Ok(Encoding::Gzip)
            }
            [one] if one.eq_ignore_ascii_case("deflate") => Ok(Encoding::Deflate),
            [one] => Err(EncodingError::Unsupported { value: one.clone() }),
            _ => Err(EncodingError::Stacked {
                value: codings.join(", "),
            }),
        }
    }
}

/// Why a compressed body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("the body inflates to more than {limit_bytes} bytes (BODY_BYTES_MAX counts decompressed bytes); send smaller batches")]
    TooLarge { limit_bytes: usize },
    #[error("the body is not a valid {encoding} stream: {source}")]
    Corrupt {
        encoding: &'static str,
        source: std::io::Error,
    },
}

/// Decompresses `compressed`, stopping after `limit_bytes` + 1 bytes of
/// output: reading one byte past the limit is how a bomb is told from a
/// body exactly at it.
pub fn inflate(
    encoding: Encoding,
    compressed: &[u8],
    limit_bytes: usize,
) -> Result<Vec<u8>, InflateError> {
    let cap = limit_bytes as u64 + 1;
    let mut output = Vec::new();
    let (name, result) = match encoding {
        Encoding::Identity => return Ok(compressed.to_vec()),
        Encoding::Gzip => (
            "gzip",
            // MultiGzDecoder: a gzip file may hold several members
            // (concatenated streams), and all of them are the body.
            flate2::read::MultiGzDecoder::new(compressed)
                .take(cap)
                .read_to_end(&mut output),
        ),
        Encoding::Deflate if is_zlib_header(compressed) => (
            "deflate (zlib)",
            flate2::read::ZlibDecoder::new(compressed)
                .take(cap)
                .read_to_end(&mut output),
        ),
        Encoding::Deflate => (
            "deflate",
            flate2::read::DeflateDecoder::new(compressed)
                .take(cap)
                .read_to_end(&mut output),
        ),
    };
    result.map_err(|source| InflateError::Corrupt {
        encoding: name,
        source,
    })?;
    if output.len() > limit_bytes {
        return Err(InflateError::TooLarge { limit_bytes });
    }
    Ok(output)
}

/// A zlib stream starts with CMF/FLG: method 8 (deflate), window at most
/// 32 KiB, and the two bytes a multiple of 31 (RFC 1950, 2.2).
fn is_zlib_header(bytes: &[u8]) -> bool {
    match bytes {
        [cmf, flg, ..] => {
            cmf & 0x0F == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Reads an ingest body: raw bytes refused past `BODY_BYTES_MAX` without
/// buffering them, then decompressed under the same limit. Each refusal is
/// counted in `sessiondb_requests_refused_total{limit}`.
pub async fn read_ingest_body(
    state: &AppState,
    headers: &HeaderMap,
    payload: web::Payload,
) -> Result<web::Bytes, ApiError> {
    let limit_bytes = limits::BODY_BYTES_MAX;
    let refusals = &state.admission.refusals;
    // Before the body is read: an unknown coding costs no buffering.
    let encoding = Encoding::of(headers)
        .inspect_err(|_| {
            refusals.content_encoding.fetch_add(1, Ordering::Relaxed);
        })
        .map_err(|error| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedContentEncoding,
                error.to_string(),
            )
        })?;
    let raw = read_raw(payload, limit_bytes).await.inspect_err(|error| {
        if error.status == StatusCode::PAYLOAD_TOO_LARGE {
            refusals.body_bytes.fetch_add(1, Ordering::Relaxed);
        }
    })?;
    if encoding == Encoding::Identity {
        // The common case takes the buffer as read: no copy.
        return Ok(raw.freeze());
    }
    // Inflating up to 16 MiB takes tens of milliseconds: off the HTTP
    // worker, so other requests on it are not held up.
    let inflated = web::block(move || inflate(encoding, &raw, limit_bytes))
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                format!("the body could not be decompressed now: {error}"),
            )
        })?;
    inflated.map(web::Bytes::from).map_err(|error| match error {
        InflateError::TooLarge { .. } => {
            refusals
                .decompressed_body_bytes
                .fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::DecompressedBodyTooLarge,
                error.to_string(),
            )
        }
        InflateError::Corrupt { .. } => {
            ApiError::bad_request(ErrorCode::MalformedCompressedBody, error.to_string())
        }
    })
}

/// Reads the whole body as sent, refusing more than `limit_bytes` without
/// buffering it.
pub async fn read_raw(
    mut payload: web::Payload,
    limit_bytes: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|error| ApiError::bad_request(ErrorCode::MalformedBody, error.to_string()))?;
        if body.len() + chunk.len() > limit_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                format!("the body is larger than {limit_bytes} bytes (BODY_BYTES_MAX); send smaller batches"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(CONTENT_ENCODING, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn encodings_are_read_case_insensitively_and_identity_is_nothing() {
        assert_eq!(Encoding::of(&headers(&[])).unwrap(), Encoding::Identity);
        assert_eq!(
            Encoding::of(&headers(&["identity"])).unwrap(),
            Encoding::Identity
        );
        assert_eq!(Encoding::of(&headers(&["GZIP"])).unwrap(), Encoding::Gzip);
        assert_eq!(Encoding::of(&headers(&["x-gzip"])).unwrap(), Encoding::Gzip);
        assert_eq!(
            Encoding::of(&headers(&["Deflate"])).unwrap(),
            Encoding::Deflate
        );
        assert_eq!(
            Encoding::of(&headers(&["br"])).unwrap_err(),
            EncodingError::Unsupported { value: "br".into() }
        );
        assert!(matches!(
            Encoding::of(&headers(&["gzip, deflate"])).unwrap_err(),
            EncodingError::Stacked { .. }
        ));
        assert!(matches!(
            Encoding::of(&headers(&["gzip", "gzip"])).unwrap_err(),
            EncodingError::Stacked { .. }
        ));
    }

    #[test]
    fn deflate_is_read_zlib_wrapped_and_raw() {
        let body = b"{\"events\": []}".repeat(100);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&body).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&body).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(inflate(Encoding::Deflate, &zlib, body.len()).unwrap(), body);
        assert_eq!(inflate(Encoding::Deflate, &raw, body.len()).unwrap(), body);
    }

    #[test]
    fn the_limit_counts_decompressed_bytes_and_holds_exactly_at_it() {
        let body = vec![b'a'; 10_000];
        let compressed = gzip(&body);
        assert!(compressed.len() < 1_000);
        assert_eq!(inflate(Encoding::Gzip, &compressed, 10_000).unwrap(), body);
        assert!(matches!(
            inflate(Encoding::Gzip, &compressed, 9_999).unwrap_err(),
            InflateError::TooLarge { limit_bytes: 9_999 }
        ));
    }

    #[test]
    fn concatenated_gzip_members_are_one_body() {
        let mut both = gzip(b"{\"events\": ");
        both.extend(gzip(b"[]}"));
        assert_eq!(
            inflate(Encoding::Gzip, &both, 100).unwrap(),
            b"{\"events\": []}"
        );
    }

    #[test]
    fn corrupt_streams_are_named() {
        let mut compressed = gzip(&[b'x'; 1_000]);
        compressed.truncate(compressed.len() / 2);
        assert!(matches!(
            inflate(Encoding::Gzip, &compressed, 10_000).unwrap_err(),
            InflateError::Corrupt {
                encoding: "gzip",
                ..
            }
        ));
        assert!(matches!(
            inflate(Encoding::Gzip, b"not gzip at all", 10_000).unwrap_err(),
            InflateError::Corrupt { .. }
        ));
    }
}
