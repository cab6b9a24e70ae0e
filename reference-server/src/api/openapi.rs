//! The OpenAPI document at `/openapi.json`, built with utoipa from one table
//! of routes (method, path, summary, who may call it).

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApiBuilder, Paths,
    PathsBuilder, Required, ResponseBuilder, Type,
};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Any signed-in user; the engine then checks the role.
    User,
    /// The device itself, with its own secret.
    Device,
}

/// (method, path, summary, access, has a JSON body)
pub const ROUTES: &[(&str, &str, &str, Access, bool)] = &[
    ("GET", "/healthz", "Liveness", Access::Public, false),
    ("GET", "/metrics", "Prometheus metrics", Access::Public, false),
    ("GET", "/openapi.json", "This document", Access::Public, false),
    ("POST", "/v1/bootstrap", "Create the first owner and organization (only on an empty server); returns the owner's token", Access::Public, true),
    ("GET", "/v1/me", "The caller and their roles", Access::User, false),
    ("POST", "/v1/users", "Create a user to invite; returns their token (shown once)", Access::User, true),
    ("POST", "/v1/organizations", "Create an organization owned by the caller", Access::User, true),
    ("GET", "/v1/organizations/{org}", "An organization, its sites and members", Access::User, false),
    ("PATCH", "/v1/organizations/{org}", "Rename an organization (owner)", Access::User, true),
    ("PUT", "/v1/organizations/{org}/members/{user}", "Give a user a role: owner, admin, or door_admin with doors (owner)", Access::User, true),
    ("DELETE", "/v1/organizations/{org}/members/{user}", "Remove a member (owner)", Access::User, false),
    ("POST", "/v1/organizations/{org}/sites", "Create a site with an IANA time zone and settings (owner)", Access::User, true),
    ("POST", "/v1/organizations/{org}/holders", "Create a holder: member, guest, courier or visitor", Access::User, true),
    ("GET", "/v1/organizations/{org}/holders", "The organization's holders", Access::User, false),
    ("GET", "/v1/sites/{site}", "A site, its buildings and doors", Access::User, false),
    ("PUT", "/v1/sites/{site}/settings", "Site settings: six_digit_pins, custom_pins, lockout (owner)", Access::User, true),
    ("POST", "/v1/sites/{site}/buildings", "Create a building (owner)", Access::User, true),
    ("POST", "/v1/sites/{site}/doors", "Create a door: common_area, unit, lift_floors (owner)", Access::User, true),
    ("GET", "/v1/sites/{site}/locks", "The lock list: online, battery, components, location, listings", Access::User, false),
    ("POST", "/v1/buildings/{building}/floors", "Create a floor (owner)", Access::User, true),
    ("POST", "/v1/floors/{floor}/units", "Create a unit (owner)", Access::User, true),
    ("POST", "/v1/doors/{door}/devices", "Add a lock, keypad, door sensor or door phone; returns its MQTT credentials once (owner)", Access::User, true),
    ("GET", "/v1/devices/{device}", "Lock details", Access::User, false),
    ("PUT", "/v1/devices/{device}/guest-settings", "Per-lock guest settings", Access::User, true),
    ("POST", "/v1/devices/{device}/listings", "Link a listing (owner)", Access::User, true),
    ("DELETE", "/v1/devices/{device}/listings/{listing}", "Unlink a listing (owner)", Access::User, false),
    ("POST", "/v1/devices/{device}/fallback-pool", "Pre-load a lock's fallback pool: pins (generate or manual), at most its code slots; answers the credential ids", Access::User, true),
    ("POST", "/v1/devices/{device}/open", "Open Door remotely: ok, motor_blocked, low_battery or offline", Access::User, false),
    ("GET", "/v1/devices/{device}/health", "Uptime % over window_s and the 30-day battery series", Access::User, false),
    ("GET", "/v1/devices/{device}/activity", "Activity log by time range (from, to) and kind, newest first", Access::User, false),
    ("GET", "/v1/devices/{device}/codes", "The lock's codes: origin, status, duration, sync state", Access::User, false),
    ("GET", "/v1/devices/{device}/schedule", "Schedule overview of the lock's codes", Access::User, false),
    ("POST", "/v1/devices/{device}/validate", "Check a credential (body: auth/req; answer: auth/resp); Bearer = the device's secret", Access::Device, true),
    ("GET", "/v1/devices/{device}/sync", "The device's pending codes, one sync message plus the token credentials to confirm (readers without MQTT); Bearer = the device's secret", Access::Device, false),
    ("POST", "/v1/devices/{device}/sync", "Confirm a sync version (body: sync/ack); 409 when stale; Bearer = the device's secret", Access::Device, true),
    ("POST", "/v1/holders/{holder}/disable", "Disable a holder", Access::User, false),
    ("POST", "/v1/holders/{holder}/enable", "Enable a holder", Access::User, false),
    ("POST", "/v1/holders/{holder}/stays", "Create a guest stay (check_in_at, check_out_at)", Access::User, true),
    ("POST", "/v1/stays/{stay}/check-in", "Check a guest in", Access::User, false),
    ("POST", "/v1/stays/{stay}/check-out", "Check a guest out", Access::User, false),
    ("POST", "/v1/credentials", "Issue a code: PIN (generate; custom or manual for members only, a guest's is generated), card, QR or BLE; QR/BLE answers carry the token to share", Access::User, true),
    ("GET", "/v1/credentials/{credential}", "A code (never its secret)", Access::User, false),
    ("DELETE", "/v1/credentials/{credential}", "Delete (revoke) a code", Access::User, false),
    ("POST", "/v1/credentials/{credential}/reveal", "Reveal a code's PIN, card number or token (the only route that does)", Access::User, false),
    ("POST", "/v1/credentials/{credential}/disable", "Disable a code", Access::User, false),
    ("POST", "/v1/credentials/{credential}/enable", "Enable a code", Access::User, false),
    ("PUT", "/v1/credentials/{credential}/pin", "Change a PIN (generate; custom or manual for members only)", Access::User, true),
];

