//! `GET /v1/openapi.json`: the API described for clients and people.

use axum::Json;
use serde_json::{Value, json};

fn op(summary: &str, auth: bool) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            "200": {"description": "ok"},
            "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    if auth {
        o["security"] = json!([{"bearer": []}]);
        o["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Override"}}}});
        o["responses"]["401"] = json!({"description": "no bearer token, or a wrong one"});
        o["responses"]["403"] = json!({"description": "no admin token configured: the API is read-only"});
    }
    o
}

fn slug_param() -> Value {
    json!([{"name": "slug", "in": "path", "required": true, "schema": {"type": "string"}}])
}

/// The document.
pub(super) fn spec() -> Value {
    let mutating = |summary: &str| {
        let mut o = op(summary, true);
        o["parameters"] = slug_param();
        json!({"post": o})
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "actcore admin API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Probes, metrics, status and audited overrides of actcore. See docs/operations.md."},
        "paths": {
            "/healthz": {"get": op("Liveness: the worker loop woke recently (actcore api: the database pool answers)", false)},
            "/readyz": {"get": op("Readiness: database reachable, schema accepted, definitions loaded, start-up checks passed", false)},
            "/metrics": {"get": op("Prometheus text format", false)},
            "/v1/status": {"get": {
                "summary": "Per-activity status and the recommended action (as `actcore status`)",
                "parameters": [
                    {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "only slugs containing this"},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 500}}
                ],
                "responses": {"200": {"description": "ok"}}
            }},
            "/v1/activities": {"get": op("The live definitions (same q, offset, limit as /v1/status)", false)},
            "/v1/runs": {"get": {
                "summary": "Runs newest first",
                "parameters": [
                    {"name": "slug", "in": "query", "schema": {"type": "string"}},
                    {"name": "since", "in": "query", "schema": {"type": "string"}, "description": "a duration back from now (24h) or an RFC 3339 time"},
                    {"name": "outcome", "in": "query", "schema": {"type": "string"}},
                    {"name": "trigger", "in": "query", "schema": {"type": "string", "enum": ["schedule", "manual", "retry", "fallback"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}
                ],
                "responses": {"200": {"description": "ok"}}
            }},
            "/v1/runs/{run_id}": {"get": {
                "summary": "One run with its context_snapshot",
                "parameters": [{"name": "run_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"200": {"description": "ok"}, "404": {"description": "no such run"}}
            }},
            "/v1/activities/{slug}/trigger": mutating("Queue a manual run (the canary); body {\"reason\", \"force\", \"timeout\"}; 409 while paused or the circuit is open unless force; audited"),
            "/v1/activities/{slug}/pause": mutating("Pause (reason required); audited with the token's name"),
            "/v1/activities/{slug}/resume": mutating("Resume; audited"),
            "/v1/activities/{slug}/circuit/open": mutating("Hold the circuit open until a reset (reason required); audited"),
            "/v1/activities/{slug}/circuit/reset": mutating("Close the circuit, clear the error streak and churn window; audited")
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "ACTCORE_ADMIN_TOKEN, or one of ACTCORE_ADMIN_TOKENS (name:token); the name is the audit actor"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Override": {"type": "object", "properties": {"reason": {"type": "string"}}, "additionalProperties": false}
            }
        }
    })
}

pub(super) async fn document() -> Json<Value> {
    Json(spec())
}
