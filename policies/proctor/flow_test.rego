package proctor_test

import rego.v1

import data.proctor

cfg := {"untrusted_tools": ["fetch_url"], "sinks": {"send_email": {"destination": ["to"]}}, "internal_domains": ["corp.example"]}

read_web := {"stage": "request", "session": {"labels": {}, "counters": {}}, "new": [{"seq": 4, "kind": "tool_result", "tool_name": "fetch_url", "text": "page"}]}

email(to, labels) := {
	"stage": "action",
	"session": {"labels": labels, "counters": {}},
	"new": [],
	"action": {"kind": "tool_call", "tool_name": "send_email", "arguments": {"to": to, "body": "hi"}},
}

tainted := {"untrusted_source": {"tool": "fetch_url", "seq": 4}}

test_untrusted_read_labels_the_session if {
	d := proctor.decision with input as read_web with data.proctor_settings as cfg
	d.labels.untrusted_source == {"tool": "fetch_url", "seq": 4}
	d.allow
}

test_external_email_after_untrusted_read_is_denied if {
	d := proctor.decision with input as email("eve@evil.example", tainted) with data.proctor_settings as cfg
	not d.allow
	d.deny[0].rule == "flow.untrusted_to_external"
	contains(d.deny[0].message, "fetch_url at step 4")
}

test_recipient_list_is_checked if {
	d := proctor.decision with input as email(["bob@corp.example", "eve@evil.example"], tainted) with data.proctor_settings as cfg
	not d.allow
}

test_internal_email_after_untrusted_read_is_allowed if {
	d := proctor.decision with input as email("bob@corp.example", tainted) with data.proctor_settings as cfg
	d.allow
}

test_external_email_without_untrusted_read_is_allowed if {
	d := proctor.decision with input as email("eve@evil.example", {}) with data.proctor_settings as cfg
	d.allow
}

test_trusted_tool_result_does_not_label if {
	inp := json.patch(read_web, [{"op": "replace", "path": "/new/0/tool_name", "value": "read_file"}])
	d := proctor.decision with input as inp with data.proctor_settings as cfg
	not d.labels.untrusted_source
}

test_ask_mode_asks_instead_of_denying if {
	d := proctor.decision with input as email("eve@evil.example", tainted) with data.proctor_settings as object.union(cfg, {"flow_action": "ask"})
	d.allow
	d.ask[0].rule == "flow.untrusted_to_external"
}
