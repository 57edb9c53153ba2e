//! The OpenAPI 3.1 document served at `GET /openapi.json` (hand-written, checked by
//! tests against the router).

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The document parsed.
pub fn document() -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_str(OPENAPI_JSON)
}
