//! The API's OpenAPI 3.0 document, served at `/openapi.json`: every
//! route, its parameters, bodies and answers, errors as
//! `application/problem+json`. A test holds it to the router (every route
//! documented, nothing documented that is not routed), and CI runs
//! schemathesis against the running service with it.

use serde_json::{json, Map, Value};

/// A reference to schema `name`.
fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON answer of schema `name`.
fn answer(description: &str, name: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema(name) } },
    })
}

/// The problems an operation may answer, by status.
fn problems(responses: &mut Map<String, Value>, statuses: &[u16]) {
    for status in statuses {
        let description = match status {
            400 => "a request that does not parse",
            401 => "no token, or one that is not valid",
            403 => "a role or scope that may not",
            404 => "no such device, or one outside the token's scope",
            409 => "a name or id taken, or a device revoked",
            413 => "a body over 64 KiB",
            415 => "a body that is not JSON",
            422 => "a request the service cannot carry out, with why",
            429 => "a device over its rate: again after Retry-After",
            503 => "the database cannot answer now: again after Retry-After",
            _ => "an error",
        };
        responses.insert(
            status.to_string(),
            json!({
                "description": description,
                "content": { "application/problem+json": { "schema": schema("Problem") } },
            }),
        );
    }
}

/// An operation of the API: a token of `role` (or none), its answers.
fn op(
    summary: &str,
    role: Option<&str>,
    parameters: Value,
    body: Option<&str>,
    ok: (u16, Value),
    errors: &[u16],
) -> Value {
    let mut responses = Map::new();
    responses.insert(ok.0.to_string(), ok.1);
    let mut all: Vec<u16> = errors.to_vec();
    if role.is_some() {
        all.extend([401, 403, 503]);
    }
    if body.is_some() {
        all.extend([400, 413, 415, 422]);
    }
    all.sort_unstable();
    all.dedup();
    problems(&mut responses, &all);
    let mut o = json!({
        "summary": summary,
        "parameters": parameters,
        "responses": responses,
    });
    match role {
        Some(r) => o["description"] = json!(format!("Needs a token of role {r} or above.")),
        None => o["security"] = json!([]),
    }
    if let Some(name) = body {
        o["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": schema(name) } },
        });
    }
    o
}

fn path_param(name: &str, description: &str, pattern: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": "string", "pattern": pattern },
    })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name, "in": "query", "required": false, "description": description,
        "schema": schema,
    })
}

/// An integer from `min` to `max`.
fn range(min: i64, max: i64) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max })
}

/// A name: 1 to 64 characters, no control character, not all blank.
fn name() -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": 64,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
    })
}

/// A rule's `when`, with a threshold on `side` (`above` or `below`).
fn when(side: &str) -> Value {
    closed(
        &["device", "channel", side, "for_s"],
        json!({
            "device": range(0, i64::MAX), "channel": range(0, 65_535),
            side: { "type": "number" },
            "for_s": range(0, crate::rules::MAX_FOR_S as i64),
        }),
    )
}

/// A request body's object: only the properties named.
fn closed(required: &[&str], properties: Value) -> Value {
    let mut o = object(required, properties);
    o["additionalProperties"] = json!(false);
    o
}

fn nullable(ty: &str) -> Value {
    json!({ "type": ty, "nullable": true })
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}

fn list(key: &str, item: &str) -> Value {
    object(
        &[key],
        json!({ key: { "type": "array", "items": schema(item) } }),
    )
}

