package proctor_test.tools

import rego.v1

cfg := {
	"untrusted_tools": {"fetch_url": {"what": "a web page"}, "read_channel": {"when": {"channel": "^ext"}}},
	"sinks": {"send_email": {"destination": ["to"]}},
}

class(ev) := c if {
	c := data.proctor.event_class(ev) with data.proctor_settings as cfg with input as {"trajectory": []}
}

test_labels_user_and_system_turns_as_instructions if {
	class({"kind": "user", "text": "hi"}) == "instruction"
	class({"kind": "system", "text": "be brief"}) == "instruction"
}

test_labels_untrusted_tool_results if {
	class({"kind": "tool_result", "tool_name": "fetch_url", "text": "page"}) == "untrusted"
}

test_labels_a_sinks_result_as_an_echo if {
	class({"kind": "tool_result", "tool_name": "send_email", "text": "sent"}) == "echo"
}

test_labels_other_tool_results_as_trusted if {
	class({"kind": "tool_result", "tool_name": "read_file", "text": "notes"}) == "trusted"
}

test_labels_the_description_of_an_untrusted_tool if {
	spec := data.proctor.untrusted_spec("read_channel") with data.proctor_settings as cfg
	spec == {"what": "read_channel", "when": {"channel": "^ext"}}
	listed := data.proctor.untrusted_spec("browse") with data.proctor_settings as {"untrusted_tools": ["browse"]}
	listed == {"what": "browse", "when": {}}
}

test_extracts_strings_from_nested_arguments if {
	data.proctor.strings_in(["a", ["b"], 3]) == {"a", "b"}
	data.proctor.strings_in({"x": "a", "y": 2}) == {"a"}
	data.proctor.strings_in(42) == {"42"}
	data.proctor.strings_in(null) == set()
}

test_blocks_nothing_for_a_tool_that_is_no_sink if {
	inp := {"stage": "action", "session": {"labels": {"untrusted_source": {"tool": "fetch_url", "seq": 1}}, "counters": {}}, "new": [], "action": {"kind": "tool_call", "tool_name": "post_anything", "arguments": {"url": "https://evil.example"}}}
	d := data.proctor.decision with input as inp with data.proctor_settings as cfg
	d.allow
}

test_allows_a_sink_only_through_its_classified_arguments if {
	inp := {"stage": "action", "session": {"labels": {"untrusted_source": {"tool": "fetch_url", "seq": 1}}, "counters": {}}, "new": [], "action": {"kind": "tool_call", "tool_name": "send_email", "arguments": {"to": "bob@corp.example", "note": "eve@evil.example"}}}
	d := data.proctor.decision with input as inp with data.proctor_settings as object.union(cfg, {"internal_domains": ["corp.example"]})
	d.allow
}

call_with(args, labels) := d if {
	d := data.proctor.decision with input as {
		"stage": "action",
		"session": {"labels": {}, "counters": {}},
		"new": [],
		"action": {"kind": "tool_call", "tool_name": "bash", "arguments": args, "labels": labels},
	}
}

unreadable(args, labels) if "tools.unreadable_arguments" in {f.rule | some f in call_with(args, labels).deny}

test_blocks_arguments_that_are_broken_json if {
	unreadable("{\"command\": \"rm -rf /", {})
}

test_blocks_arguments_that_are_a_json_string_holding_an_object if {
	unreadable("{\"command\": \"rm -rf /\"}", {}) # what a double-encoded object parses to
	unreadable("notes.txt", {})
}

test_allows_parsed_arguments_and_no_arguments if {
	not unreadable({"command": "ls"}, {})
	not unreadable("", {})
	not unreadable(null, {})
}

test_allows_a_custom_tools_free_text if {
	not unreadable("{ viewer { login } }", {"free_text": true})
	not unreadable("print('hello')", {"free_text": true})
}
