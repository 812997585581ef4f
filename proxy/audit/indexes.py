"""The indexes, tables and triggers the audit views need on top of the store's
own schema (``proxy/store/sqlite_schema.py`` applies them)."""

from __future__ import annotations

from proxy.audit.search import FTS_DDL

# The DDL the views need, on top of the store's own schema. Every statement is
# idempotent (IF NOT EXISTS, backfills that skip what is there), so the same list
# creates the objects in a new store and brings an existing one up to date.
# - decision_rules: one row per rule a non-allow decision named (the decisions
#   table keeps them as one space-separated string, which no index can search);
# - session_clients: who called in each session (the agent header, else the
#   User-Agent, and the key fingerprint), from each request-stage decision's input;
# - events_fts: a full-text index over event text, tool names and arguments,
#   kept off the recording path (see proxy/audit/search.py).
AUDIT_INDEXES: list[str] = [
    # (sort column, id): a walk down the sort order probes the filters with the id
    # from the index and reads a session's row only when it makes the page.
    "CREATE INDEX IF NOT EXISTS audit_sessions_last_call ON sessions (last_call, id)",
    "CREATE INDEX IF NOT EXISTS audit_sessions_started ON sessions (started, id)",
    "CREATE INDEX IF NOT EXISTS audit_sessions_calls ON sessions (calls, id)",
    "CREATE INDEX IF NOT EXISTS audit_sessions_root ON sessions (root_id)",
    "CREATE INDEX IF NOT EXISTS audit_calls_model ON calls (model, session_id)",
    "CREATE INDEX IF NOT EXISTS audit_calls_started ON calls (started)",
    "CREATE INDEX IF NOT EXISTS audit_decisions_outcome ON decisions (outcome, session_id)",
    "CREATE INDEX IF NOT EXISTS audit_decisions_time ON decisions (time)",
    "CREATE INDEX IF NOT EXISTS audit_events_tools ON events (time, tool_name) WHERE kind = 'tool_call'",
    "CREATE TABLE IF NOT EXISTS decision_rules (decision_id TEXT NOT NULL, rule TEXT NOT NULL,"
    " session_id TEXT NOT NULL, outcome TEXT, time REAL, PRIMARY KEY (decision_id, rule))",
    "CREATE INDEX IF NOT EXISTS audit_rules_rule ON decision_rules (rule, session_id)",
    "CREATE INDEX IF NOT EXISTS audit_rules_rule_time ON decision_rules (rule, time)",
    "CREATE INDEX IF NOT EXISTS audit_rules_time ON decision_rules (time)",
    "CREATE INDEX IF NOT EXISTS audit_rules_session ON decision_rules (session_id, rule)",
    "CREATE TRIGGER IF NOT EXISTS audit_decision_rules AFTER INSERT ON decisions WHEN new.rules != '' BEGIN"
    " INSERT OR IGNORE INTO decision_rules (decision_id, rule, session_id, outcome, time)"
    " SELECT new.id, json_extract(f.value, '$.rule'), new.session_id, new.outcome, new.time"
    " FROM json_each(new.decision) AS k, json_each(k.value) AS f WHERE k.key IN ('deny', 'warn', 'ask', 'terminate');"
    " END",
    "INSERT OR IGNORE INTO decision_rules (decision_id, rule, session_id, outcome, time)"
    " SELECT d.id, json_extract(f.value, '$.rule'), d.session_id, d.outcome, d.time"
    " FROM decisions AS d, json_each(d.decision) AS k, json_each(k.value) AS f"
    " WHERE d.rules != '' AND k.key IN ('deny', 'warn', 'ask', 'terminate')",
    "CREATE TABLE IF NOT EXISTS session_clients (session_id TEXT NOT NULL, agent TEXT NOT NULL,"
    " key_id TEXT NOT NULL, first_seen REAL, PRIMARY KEY (session_id, agent, key_id))",
    "CREATE INDEX IF NOT EXISTS audit_clients_agent ON session_clients (agent, session_id)",
    "CREATE INDEX IF NOT EXISTS audit_clients_key ON session_clients (key_id, session_id)",
    "CREATE TRIGGER IF NOT EXISTS audit_session_clients AFTER INSERT ON decisions WHEN new.stage = 'request' BEGIN"
    " INSERT OR IGNORE INTO session_clients (session_id, agent, key_id, first_seen)"
    " SELECT new.session_id, coalesce(json_extract(c, '$.agent'), json_extract(c, '$.user_agent'), ''),"
    " coalesce(json_extract(c, '$.key_id'), ''), new.time FROM (SELECT json_extract(new.input, '$.call.client') AS c);"
    " END",
    "INSERT OR IGNORE INTO session_clients (session_id, agent, key_id, first_seen)"
    " SELECT session_id, coalesce(json_extract(c, '$.agent'), json_extract(c, '$.user_agent'), ''),"
    " coalesce(json_extract(c, '$.key_id'), ''), t"
    " FROM (SELECT session_id, json_extract(input, '$.call.client') AS c, time AS t FROM decisions WHERE stage = 'request')",
    *FTS_DDL,  # the full-text index (proxy/audit/search.py); the store's writer keeps it current
]
