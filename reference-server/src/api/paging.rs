//! Paging of list routes, one definition for all of them: `limit`
//! (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) and an opaque
//! `page_cursor`; answers `{"data": [...], "pagination":
//! {"next_page_cursor", "has_next_page"}}`. A bad parameter is a 400
//! naming it.
//!
//! A cursor stands for a position in the list's stable order (an id,
//! today): the route reads `limit + 1` items after the position, answers
//! `limit` and makes the next cursor from the last one answered.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// What a cursor says before its position (a version: a cursor of
/// another shape is refused, never misread).
const CURSOR_PREFIX: &str = "c1:";

/// Where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pagination {
    /// Pass as `page_cursor` for the next page; null on the last one.
    pub next_page_cursor: Option<String>,
    pub has_next_page: bool,
}

/// The `limit` parameter, checked (absent: the default).
pub fn limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(
            "limit",
            format!("an integer from 1 to {MAX_LIMIT}"),
        )),
    }
}

/// The position a `page_cursor` stands for (absent: the start).
pub fn cursor(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("page_cursor", "a next_page_cursor this list answered");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    let pos = text.strip_prefix(CURSOR_PREFIX).ok_or_else(bad)?;
    pos.parse::<u64>().map(Some).map_err(|_| bad())
}

/// The cursor of a position.
pub fn encode(pos: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{pos}"))
}

/// Cuts `items` (read as `limit + 1`) to one page; the next cursor is the
/// position of the last item answered.
pub fn page<T>(mut items: Vec<T>, limit: u32, pos: impl Fn(&T) -> u64) -> (Vec<T>, Pagination) {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more { items.last().map(&pos) } else { None };
    (
        items,
        Pagination {
            next_page_cursor: next.map(encode),
            has_next_page: more,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_parameters_name_themselves() {
        assert_eq!(cursor(Some(&encode(42))).unwrap(), Some(42));
        assert_eq!(cursor(None).unwrap(), None);
        for bad in ["", "!!", "YWJj", &URL_SAFE_NO_PAD.encode("c1:x")] {
            assert_eq!(cursor(Some(bad)).unwrap_err().field, "page_cursor", "{bad}");
        }
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("500")).unwrap(), 500);
        for bad in ["0", "501", "-1", "x", "1.5"] {
            assert_eq!(limit(Some(bad)).unwrap_err().field, "limit", "{bad}");
        }
    }

    #[test]
    fn a_page_cuts_the_extra_item_and_points_past_its_last() {
        let (items, p) = page(vec![9, 8, 7], 2, |n| *n as u64);
        assert_eq!(items, vec![9, 8]);
        assert_eq!(
            p.next_page_cursor
                .as_deref()
                .map(|c| cursor(Some(c)).unwrap()),
            Some(Some(8))
        );
        assert!(p.has_next_page);
        let (items, p) = page(vec![9, 8], 2, |n| *n as u64);
        assert_eq!(
            (items.len(), p.has_next_page, p.next_page_cursor),
            (2, false, None)
        );
    }
}
