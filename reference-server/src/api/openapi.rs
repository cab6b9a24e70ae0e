//! The OpenAPI document at `/openapi.json`, generated with utoipa from the
//! handlers' `#[utoipa::path]` attributes and the `wire` types.
//!
//! Each handler documents what is its own: its body, its success answer
//! and the refusals only it gives (409 on a stale sync, 403 with who may).
//! [`conventions`] adds what every route of a shape answers, in one place,
//! the way the extractors and `Service` really answer: 400 for a path id,
//! query or JSON body that does not parse, 401 without a valid token, 404
//! for an unknown id (in the path or a body), 413/415/422 for bodies, 403/422/500 for changes,
//! and on a user's change the `Idempotency-Key` header with its 400 and 409.
//! The same routes serve 405 with `Allow` to a method they do not take
//! ([`allowed_methods`]).

use std::sync::LazyLock;

use utoipa::openapi::path::{HttpMethod, Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Doc, Ref, ResponseBuilder};
use utoipa::{OpenApi as _, PartialSchema as _};

use super::routes::ApiDoc;
use super::ApiError;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Any signed-in user (`user_token`); the engine then checks the role.
    User,
    /// The device itself, with its own secret (`device_secret`).
    Device,
}

/// One served route, as the document describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// `/v1/sites/{site}`.
    pub path: String,
    pub access: Access,
    /// Takes a JSON body.
    pub has_body: bool,
}

/// The document, built once.
static DOCUMENT: LazyLock<Doc> = LazyLock::new(build);
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(&*DOCUMENT).expect("the document serializes");
    inline_timestamps(&mut doc);
    bound_integers(&mut doc);
    doc.to_string()
});
static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| list_routes(&DOCUMENT));

/// The document, as JSON text.
pub fn openapi() -> String {
    DOCUMENT_JSON.clone()
}

/// The document.
pub fn document() -> &'static Doc {
    &DOCUMENT
}

/// Every served route (all are in the document: `routes!` mounts and
/// documents from one list).
pub fn routes() -> &'static [Route] {
    &ROUTES
}

const METHODS: [(HttpMethod, &str); 5] = [
    (HttpMethod::Get, "GET"),
    (HttpMethod::Post, "POST"),
    (HttpMethod::Put, "PUT"),
    (HttpMethod::Patch, "PATCH"),
    (HttpMethod::Delete, "DELETE"),
];

fn operations(
    item: &utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &Operation)> {
    let ops = [&item.get, &item.post, &item.put, &item.patch, &item.delete];
    METHODS
        .iter()
        .zip(ops)
        .filter_map(|((_, name), op)| op.as_ref().map(|op| (*name, op)))
}

fn access(op: &Operation) -> Access {
    let names: Vec<String> = op
        .security
        .iter()
        .flatten()
        .filter_map(|s| serde_json::to_value(s).ok())
        .filter_map(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect();
    if names.iter().any(|n| n == "device_secret") {
        Access::Device
    } else if names.iter().any(|n| n == "user_token") {
        Access::User
    } else {
        Access::Public
    }
}

fn list_routes(doc: &Doc) -> Vec<Route> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in operations(item) {
            out.push(Route {
                method,
                path: path.clone(),
                access: access(op),
                has_body: op.request_body.is_some(),
            });
        }
    }
    out
}

/// The methods served at a concrete request path (`/v1/sites/3`), for a
/// 405's `Allow`; empty when no route has this path.
pub fn allowed_methods(request_path: &str) -> Vec<&'static str> {
    let want: Vec<&str> = request_path.split('/').collect();
    routes()
        .iter()
        .filter(|r| {
            let have: Vec<&str> = r.path.split('/').collect();
            have.len() == want.len()
                && have
                    .iter()
                    .zip(&want)
                    .all(|(h, w)| (h.starts_with('{') && !w.is_empty()) || h == w)
        })
        .map(|r| r.method)
        .collect()
}

/// Where utoipa 5.5 (feature `jiff_0_2`) documents a `jiff::Timestamp`:
/// a reference to a component named `String` holding `{"type": "string"}`,
/// which loses the format and names no timestamp.
const TIMESTAMP_REF: &str = "#/components/schemas/String";

/// Replaces every reference to utoipa's `String` component (only
/// timestamps point there) with an inline RFC 3339 string, and drops the
/// component.
fn inline_timestamps(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if map.get("$ref").and_then(Value::as_str) == Some(TIMESTAMP_REF) {
                map.remove("$ref");
                map.insert("type".into(), "string".into());
                map.insert("format".into(), "date-time".into());
                return;
            }
            if let Some(Value::Object(schemas)) = map.get_mut("schemas") {
                schemas.remove("String");
            }
            map.values_mut().for_each(inline_timestamps);
        }
        Value::Array(items) => items.iter_mut().for_each(inline_timestamps),
        _ => {}
    }
}