fn method(m: &str) -> HttpMethod {
    match m {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        other => unreachable!("no route uses {other}"),
    }
}

fn error_response(desc: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(format!("{desc}: {{\"error\", \"field\", \"rule\"}}"))
        .build()
}

/// The document, as JSON text.
pub fn openapi() -> String {
    let mut paths: Paths = PathsBuilder::new().build();
    for (m, path, summary, access, body) in ROUTES {
        let mut op = OperationBuilder::new().summary(Some(*summary)).response(
            "200",
            ResponseBuilder::new()
                .description("OK (201 when something was created)")
                .build(),
        );
        for p in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let ty = if p == "listing" {
                Type::String
            } else {
                Type::Integer
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(p)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(ty).build())),
            );
        }
        if *body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", ContentBuilder::new().build())
                    .required(Some(Required::True))
                    .build(),
            ));
            op = op.response("400", error_response("Malformed body"));
            op = op.response("413", error_response("Body over 64 KiB"));
            op = op.response("422", error_response("A rule broken"));
        }
        match access {
            Access::Public => {}
            Access::User | Access::Device => {
                let scheme = if *access == Access::User {
                    "user_token"
                } else {
                    "device_secret"
                };
                op = op
                    .security(SecurityRequirement::new::<_, _, &str>(scheme, []))
                    .response("401", error_response("No or bad token"));
                if *access == Access::User {
                    op = op
                        .response("403", error_response("The caller's role does not allow it"))
                        .response("404", error_response("Unknown id"));
                }
            }
        }
        paths.add_path_operation(*path, vec![method(m)], op.build());
    }
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("fleetsim reference server")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Admin API and HTTP device validation of the reference access engine.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "user_token",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                )
                .security_scheme(
                    "device_secret",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                )
                .build(),
        ))
        .build();
    doc.to_json().expect("the document serializes")
}
