//! The paging of every list route, in Seam's shape: `?limit=` (1 to
//! [`MAX_PAGE_LIMIT`], default [`DEFAULT_PAGE_LIMIT`]) and an opaque
//! `?page_cursor=`; the answer is `{"data": [...], "pagination":
//! {"next_page_cursor", "has_next_page"}}` (`wire::Page`).
//!
//! Items come in a stable order, by a key each route names (mostly the
//! id), and a cursor holds the last key of the page before: a page does
//! not shift when items are added or deleted meanwhile. The cursor is
//! signed (keyed BLAKE3, the key derived from the server's token key) over
//! its key and the list it was made for (the route, its path id and its
//! filters), so a cursor that was garbled, forged or made for another
//! list is a 400 naming `page_cursor`, never a silently wrong page.

use base64::Engine as _;
use serde::de::DeserializeOwned;

use super::wire::{Page, Pagination};
use super::ApiError;

/// Items in a page when the query names no `limit`.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// Most items one page holds.
pub const MAX_PAGE_LIMIT: usize = 500;

/// Where an item sorts in its list (ascending): `(id, 0)` for lists by id.
pub type SortKey = (i64, i64);

const CURSOR_VERSION: u8 = 1;
const MAC_BYTES: usize = 16;
const CURSOR_BYTES: usize = 1 + 16 + MAC_BYTES;

/// One page asked for, checked.
#[derive(Debug)]
pub struct PageRequest<'k> {
    limit: usize,
    after: Option<SortKey>,
    /// The list the cursor belongs to.
    scope: String,
    key: &'k [u8; 32],
}

fn mac(key: &[u8; 32], scope: &str, payload: &[u8]) -> [u8; MAC_BYTES] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&(scope.len() as u64).to_le_bytes());
    h.update(scope.as_bytes());
    h.update(payload);
    let mut out = [0u8; MAC_BYTES];
    out.copy_from_slice(&h.finalize().as_bytes()[..MAC_BYTES]);
    out
}

impl<'k> PageRequest<'k> {
    /// Checks `limit` and `page_cursor` as the query gave them, for the
    /// list named `scope` (the route and every filter that shapes it).
    pub fn parse(
        key: &'k [u8; 32],
        scope: String,
        limit: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<PageRequest<'k>, ApiError> {
        let limit = match limit {
            None => DEFAULT_PAGE_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request("limit", format!("an integer from 1 to {MAX_PAGE_LIMIT}"))
                })?,
        };
        let mut req = PageRequest {
            limit,
            after: None,
            scope,
            key,
        };
        if let Some(text) = cursor {
            req.after = Some(req.open(text).ok_or_else(|| {
                ApiError::bad_request(
                    "page_cursor",
                    "not a cursor this list gave: pass next_page_cursor as it came",
                )
            })?);
        }
        Ok(req)
    }

    /// Most items the page holds (a store query reads one more, to know
    /// whether a next page exists).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The key the page starts after (none: the list's start), for a
    /// route that reads its page from the store rather than filtering.
    pub fn after(&self) -> Option<SortKey> {
        self.after
    }

    fn seal(&self, k: SortKey) -> String {
        let mut bytes = Vec::with_capacity(CURSOR_BYTES);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&k.0.to_be_bytes());
        bytes.extend_from_slice(&k.1.to_be_bytes());
        let m = mac(self.key, &self.scope, &bytes);
        bytes.extend_from_slice(&m);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn open(&self, text: &str) -> Option<SortKey> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        if bytes.len() != CURSOR_BYTES || bytes[0] != CURSOR_VERSION {
            return None;
        }
        let (payload, m) = bytes.split_at(1 + 16);
        // Constant time: a cursor is not a secret, but a MAC compare
        // should not tell how much of it matched.
        let want = mac(self.key, &self.scope, payload);
        let same = want.iter().zip(m).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same {
            return None;
        }
        let a = i64::from_be_bytes(payload[1..9].try_into().ok()?);
        let b = i64::from_be_bytes(payload[9..17].try_into().ok()?);
        Some((a, b))
    }

    /// The page of `items` (in ascending key order) after the cursor.
    pub fn page<T>(&self, items: impl IntoIterator<Item = (SortKey, T)>) -> Page<T> {
        let mut data = Vec::with_capacity(self.limit.min(64));
        let mut last = None;
        let mut more = false;
        for (k, item) in items {
            debug_assert!(last.is_none_or(|l| k > l), "items in ascending key order");
            if self.after.is_some_and(|a| k <= a) {
                continue;
            }
            if data.len() == self.limit {
                more = true;
                break;
            }
            data.push(item);
            last = Some(k);
        }
        Page {
            data,
            pagination: Pagination {
                next_page_cursor: if more {
                    last.map(|k| self.seal(k))
                } else {
                    None
                },
                has_next_page: more,
            },
        }
    }
}

