//! The OpenAPI 3 document of the HTTP API, served at `/v1/openapi.json`.
use serde_json::{Value, json};

/// Every route of [`http::router`](crate::http::router), as `(method, path)`
/// (a test checks the document and the router agree).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("get", "/v1/jobs/{id}/metrics"),
    ("get", "/v1/jobs/{id}/checkpoint"),
    ("get", "/v1/workers"),
    ("get", "/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/metrics"),
];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

/// The document.
pub fn document() -> Value {
    let id_parameter = json!({
        "name": "id", "in": "path", "required": true,
        "description": "The job's id (1, 2, ...)",
        "schema": { "type": "integer", "minimum": 1 }
    });
    let unauthorized = error_response("Missing or wrong bearer token");
    let not_found = error_response("Unknown job");
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "shoal coordinator",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit and follow data-parallel training jobs. Every operation but /healthz and /metrics needs `Authorization: Bearer <token>` (the token is in DATA_DIR/api-token)."
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "description": "The job spec as TOML (application/toml, the default) or JSON (application/json), with the same fields.",
                    "requestBody": {
                        "required": true,
                        "content": {
                            "application/toml": { "schema": { "type": "string" } },
                            "application/json": { "schema": { "$ref": "#/components/schemas/JobSpec" } }
                        }
                    },
                    "responses": {
                        "201": json_response("The job, queued", "Job"),
                        "400": error_response("The spec is malformed or invalid; the message names the field (and the line and column for syntax errors)"),
                        "401": unauthorized,
                        "415": error_response("Neither TOML nor JSON")
                    }
                },
                "get": {
                    "summary": "List jobs, oldest first",
                    "responses": {
                        "200": {
                            "description": "Every job",
                            "content": { "application/json": { "schema": {
                                "type": "object",
                                "properties": { "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } } }
                            } } }
                        },
                        "401": unauthorized
                    }
                }
            },
            "/v1/jobs/{id}": {
                "get": {
                    "summary": "A job with its spec, state transitions and latest checkpoint",
                    "parameters": [ id_parameter ],
                    "responses": {
                        "200": json_response("The job", "JobDetail"),
                        "401": unauthorized,
                        "404": not_found
                    }
                }
            },
            "/v1/jobs/{id}/cancel": {
                "post": {
                    "summary": "Cancel a job; its workers are released",
                    "parameters": [ id_parameter ],
                    "responses": {
                        "200": json_response("The cancelled job", "Job"),
                        "401": unauthorized,
                        "404": not_found,
                        "409": error_response("The job is already over")
                    }
                }
            },
            "/v1/jobs/{id}/metrics": {
                "get": {
                    "summary": "The job's per-step metrics",
                    "parameters": [ id_parameter ],
                    "responses": {
                        "200": {
                            "description": "One entry per completed step",
                            "content": { "application/json": { "schema": {
                                "type": "object",
                                "properties": {
                                    "job": { "type": "integer" },
                                    "steps": { "type": "array", "items": { "$ref": "#/components/schemas/StepMetrics" } }
                                }
                            } } }
                        },
                        "401": unauthorized,
                        "404": not_found
                    }
                }
            },
            "/v1/jobs/{id}/checkpoint": {
                "get": {
                    "summary": "Download the job's latest checkpoint (safetensors, names as the PyTorch state_dict)",
                    "parameters": [ id_parameter ],
                    "responses": {
                        "200": {
                            "description": "The file; headers x-shoal-step and x-shoal-sha256 describe it",
                            "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }
                        },
                        "401": unauthorized,
                        "404": error_response("Unknown job, or no checkpoint yet")
                    }
                }
            },
            "/v1/workers": {
                "get": {
                    "summary": "Live workers",
                    "responses": {
                        "200": {
                            "description": "Every registered, live worker",
                            "content": { "application/json": { "schema": {
                                "type": "object",
                                "properties": { "workers": { "type": "array", "items": { "$ref": "#/components/schemas/Worker" } } }
                            } } }
                        },
                        "401": unauthorized
                    }
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": { "description": "OpenAPI 3 document", "content": { "application/json": { "schema": { "type": "object" } } } },
                        "401": unauthorized
                    }
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness (no token needed)",
                    "security": [],
                    "responses": { "200": { "description": "The coordinator is serving", "content": { "application/json": { "schema": { "type": "object" } } } } }
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (no token needed): jobs by state and transitions, workers, rings, checkpoints, API requests (docs/metrics.md)",
                    "security": [],
                    "responses": { "200": { "description": "Prometheus text format", "content": { "text/plain": { "schema": { "type": "string" } } } } }
                }
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "string" } }
                },
                "JobState": {
                    "type": "string",
                    "enum": ["queued", "running", "waiting_for_workers", "completed", "failed", "cancelled"]
                },
                "RingMember": {
                    "type": "object",
                    "properties": {
                        "worker": { "type": "integer" },
                        "virtual_ranks": { "type": "object", "properties": { "start": { "type": "integer" }, "end": { "type": "integer" } } }
                    }
                },
                "Job": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer" },
                        "name": { "type": "string", "nullable": true },
                        "model": { "type": "string" },
                        "state": { "$ref": "#/components/schemas/JobState" },
                        "error": { "type": "string", "nullable": true },
                        "created_at_ms": { "type": "integer" },
                        "updated_at_ms": { "type": "integer" },
                        "last_step": { "type": "integer", "nullable": true },
                        "ring_generation": { "type": "integer", "nullable": true },
                        "workers": { "type": "array", "items": { "$ref": "#/components/schemas/RingMember" } }
                    }
                },
                "JobDetail": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Job" },
                        { "type": "object", "properties": {
                            "spec": { "$ref": "#/components/schemas/JobSpec" },
                            "transitions": { "type": "array", "items": { "type": "object", "properties": {
                                "at_ms": { "type": "integer" },
                                "from": { "$ref": "#/components/schemas/JobState" },
                                "to": { "$ref": "#/components/schemas/JobState" },
                                "reason": { "type": "string" }
                            } } },
                            "latest_checkpoint": { "type": "object", "nullable": true, "properties": {
                                "step": { "type": "integer" }, "path": { "type": "string" },
                                "sha256": { "type": "string" }, "bytes": { "type": "integer" }, "at_ms": { "type": "integer" }
                            } }
                        } }
                    ]
                },
                "StepMetrics": {
                    "type": "object",
                    "properties": {
                        "step": { "type": "integer" },
                        "at_ms": { "type": "integer" },
                        "values": { "type": "object", "additionalProperties": { "type": "number" } }
                    }
                },
                "Worker": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer" },
                        "address": { "type": "string" },
                        "threads": { "type": "integer" },
                        "job": { "type": "integer", "nullable": true },
                        "registered_ms_ago": { "type": "integer" },
                        "last_heartbeat_ms_ago": { "type": "integer" }
                    }
                },
                "JobSpec": {
                    "type": "object",
                    "description": "See docs/notes/coordinator.md for every field.",
                    "required": ["model", "data", "optimizer", "global_batch", "virtual_ranks"],
                    "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string" },
                        "task": { "type": "string" },
                        "seed": { "type": "integer", "minimum": 0 },
                        "global_batch": { "type": "integer", "minimum": 1 },
                        "virtual_ranks": { "type": "integer", "minimum": 1 },
                        "steps": { "type": "integer", "minimum": 1 },
                        "epochs": { "type": "integer", "minimum": 1 },
                        "model": { "type": "object", "required": ["kind"], "properties": {
                            "kind": { "type": "string", "enum": crate::spec::MODEL_KINDS.iter().map(|kind| kind.name).collect::<Vec<_>>() },
                            "config": { "type": "object", "additionalProperties": { "type": "integer", "minimum": 1 } }
                        } },
                        "data": { "type": "object", "required": ["paths"], "properties": {
                            "paths": { "type": "array", "items": { "type": "string" }, "minItems": 1 },
                            "columns": { "type": "object", "additionalProperties": { "type": "string" } },
                            "partial_batch": { "type": "string", "enum": ["drop", "pad"] }
                        } },
                        "optimizer": { "type": "object", "required": ["kind", "lr"], "properties": {
                            "kind": { "type": "string", "enum": ["sgd", "adam", "adamw"] },
                            "lr": { "type": "number" },
                            "momentum": { "type": "number" }, "dampening": { "type": "number" },
                            "nesterov": { "type": "boolean" },
                            "betas": { "type": "array", "items": { "type": "number" }, "minItems": 2, "maxItems": 2 },
                            "eps": { "type": "number" }, "weight_decay": { "type": "number" }
                        } },
                        "schedule": { "type": "object", "properties": {
                            "kind": { "type": "string", "enum": ["constant", "linear_warmup", "cosine"] },
                            "warmup_steps": { "type": "integer" }, "min_lr": { "type": "number" }
                        } },
                        "checkpoint": { "type": "object", "properties": {
                            "interval_steps": { "type": "integer", "minimum": 1 },
                            "keep": { "type": "integer", "minimum": 1 },
                            "initial": { "type": "string" }
                        } },
                        "workers": { "type": "object", "properties": {
                            "min": { "type": "integer", "minimum": 1 }, "max": { "type": "integer", "minimum": 1 }
                        } },
                        "evaluation": { "type": "object", "required": ["paths", "interval_steps"], "properties": {
                            "paths": { "type": "array", "items": { "type": "string" } },
                            "interval_steps": { "type": "integer", "minimum": 1 },
                            "columns": { "type": "object", "additionalProperties": { "type": "string" } }
                        } }
                    }
                }
            }
        }
    })
}