fn schemas() -> Value {
    let int = json!({ "type": "integer" });
    let string = json!({ "type": "string" });
    let mut all = json!({
        "Problem": object(&["type", "title", "status", "detail"], json!({
            "type": string, "title": string, "status": int, "detail": string,
            "config": object(&["code", "detail"], json!({ "code": int, "detail": int })),
        })),
        "Health": object(&["status"], json!({ "status": string })),
        "Device": object(&["id", "name", "created_ms", "state"], json!({
            "id": int, "name": string, "group": nullable("integer"), "created_ms": int,
            "revoked_ms": nullable("integer"), "last_seen_ms": nullable("integer"),
            "state": { "type": "string", "enum": ["unseen", "online", "offline", "revoked"] },
            "offline_ms": nullable("integer"),
        })),
        "Devices": list("devices", "Device"),
        "NewDevice": closed(&["name"], json!({ "name": name(), "group": nullable("integer") })),
        "Provisioned": object(&["device", "key_id", "key", "keys_line"], json!({
            "device": schema("Device"), "key_id": int, "key": string, "keys_line": string,
        })),
        "Key": object(&["key_id", "key", "keys_line"], json!({
            "key_id": int, "key": string, "keys_line": string,
        })),
        "Config": object(&["version", "cbor", "state"], json!({
            "version": nullable("integer"), "cbor": nullable("string"),
            "state": { "type": "string", "enum": ["none", "pending", "applied", "refused"] },
            "code": nullable("integer"), "detail": nullable("integer"),
            "reported": { "allOf": [schema("ReportedConfig")], "nullable": true },
        })),
        "ReportedConfig": object(&["version", "code", "detail", "received_ms"], json!({
            "version": int, "code": int, "detail": int, "received_ms": int,
        })),
        "DeviceDetail": object(&["device", "readings"], json!({
            "device": schema("Device"), "readings": int,
            "config": { "allOf": [schema("Config")], "nullable": true },
            "reported_config": { "allOf": [schema("ReportedConfig")], "nullable": true },
        })),
        "NewConfig": closed(&["cbor"], json!({
            "cbor": { "type": "string", "pattern": "^([0-9a-fA-F]{2})+$" },
        })),
    });
    let more = json!({
        "ConfigQueued": object(&["version", "state"], json!({ "version": int, "state": string })),
        "Membership": closed(&[], json!({ "group": nullable("integer") })),
        "Reading": object(&["channel", "unix_ms", "value", "quality"], json!({
            "channel": int, "unix_ms": int, "value": { "type": "number" }, "quality": int,
        })),
        "Point": object(&["channel", "unix_ms", "mean", "min", "max", "count"], json!({
            "channel": int, "unix_ms": int, "mean": { "type": "number" },
            "min": { "type": "number" }, "max": { "type": "number" }, "count": int,
        })),
        "Readings": object(&["device", "from", "to"], json!({
            "device": int, "from": int, "to": int,
            "readings": { "type": "array", "items": schema("Reading") },
            "points": { "type": "array", "items": schema("Point") },
        })),
        "Alert": object(&["channel", "kind", "severity"], json!({
            "channel": int, "kind": string, "severity": string,
            "unix_ms": nullable("integer"), "value": nullable("number"),
        })),
        "Alerts": list("alerts", "Alert"),
        "Channel": object(&["channel", "unit", "symbol", "kind", "decimals", "scale"], json!({
            "channel": int, "unit": string, "symbol": string,
            "kind": { "type": "string", "enum": ["scaled", "float", "bool", "counter"] },
            "decimals": int, "scale": { "type": "number" },
        })),
        "Channels": list("channels", "Channel"),
        "HealthRow": object(&["uptime_s", "sampled", "sent_readings", "bytes_on_air", "retries",
            "evicted", "decimated", "sensor_faults", "queue_depth", "reset_reason", "wakeups"], json!({
            "unix_ms": nullable("integer"), "uptime_s": int, "sampled": int, "sent_readings": int,
            "bytes_on_air": int, "retries": int, "evicted": int, "decimated": int,
            "sensor_faults": int, "queue_depth": int, "reset_reason": string, "wakeups": int,
        })),
        "Whoami": object(&["role"], json!({
            "role": { "type": "string", "enum": ["read", "operate", "admin"] },
            "scope": nullable("integer"),
        })),
        "DeviceHealth": object(&["health"], json!({
            "health": { "allOf": [schema("HealthRow")], "nullable": true },
        })),
        "Event": object(&["kind", "unix_ms", "detail"], json!({
            "kind": string, "unix_ms": int, "detail": string,
        })),
        "Events": list("events", "Event"),
        "Command": object(&["command", "id", "state"], json!({
            "command": string, "output": int, "value": int, "id": int,
            "state": { "type": "string", "enum": ["queued", "sent", "answered", "expired"] },
            "queued_ms": nullable("integer"), "sent_ms": nullable("integer"),
            "expires_ms": nullable("integer"), "expired_ms": nullable("integer"),
            "result": object(&["status", "value"], json!({ "status": int, "value": int })),
        })),
        "Commands": list("commands", "Command"),
    });
    let rest = json!({
        "NewCommand": { "oneOf": [
            closed(&["command"], json!({
                "command": { "type": "string", "enum": ["ping", "flush", "reboot"] },
                "ttl_s": range(1, 31_536_000),
            })),
            closed(&["command", "output", "value"], json!({
                "command": { "type": "string", "enum": ["set_output"] },
                "output": range(0, 255),
                "value": range(0, 4_294_967_295),
                "ttl_s": range(1, 31_536_000),
            })),
        ] },
        "Group": object(&["id", "name"], json!({
            "id": int, "name": string, "parent": nullable("integer"),
        })),
        "Groups": list("groups", "Group"),
        "Silence": closed(&[], json!({ "intervals": { "type": "integer", "minimum": 0, "maximum": 1000, "nullable": true } })),
        "GroupSilence": object(&["group"], json!({ "group": int, "intervals": nullable("integer") })),
        "Output": closed(&["output", "name"], json!({
            "output": { "type": "integer", "minimum": 0, "maximum": 255 }, "name": name(),
        })),
        "Outputs": object(&["outputs"], json!({
            "outputs": { "type": "array", "items": schema("Output") },
        })),
        "NewOutputs": closed(&["outputs"], json!({
            "outputs": { "type": "array", "items": schema("Output"), "maxItems": 256 },
        })),
        "NewGroup": closed(&["name"], json!({ "name": name(), "parent": nullable("integer") })),
        "Token": object(&["id", "name", "role", "created_ms"], json!({
            "id": int, "name": string,
            "role": { "type": "string", "enum": ["read", "operate", "admin"] },
            "group": nullable("integer"), "created_ms": int, "revoked_ms": nullable("integer"),
            "token": { "type": "string", "description": "the secret, in the answer that makes it only" },
        })),
        "Tokens": list("tokens", "Token"),
        "NewToken": closed(&["name", "role"], json!({
            "name": string,
            "role": { "type": "string", "enum": ["read", "operate", "admin"] },
            "group": nullable("integer"),
        })),
        "Delivery": object(&["sink", "notification", "attempt", "unix_ms", "delivered"], json!({
            "sink": string, "notification": int, "attempt": int, "unix_ms": int,
            "status": nullable("integer"), "error": nullable("string"), "delivered": { "type": "boolean" },
        })),
        "Deliveries": list("deliveries", "Delivery"),
        "RuleSpec": closed(&["name", "when", "then"], json!({
            "name": name(),
            "when": { "oneOf": [when("above"), when("below")] },
            "then": { "oneOf": [
                closed(&["device", "command"], json!({
                    "device": range(0, i64::MAX),
                    "command": { "type": "string", "enum": ["ping", "flush", "reboot"] },
                })),
                closed(&["device", "command", "output", "value"], json!({
                    "device": range(0, i64::MAX),
                    "command": { "type": "string", "enum": ["set_output"] },
                    "output": range(0, 255),
                    "value": range(0, 4_294_967_295),
                })),
            ] },
        })),
        "Rule": object(&["id", "name", "when", "then"], json!({
            "id": int, "name": string, "when": { "type": "object" }, "then": { "type": "object" },
        })),
        "Rules": list("rules", "Rule"),
    });
    // In three parts: one json! of them all is past the macro's depth.
    for part in [more, rest] {
        if let (Some(all), Value::Object(part)) = (all.as_object_mut(), part) {
            all.extend(part);
        }
    }
    all
}

