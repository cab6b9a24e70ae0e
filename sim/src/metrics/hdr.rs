//! HdrHistogram plumbing: the one histogram shape every recorder uses, the V2
//! encodings (plain for in-memory snapshots, deflate + base64 for reports) and
//! the standard interval log format (readable by HdrHistogram's own tools).

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};
use hdrhistogram::Histogram;

use super::MAX_LATENCY_US;

/// Errors while encoding, decoding or merging histograms.
#[derive(Debug, thiserror::Error)]
pub enum HdrError {
    #[error("histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram cannot be decoded: {0}")]
    Decode(String),
    #[error("histogram cannot be encoded: {0}")]
    Encode(String),
    #[error("histograms cannot be added: {0}")]
    Add(String),
    #[error("interval log cannot be parsed at byte {offset}")]
    Log { offset: usize },
    #[error("interval log i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A latency histogram in microseconds: 1 us to [`MAX_LATENCY_US`], three
/// significant digits. Values above the maximum are clamped (saturating),
/// never dropped.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// Adds `src` into `dst`, growing `dst` if `src` came from a wider histogram.
pub fn add(dst: &mut Histogram<u64>, src: &Histogram<u64>) -> Result<(), HdrError> {
    dst.auto(true);
    let r = dst.add(src).map_err(|e| HdrError::Add(format!("{e:?}")));
    dst.auto(false);
    r
}

/// The sum of some histograms; `None` if there are none.
pub fn merged<'a>(mut it: impl Iterator<Item = &'a Histogram<u64>>) -> Option<Histogram<u64>> {
    let mut acc = it.next()?.clone();
    for h in it {
        // `add` grows `acc` as needed, so it cannot fail for u64 counters.
        let _ = add(&mut acc, h);
    }
    Some(acc)
}

/// Plain V2 encoding (run-length compacted, not deflated): cheap enough to
/// run once per interval per operation on a worker thread.
pub fn encode_v2(h: &Histogram<u64>) -> Vec<u8> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("V2 encoding into a Vec cannot fail for a u64 histogram");
    buf
}

/// Decodes either V2 encoding (plain or deflated).
pub fn decode(bytes: &[u8]) -> Result<Histogram<u64>, HdrError> {
    let mut cursor = bytes;
    Deserializer::new()
        .deserialize(&mut cursor)
        .map_err(|e| HdrError::Decode(format!("{e:?}")))
}

/// V2 deflate encoding in base64, as HdrHistogram's tools exchange them.
pub fn encode_base64(h: &Histogram<u64>) -> Result<String, HdrError> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| HdrError::Encode(format!("{e:?}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

pub fn decode_base64(s: &str) -> Result<Histogram<u64>, HdrError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim())?;
    decode(&bytes)
}

/// One interval histogram of a log.
#[derive(Clone, Debug)]
pub struct LoggedInterval {
    /// Seconds since the run's start.
    pub start: Duration,
    pub duration: Duration,
    pub tag: Option<String>,
    pub histogram: Histogram<u64>,
}

/// Writes a standard HdrHistogram interval log (values in microseconds).
/// `start_unix_s` (if known) goes into the `StartTime`/`BaseTime` headers;
/// interval timestamps are then seconds since the run's start.
///
/// Intervals are taken one at a time: a decoded histogram of this shape
/// holds ~190 KB of counts whatever it recorded, so a caller that decodes
/// them lazily keeps one in memory, not one per interval (a day of
/// one-second intervals decoded at once took 16 GB).
pub fn write_interval_log<'h, W: Write, H: std::borrow::Borrow<Histogram<u64>>>(
    out: &mut W,
    comment: &str,
    start_unix_s: Option<f64>,
    intervals: impl IntoIterator<Item = Result<(Duration, Duration, &'h str, H), HdrError>>,
) -> Result<(), HdrError> {
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.add_comment(comment);
    builder.add_comment("values in microseconds");
    if let Some(s) = start_unix_s {
        let t = std::time::UNIX_EPOCH + Duration::from_secs_f64(s.max(0.0));
        builder.with_start_time(t).with_base_time(t);
    }
    let mut writer = builder.begin_log_with(out, &mut serializer)?;
    for interval in intervals {
        let (start, duration, tag, h) = interval?;
        writer
            .write_histogram(h.borrow(), start, duration, Tag::new(tag))
            .map_err(|e| HdrError::Encode(format!("{e:?}")))?;
    }
    Ok(())
}

/// Reads every interval of a log written by [`write_interval_log`] (or any
/// HdrHistogram tool), decoding each histogram.
pub fn read_interval_log(bytes: &[u8]) -> Result<Vec<LoggedInterval>, HdrError> {
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|e| match e {
            hdrhistogram::serialization::interval_log::LogIteratorError::ParseError { offset } => {
                HdrError::Log { offset }
            }
        })?;
        if let LogEntry::Interval(i) = entry {
            let raw = base64::engine::general_purpose::STANDARD.decode(i.encoded_histogram())?;
            out.push(LoggedInterval {
                start: i.start_timestamp(),
                duration: i.duration(),
                tag: i.tag().map(|t| t.as_str().to_owned()),
                histogram: decode(&raw)?,
            });
        }
    }
    Ok(out)
}
