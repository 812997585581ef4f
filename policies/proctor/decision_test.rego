package proctor_test.decision

import rego.v1

quiet := {"stage": "action", "session": {"labels": {}, "counters": {}}, "new": [], "action": {"kind": "assistant", "text": "Done."}}

test_allows_with_an_empty_decision_by_default if {
	d := data.proctor.decision with input as quiet with data.proctor_settings as {}
	d == {"allow": true, "deny": [], "warn": [], "ask": [], "terminate": [], "labels": {}, "patch": null}
}

test_allows_without_any_settings if {
	d := data.proctor.decision with input as quiet
	d.allow
}

test_labels_module_settings_merge_key_by_key if {
	merged := data.proctor.module_settings("loops") with data.proctor_settings as {"loops": {"max_repeats": 9}}
	merged.max_repeats == 9
	merged.window == 10
}

test_labels_defaults_apply_when_a_module_is_not_configured if {
	merged := data.proctor.module_settings("loops") with data.proctor_settings as {}
	merged.max_repeats == 5
}

test_blocks_when_any_module_denies if {
	inp := {"stage": "action", "session": {"labels": {}, "counters": {}}, "new": [], "action": {"kind": "tool_call", "tool_name": "bash", "arguments": {"command": "history -c"}}}
	d := data.proctor.decision with input as inp with data.proctor_settings as {"coding": {"shell_tools": {"bash": "command"}}}
	not d.allow
	d.deny[0].rule == "coding.dangerous_command"
}
