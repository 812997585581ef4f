package proctor_test.permissions

import rego.v1

cfg := {"permissions": {
	"default": {"deny": ["delete_*"]},
	"agents": {
		"researcher": {"allow": ["search", "read_*", "send_email"]},
		"mailer": {"arguments": {"send_email": {"to": {"domains": ["corp.example"]}}}},
	},
	"keys": {"k-intern": {"deny": ["send_*"]}},
	"arguments": {
		"transfer": {"amount": {"lte": 500}, "currency": {"one_of": ["EUR", "USD"]}},
		"open_url": {"url": {"pattern": "^https://", "not_pattern": "(?i)[.]onion"}},
	},
}}

act(tool, args, agent, key) := {
	"stage": "action",
	"session": {"labels": {}, "counters": {}},
	"new": [],
	"action": {"kind": "tool_call", "tool_name": tool, "arguments": args},
	"call": {"client": {"agent": agent, "key_id": key}},
}

decide(inp) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as cfg
}

rules(d) := {f.rule | some f in d.deny}

test_blocks_tool_outside_the_agents_allow_list if {
	d := decide(act("run_shell", {}, "researcher", null))
	rules(d) == {"permissions.tool_not_allowed"}
	contains(d.deny[0].message, `the agent "researcher" may only use search, read_*, send_email`)
}

test_blocks_tool_on_the_default_deny_list if {
	d := decide(act("delete_file", {"path": "x"}, null, null))
	rules(d) == {"permissions.tool_not_allowed"}
}

test_blocks_default_deny_list_for_a_named_agent_too if {
	d := decide(act("delete_file", {"path": "x"}, "mailer", null))
	rules(d) == {"permissions.tool_not_allowed"}
}

test_blocks_tool_on_an_api_keys_deny_list if {
	d := decide(act("send_email", {"to": "a@corp.example"}, "researcher", "k-intern"))
	rules(d) == {"permissions.tool_not_allowed"}
}

test_blocks_argument_above_its_limit if {
	d := decide(act("transfer", {"amount": 900, "currency": "EUR"}, null, null))
	rules(d) == {"permissions.argument"}
	contains(d.deny[0].message, "amount is 900, but it must be <= 500")
}

test_blocks_argument_outside_its_list if {
	d := decide(act("transfer", {"amount": "20", "currency": "BTC"}, null, null))
	rules(d) == {"permissions.argument"}
}

test_blocks_argument_that_breaks_a_pattern if {
	d := decide(act("open_url", {"url": "https://abc.onion/x"}, null, null))
	rules(d) == {"permissions.argument"}
}

test_blocks_recipient_outside_the_agents_domains if {
	d := decide(act("send_email", {"to": ["a@corp.example", "b@gmail.com"]}, "mailer", null))
	rules(d) == {"permissions.argument"}
}

test_allows_tool_on_the_agents_allow_list if {
	d := decide(act("read_file", {"path": "x"}, "researcher", null))
	d.allow
}

test_allows_any_tool_to_an_agent_without_an_allow_list if {
	d := decide(act("run_shell", {"command": "ls"}, "mailer", null))
	d.allow
}

test_allows_arguments_within_their_limits if {
	d := decide(act("transfer", {"amount": "120.50", "currency": "usd"}, null, null))
	d.allow
}

test_allows_recipients_inside_the_agents_domains if {
	d := decide(act("send_email", {"to": ["a@corp.example", "b@eu.corp.example"]}, "mailer", null))
	d.allow
}

test_allows_url_that_follows_the_pattern if {
	d := decide(act("open_url", {"url": "https://docs.example/a"}, null, null))
	d.allow
}

test_allows_everything_without_permissions if {
	d := data.proctor.decision with input as act("delete_file", {"path": "x"}, "researcher", null) with data.proctor_settings as {}
	d.allow
}

test_allows_other_agents_their_tools if {
	d := decide(act("run_shell", {"command": "ls"}, "builder", null))
	d.allow
}

test_allows_an_api_key_the_tools_it_is_not_denied if {
	d := decide(act("read_file", {"path": "x"}, null, "k-intern"))
	d.allow
}
