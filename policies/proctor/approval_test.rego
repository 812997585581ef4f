package proctor_test.approval

import rego.v1

cfg := {"approval": {
	"delete_repository": {"why": "a deleted repository cannot be restored"},
	"send_money": {"why": "money sent cannot be called back", "when": {"amount": {"gt": 100}}},
}}

act(tool, args) := {
	"stage": "action",
	"session": {"labels": {}, "counters": {}},
	"new": [],
	"action": {"kind": "tool_call", "tool_name": tool, "arguments": args},
}

decide(inp) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as cfg
}

test_asks_for_an_irreversible_tool if {
	d := decide(act("delete_repository", {"name": "app"}))
	d.allow
	d.ask == [{"rule": "approval.required", "message": "delete_repository needs a person's approval: a deleted repository cannot be restored"}]
}

test_asks_when_the_condition_holds if {
	d := decide(act("send_money", {"amount": 250, "recipient": "x"}))
	d.ask[0].rule == "approval.required"
	contains(d.ask[0].message, "(amount > 100)")
}

test_allows_below_the_condition if {
	d := decide(act("send_money", {"amount": 20, "recipient": "x"}))
	count(d.ask) == 0
}

test_allows_tools_not_listed if {
	d := decide(act("read_file", {"path": "x"}))
	count(d.ask) == 0
}