/// The document.
pub fn document() -> Value {
    let device = || {
        path_param(
            "id",
            "a device id, decimal or 0x-hexadecimal",
            "^([0-9]{1,15}|0x[0-9a-fA-F]{1,13})$",
        )
    };
    let row = |what: &str| path_param("id", what, "^[0-9]{1,15}$");
    let limit = || query("limit", "the most rows (100 by default)", range(1, 10_000));
    let none = || json!([]);
    let no_content = |what: &str| (204, json!({ "description": what }));
    let paths = json!({
        "/healthz": { "get": op("Whether the database answers", None, none(), None,
            (200, answer("it answers", "Health")), &[503]) },
        "/metrics": { "get": op("Ingest counters and commit latency, in the Prometheus text format",
            None, none(), None,
            (200, json!({ "description": "the counters",
                "content": { "text/plain": { "schema": { "type": "string" } } } })), &[503]) },
        "/openapi.json": { "get": op("This document", None, none(), None,
            (200, json!({ "description": "the document",
                "content": { "application/json": { "schema": { "type": "object" } } } })), &[]) },
        "/v1/up": { "post": {
            "summary": "A device's frame; the answer is the response frame, after the commit",
            "security": [],
            "requestBody": { "required": true, "content": {
                "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
            "responses": {
                "200": { "description": "stored: the response frame",
                    "content": { "application/octet-stream": {
                        "schema": { "type": "string", "format": "binary" } } } },
                "400": { "description": "not a frame, or refused by the protocol",
                    "content": { "application/problem+json": { "schema": schema("Problem") } } },
                "403": { "description": "a device or key unknown, revoked or retired",
                    "content": { "application/problem+json": { "schema": schema("Problem") } } },
                "413": { "description": "a body over 64 KiB",
                    "content": { "application/problem+json": { "schema": schema("Problem") } } },
                "429": { "description": "a device over its rate",
                    "content": { "application/problem+json": { "schema": schema("Problem") } } },
                "503": { "description": "not stored now: again after Retry-After",
                    "content": { "application/problem+json": { "schema": schema("Problem") } } },
            },
        } },
        "/v1/devices": {
            "get": op("Every device the token sees", Some("read"), none(), None,
                (200, answer("the devices", "Devices")), &[]),
            "post": op("A new device and its key", Some("admin"), none(), Some("NewDevice"),
                (201, answer("what its firmware needs", "Provisioned")), &[409]),
        },
        "/v1/devices/{id}": { "get": op("One device, its reading count and desired config",
            Some("read"), json!([device()]), None, (200, answer("the device", "DeviceDetail")),
            &[400, 404]) },
        "/v1/devices/{id}/revoke": { "post": op("Refuses its frames from now on", Some("admin"),
            json!([device()]), None, no_content("revoked"), &[400, 404]) },
        "/v1/devices/{id}/rotate": { "post": op("A new key, sent to the device until it uses it",
            Some("admin"), json!([device()]), None, (201, answer("the new key", "Key")),
            &[400, 404, 409, 422]) },
        "/v1/devices/{id}/outputs": {
            "get": op("The device's outputs, as named", Some("read"), json!([device()]), None,
                (200, answer("the outputs", "Outputs")), &[400, 404]),
            "put": op("Names its outputs, in place of the names they had", Some("operate"),
                json!([device()]), Some("NewOutputs"), (200, answer("the outputs", "Outputs")),
                &[400, 404]),
        },
        "/v1/devices/{id}/group": { "put": op("Moves it to a group, or out of any",
            Some("admin"), json!([device()]), Some("Membership"), no_content("moved"),
            &[404, 409]) },
        "/v1/devices/{id}/readings": { "get": op(
            "Readings of a time range, or their downsampled points", Some("read"),
            json!([device(),
                query("channel", "one channel, or all", range(0, 65_535)),
                query("from", "Unix ms, inclusive, before to (a day before it by default)",
                    range(0, (1 << 50) - 1)),
                query("to", "Unix ms, exclusive (now by default)", range(1 << 50, 1 << 51)),
                query("points", "mean, min and max in this many buckets", range(1, 10_000))]),
            None, (200, answer("the readings", "Readings")), &[400, 404]) },
        "/v1/devices/{id}/alerts": { "get": op("The latest alerts", Some("read"),
            json!([device(), limit()]), None, (200, answer("the alerts", "Alerts")), &[400, 404]) },
        "/v1/whoami": { "get": op("What the token may do: its role and the group it is scoped to",
            Some("read"), none(), None, (200, answer("the token's role", "Whoami")), &[]) },
        "/v1/devices/{id}/health": { "get": op(
            "Its latest heartbeat: its store depth and health counters", Some("read"),
            json!([device()]), None, (200, answer("the health", "DeviceHealth")), &[400, 404]) },
        "/v1/devices/{id}/channels": { "get": op(
            "What each channel measures, as the device reported it: unit, kind, and the scale \
             of a scaled channel's readings", Some("read"), json!([device()]), None,
            (200, answer("the channels", "Channels")), &[400, 404]) },
        "/v1/devices/{id}/events": { "get": op("The latest events: offline, recovered, rule",
            Some("read"), json!([device(), limit()]), None,
            (200, answer("the events", "Events")), &[400, 404]) },
        "/v1/devices/{id}/commands": {
            "get": op("Every command, with its delivery state", Some("read"),
                json!([device()]), None, (200, answer("the commands", "Commands")), &[400, 404]),
            "post": op("Queues a command", Some("operate"), json!([device()]), Some("NewCommand"),
                (201, answer("queued", "Command")), &[404, 409]),
        },
        "/v1/devices/{id}/config": {
            "get": op("The config the device should run, and where its delivery stands",
                Some("read"), json!([device()]), None, (200, answer("the config", "Config")),
                &[400, 404]),
            "put": op("A config update, checked by the core's parser", Some("operate"),
                json!([device()]), Some("NewConfig"),
                (200, answer("queued", "ConfigQueued")), &[404, 409]),
        },
        "/v1/groups": {
            "get": op("The groups the token sees", Some("read"), none(), None,
                (200, answer("the groups", "Groups")), &[]),
            "post": op("A new group", Some("admin"), none(), Some("NewGroup"),
                (201, answer("the group", "Group")), &[409]),
        },
        "/v1/groups/{id}/silence": {
            "get": op("The silent-device rule's intervals the group sets (null: its parent's or the service's)",
                Some("read"), json!([row("a group id")]), None,
                (200, answer("its intervals", "GroupSilence")), &[400, 404]),
            "put": op("Sets them, for its devices and the groups below it (0: never offline)",
                Some("admin"), json!([row("a group id")]), Some("Silence"),
                (204, json!({ "description": "set" })), &[404]),
        },
        "/v1/tokens": {
            "get": op("Every token, without its secret", Some("admin"), none(), None,
                (200, answer("the tokens", "Tokens")), &[]),
            "post": op("A new token; its secret is in this answer only", Some("admin"), none(),
                Some("NewToken"), (201, answer("the token", "Token")), &[409]),
        },
        "/v1/tokens/{id}": { "delete": op("Revokes a token", Some("admin"),
            json!([row("a token id")]), None, no_content("revoked"), &[400, 404]) },
        "/v1/rules": {
            "get": op("The rules whose devices the token sees", Some("read"), none(), None,
                (200, answer("the rules", "Rules")), &[]),
            "post": op("A new rule", Some("operate"), none(), Some("RuleSpec"),
                (201, answer("the rule", "Rule")), &[404, 409]),
        },
        "/v1/rules/{id}": { "delete": op("Removes a rule", Some("operate"),
            json!([row("a rule id")]), None, no_content("removed"), &[400, 404]) },
        "/v1/deliveries": { "get": op("The latest attempts at delivering notifications",
            Some("admin"), json!([limit()]), None,
            (200, answer("the attempts", "Deliveries")), &[400]) },
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "telemark-cloud",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The service's HTTP API: devices and their keys, readings, alerts, \
                events, commands, config, groups, tokens, rules and notifications. Every /v1 \
                request but the ingest carries Authorization: Bearer TOKEN.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}
