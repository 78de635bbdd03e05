//! The exchange both sides speak: what a request carries and what each
//! answer means.

/// Where a device posts its frames.
pub const PATH: &str = "/v1/up";

/// The media type of a frame, both ways.
pub const CONTENT_TYPE: &str = "application/octet-stream";

/// The wait when a 429 or 503 gives no `Retry-After` the device can read
/// (none, or an HTTP date, which a device without a calendar cannot
/// place): a minute.
pub const DEFAULT_RETRY_AFTER_S: u32 = 60;

/// The longest wait honoured: a day. A larger `Retry-After` is taken as a
/// day, so one bad header cannot silence a device for good.
pub const MAX_RETRY_AFTER_S: u32 = 86_400;

/// What an answer to `POST /v1/up` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// 200: the frame was committed; the body is the response frame (an
    /// empty body is no response).
    Answered,
    /// 429 or 503: the server asks the device to wait this many seconds.
    Busy {
        /// From `Retry-After`, or [`DEFAULT_RETRY_AFTER_S`].
        retry_after_s: u32,
    },
    /// 401 or 403: the server will not take this device's frames. Not
    /// transient.
    Refused {
        /// The status.
        status: u16,
    },
    /// Any other 4xx: the server refused this frame (malformed, too
    /// large). The engine sends its records again in a new frame.
    Rejected {
        /// The status.
        status: u16,
    },
    /// Any other status (a 5xx, a redirect): the server could not take
    /// it now. Transient.
    Failed {
        /// The status.
        status: u16,
    },
}

impl Outcome {
    /// The outcome of `status`, with the `Retry-After` header's value if
    /// the answer had one.
    ///
    /// ```
    /// use telemark_http::Outcome;
    /// assert_eq!(Outcome::of(200, None), Outcome::Answered);
    /// assert_eq!(Outcome::of(429, Some(b"120")), Outcome::Busy { retry_after_s: 120 });
    /// // An HTTP date is not placed: the default wait.
    /// assert_eq!(
    ///     Outcome::of(503, Some(b"Wed, 21 Oct 2026 07:28:00 GMT")),
    ///     Outcome::Busy { retry_after_s: 60 }
    /// );
    /// assert_eq!(Outcome::of(401, None), Outcome::Refused { status: 401 });
    /// assert_eq!(Outcome::of(413, None), Outcome::Rejected { status: 413 });
    /// assert_eq!(Outcome::of(500, None), Outcome::Failed { status: 500 });
    /// ```
    pub fn of(status: u16, retry_after: Option<&[u8]>) -> Outcome {
        match status {
            200 => Outcome::Answered,
            429 | 503 => Outcome::Busy {
                retry_after_s: retry_after
                    .and_then(retry_after_seconds)
                    .unwrap_or(DEFAULT_RETRY_AFTER_S),
            },
            401 | 403 => Outcome::Refused { status },
            400..=499 => Outcome::Rejected { status },
            _ => Outcome::Failed { status },
        }
    }
}

/// A `Retry-After` in delta-seconds (RFC 9110 §10.2.3), bounded by
/// [`MAX_RETRY_AFTER_S`]; `None` for anything else.
///
/// ```
/// use telemark_http::exchange::retry_after_seconds;
/// assert_eq!(retry_after_seconds(b"30"), Some(30));
/// assert_eq!(retry_after_seconds(b" 30 "), Some(30));
/// assert_eq!(retry_after_seconds(b"99999999999"), Some(86_400));
/// assert_eq!(retry_after_seconds(b"-1"), None);
/// assert_eq!(retry_after_seconds(b""), None);
/// ```
pub fn retry_after_seconds(value: &[u8]) -> Option<u32> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds = value.iter().try_fold(0u32, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u32::from(d - b'0')))
    });
    Some(seconds.map_or(MAX_RETRY_AFTER_S, |s| s.min(MAX_RETRY_AFTER_S)))
}
