package proctor_test

import rego.v1

import data.proctor

call_with(used) := {
	"stage": "action",
	"session": {"labels": {}, "counters": {"tool_calls_total": used}},
	"new": [],
	"action": {"kind": "tool_call", "tool_name": "search", "arguments": {}},
}

test_tool_call_limit_denies_at_the_limit if {
	d := proctor.decision with input as call_with(3) with data.proctor_settings as {"max_tool_calls": 3}
	d.deny[0].rule == "session.max_tool_calls"
}

test_tool_call_limit_allows_below_the_limit if {
	d := proctor.decision with input as call_with(2) with data.proctor_settings as {"max_tool_calls": 3}
	d.allow
}

test_no_limit_by_default if {
	d := proctor.decision with input as call_with(1000) with data.proctor_settings as {}
	d.allow
}