/// A list filter's value, decoded as `T` (a kind, an id): 400 naming
/// `param` when it is not one.
pub fn filter<T: DeserializeOwned>(
    param: &str,
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    let Some(v) = value else {
        return Ok(None);
    };
    // Ids come as numbers, names as strings: try the text as JSON first
    // (`3`), then as a string (`guest`).
    let as_json = serde_json::from_str::<serde_json::Value>(v)
        .ok()
        .filter(|j| j.is_number());
    let value = as_json.unwrap_or_else(|| serde_json::Value::String(v.to_string()));
    serde_json::from_value(value).map(Some).map_err(|e| {
        let rule = e.to_string();
        let rule = rule.split(" at line").next().unwrap_or_default();
        ApiError::bad_request(param, rule.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn req(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest<'static>, ApiError> {
        PageRequest::parse(&KEY, "holders:0".into(), limit, cursor)
    }

    #[test]
    fn pages_walk_the_list_once_in_order() {
        let items: Vec<(SortKey, u32)> = (0..7).map(|i| ((i * 2, 0), i as u32)).collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let r = req(Some("3"), cursor.as_deref()).unwrap();
            let p = r.page(items.clone());
            seen.extend(p.data);
            assert_eq!(
                p.pagination.has_next_page,
                p.pagination.next_page_cursor.is_some()
            );
            cursor = p.pagination.next_page_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, (0..7).collect::<Vec<u32>>());
    }

    #[test]
    fn bad_limits_and_cursors_name_their_parameter() {
        for l in ["0", "501", "x", "-1", "", "1.5"] {
            assert_eq!(req(Some(l), None).unwrap_err().field, "limit", "{l}");
        }
        assert_eq!(req(Some("500"), None).unwrap().limit, 500);
        assert_eq!(req(None, None).unwrap().limit, DEFAULT_PAGE_LIMIT);
        let good = req(Some("1"), None)
            .unwrap()
            .page([((1, 0), 'a'), ((2, 0), 'b')])
            .pagination
            .next_page_cursor
            .unwrap();
        assert!(req(None, Some(&good)).is_ok());
        // Garbled, truncated, forged (another list's, another key's).
        let mut flipped = good.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let other_list = PageRequest::parse(&KEY, "holders:1".into(), Some("1"), None)
            .unwrap()
            .page([((1, 0), 'a'), ((2, 0), 'b')])
            .pagination
            .next_page_cursor
            .unwrap();
        let other_key = PageRequest::parse(&[8; 32], "holders:0".into(), Some("1"), None)
            .unwrap()
            .page([((1, 0), 'a'), ((2, 0), 'b')])
            .pagination
            .next_page_cursor
            .unwrap();
        for bad in [
            String::from_utf8(flipped).unwrap(),
            good[..good.len() - 2].to_string(),
            "%%%".to_string(),
            String::new(),
            other_list,
            other_key,
        ] {
            assert_eq!(
                req(None, Some(&bad)).unwrap_err().field,
                "page_cursor",
                "{bad}"
            );
        }
    }

    /// Every list documents the limits the paging checks.
    #[test]
    fn documented_limits_are_the_checked_ones() {
        let doc: serde_json::Value = serde_json::from_str(&crate::api::openapi::openapi()).unwrap();
        let mut lists = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            let params = item["get"]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let Some(limit) = params
                .iter()
                .find(|p| p["name"] == "page_cursor")
                .and(params.iter().find(|p| p["name"] == "limit"))
            else {
                continue;
            };
            lists += 1;
            assert_eq!(limit["schema"]["minimum"], 1, "{path}");
            assert_eq!(limit["schema"]["maximum"], MAX_PAGE_LIMIT as u64, "{path}");
        }
        assert_eq!(
            lists, 10,
            "sites, doors, devices, holders, locks, codes, schedule, activity, events, deliveries"
        );
    }

    #[test]
    fn filters_decode_or_name_their_parameter() {
        use crate::domain::{DoorId, HolderKind};
        assert_eq!(
            filter::<HolderKind>("kind", Some("guest")).unwrap(),
            Some(HolderKind::Guest)
        );
        assert_eq!(
            filter::<DoorId>("door", Some("3")).unwrap(),
            Some(DoorId(3))
        );
        assert_eq!(filter::<HolderKind>("kind", None).unwrap(), None);
        let e = filter::<HolderKind>("kind", Some("bogus")).unwrap_err();
        assert_eq!((e.status.as_u16(), e.field.as_str()), (400, "kind"));
        assert_eq!(
            filter::<DoorId>("door", Some("x")).unwrap_err().field,
            "door"
        );
        assert_eq!(
            filter::<DoorId>("door", Some("-1")).unwrap_err().field,
            "door"
        );
    }
}