/// The range of each Rust integer type, by the format utoipa gives it
/// (feature `non_strict_integers`, which names the width but states no
/// bound), and the standard format the document says instead (`None`: no
/// standard one fits).
const INTEGER_FORMATS: [(&str, i128, i128, Option<&str>); 8] = [
    ("int8", i8::MIN as i128, i8::MAX as i128, Some("int32")),
    ("int16", i16::MIN as i128, i16::MAX as i128, Some("int32")),
    ("int32", i32::MIN as i128, i32::MAX as i128, Some("int32")),
    ("int64", i64::MIN as i128, i64::MAX as i128, Some("int64")),
    ("u-int8", 0, u8::MAX as i128, Some("int32")),
    ("u-int16", 0, u16::MAX as i128, Some("int32")),
    ("u-int32", 0, u32::MAX as i128, Some("int64")),
    ("u-int64", 0, u64::MAX as i128, None),
];

/// States every integer's range (a `u8` is 0 to 255): a client then knows
/// a larger value is refused, and schemathesis sends out-of-range values
/// only as invalid data. Bounds a field states itself are kept.
fn bound_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let format = map.get("format").and_then(Value::as_str);
            if let Some((_, min, max, standard)) =
                INTEGER_FORMATS.iter().find(|f| Some(f.0) == format)
            {
                let bound = |n: i128| -> Value {
                    i64::try_from(n)
                        .map(Value::from)
                        .unwrap_or_else(|_| Value::from(n as u64))
                };
                map.entry("minimum").or_insert_with(|| bound(*min));
                map.entry("maximum").or_insert_with(|| bound(*max));
                match standard {
                    Some(f) => map.insert("format".into(), (*f).into()),
                    None => map.remove("format"),
                };
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn error(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ApiError")))
                .build(),
        )
        .build()
}

/// What every operation of a shape answers (see the module doc); an
/// answer the handler documented itself is kept.
fn conventions(method: &str, op: &mut Operation) {
    let access = access(op);
    let params = op.parameters.clone().unwrap_or_default();
    let in_path = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path));
    let in_query = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    let body = op.request_body.is_some();
    let change = method != "GET";
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error(description).into());
    };
    if in_path || in_query || body {
        add(
            "400",
            "A path id, query parameter or JSON body that does not parse",
        );
    }
    if access != Access::Public {
        add("401", "No valid bearer token");
    }
    if access == Access::User && change {
        add("403", "The caller's role does not allow it");
    }
    // Ids come in the path or inside a body (`holder`, `doors`).
    if access == Access::User && (in_path || body) {
        add(
            "404",
            "No such id (another organization's id answers the same)",
        );
    }
    if body {
        add("413", "A body over 64 KiB");
        add("415", "A body that is not application/json");
    }
    if body || (change && access != Access::Public) {
        add(
            "422",
            "A field of the wrong type or a rule broken (field and rule named)",
        );
    }
    if change {
        add("500", "The change could not be stored");
    }
    if access == Access::User && change {
        idempotency_key(op);
    }
    if body {
        if let Some(b) = op.request_body.as_mut() {
            b.required = Some(utoipa::openapi::Required::True);
        }
    }
}

/// The `Idempotency-Key` header every user's change takes
/// (`api::idempotency`), and the answers only it gives.
fn idempotency_key(op: &mut Operation) {
    use utoipa::openapi::path::ParameterBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(super::idempotency::MAX_KEY_LEN))
        .pattern(Some("^[!-~]+$"));
    let header = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(utoipa::openapi::Required::False)
        .description(Some(
            "Makes the change safe to retry: the same key with the same method, path and \
             body answers the first answer again (with `Idempotent-Replayed: true`) for 24 h. \
             Keys are the caller's own; 1 to 255 visible ASCII characters.",
        ))
        .schema(Some(schema))
        .build();
    op.parameters.get_or_insert_with(Vec::new).push(header);
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error(description).into());
    };
    add("400", "A malformed Idempotency-Key");
    add(
        "409",
        "A request with this Idempotency-Key has not been answered yet",
    );
}

fn build() -> Doc {
    let mut doc = ApiDoc::openapi();
    doc.info.title = "fleetsim reference server".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "Admin API and HTTP device routes of the reference access engine. Every \
         error answers {\"error\", \"field\", \"rule\"}."
            .into(),
    );
    for item in doc.paths.paths.values_mut() {
        let ops = [
            ("GET", &mut item.get),
            ("POST", &mut item.post),
            ("PUT", &mut item.put),
            ("PATCH", &mut item.patch),
            ("DELETE", &mut item.delete),
        ];
        for (method, op) in ops {
            if let Some(op) = op.as_mut() {
                conventions(method, op);
            }
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ApiError".into(), ApiError::schema());
    let bearer = |what: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(what))
                .build(),
        )
    };
    components.security_schemes.insert(
        "user_token".into(),
        bearer("A user's token `u{id}.{secret}` (bootstrap and user creation answer it)"),
    );
    components.security_schemes.insert(
        "device_secret".into(),
        bearer("The device's secret (its MQTT password, answered once when it is created)"),
    );
    doc
}
