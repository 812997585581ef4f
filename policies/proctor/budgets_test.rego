package proctor_test.budgets

import rego.v1

cfg := {
	"sinks": {"send_money": {"destination": ["iban"], "amount": "amount"}, "send_email": {"destination": ["to"]}},
	"budgets": {
		"per_tool": {"search": 3},
		"max_side_effects": 4,
		"max_amount": 1000,
		"max_tokens": 50000,
		"max_cost_usd": 2,
		"prices": {"gpt-x": {"input": 10, "output": 30}, "*": {"input": 1, "output": 1}},
		"max_seconds": 3600,
		"max_calls_per_minute": 3,
		"max_depth": 2,
		"max_children": 3,
		"spawn_tools": ["spawn_agent"],
		"tree_max_tool_calls": 200,
		"tree_max_tokens": 400000,
		"tree_max_sessions": 10,
	},
}

session(counters, labels) := {"labels": labels, "counters": counters, "depth": 0, "started": (time.now_ns() / 1000000000) - 10, "events": 20}

act(tool, args, sess) := {"stage": "action", "session": sess, "new": [], "trajectory": [], "action": {"kind": "tool_call", "tool_name": tool, "arguments": args}, "call": {"model": "gpt-x"}}

request(sess) := {"stage": "request", "session": sess, "new": [], "trajectory": [], "call": {"model": "gpt-x"}}

decide(inp) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as cfg
}

decide_with(inp, c) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as c
}

rules(d) := {f.rule | some f in d.deny}

test_blocks_tool_calls_at_the_session_limit if {
	d := decide_with(act("search", {}, session({"tool_calls_total": 3}, {})), {"budgets": {"max_tool_calls": 3}})
	rules(d) == {"budget.tool_calls"}
	d.deny[0].message == "blocked search: the session already made 3 tool calls, the limit is 3"
}

test_blocks_tool_calls_at_the_legacy_top_level_limit if {
	d := decide_with(act("search", {}, session({"tool_calls_total": 3}, {})), {"max_tool_calls": 3})
	rules(d) == {"budget.tool_calls"}
}

test_blocks_calls_of_one_tool_at_its_limit if {
	d := decide(act("search", {}, session({"tool_calls": {"search": 3}}, {})))
	rules(d) == {"budget.tool_calls_per_tool"}
}

test_blocks_parallel_calls_counted_from_this_reply if {
	sess := session({"tool_calls": {"search": 2}}, {})
	earlier := {"seq": 21, "kind": "tool_call", "tool_name": "search"}
	inp := object.union(act("search", {}, sess), {"trajectory": [earlier]})
	rules(decide(inp)) == {"budget.tool_calls_per_tool"}
}

test_blocks_side_effects_at_their_limit if {
	d := decide(act("send_email", {"to": "a@b.example"}, session({"tool_calls": {"send_money": 1, "send_email": 3}}, {})))
	rules(d) == {"budget.side_effects"}
}

test_blocks_money_beyond_the_session_amount if {
	d := decide(act("send_money", {"iban": "X", "amount": 300}, session({}, {"amount_moved": 800})))
	rules(d) == {"budget.amount"}
	contains(d.deny[0].message, "the session already moved 800")
}

test_blocks_calls_beyond_the_token_budget if {
	rules(decide(request(session({"input_tokens": 40000, "output_tokens": 10000}, {})))) == {"budget.tokens"}
}

test_blocks_calls_beyond_the_cost_budget if {
	# 100k input tokens at $10 and 40k output at $30 per million: $2.20
	rules(decide(request(session({"input_tokens": 100000, "output_tokens": 40000}, {})))) == {"budget.cost", "budget.tokens"}
}

test_blocks_calls_after_the_wall_time if {
	sess := object.union(session({}, {}), {"started": (time.now_ns() / 1000000000) - 7200})
	rules(decide(request(sess))) == {"budget.wall_time"}
}

test_blocks_a_sub_agent_too_deep if {
	sess := object.union(session({}, {}), {"depth": 3})
	rules(decide(request(sess))) == {"budget.depth"}
}

test_blocks_spawning_below_the_depth_limit if {
	sess := object.union(session({}, {}), {"depth": 2})
	rules(decide(act("spawn_agent", {"task": "x"}, sess))) == {"budget.depth"}
}

test_blocks_spawning_beyond_the_fan_out if {
	rules(decide(act("spawn_agent", {"task": "x"}, session({"tool_calls": {"spawn_agent": 3}}, {})))) == {"budget.fan_out"}
}

test_blocks_tool_calls_beyond_the_tree_budget if {
	sess := object.union(session({}, {}), {"tree": {"sessions": 4, "counters": {"tool_calls_total": 200}}})
	rules(decide(act("search", {}, sess))) == {"budget.tree_tool_calls"}
}

test_blocks_spawning_beyond_the_tree_size if {
	sess := object.union(session({}, {}), {"tree": {"sessions": 10, "counters": {}}})
	rules(decide(act("spawn_agent", {"task": "x"}, sess))) == {"budget.tree_sessions"}
}

test_labels_money_moved_when_allowed if {
	d := decide(act("send_money", {"iban": "X", "amount": "150.5"}, session({}, {"amount_moved": 100})))
	d.allow
	d.labels.amount_moved == 250.5
}

test_labels_no_money_for_a_denied_call if {
	d := decide(act("send_money", {"iban": "X", "amount": 300}, session({}, {"amount_moved": 800})))
	not d.labels.amount_moved
}

test_allows_below_every_limit if {
	d := decide(act("search", {}, session({"tool_calls_total": 10, "tool_calls": {"search": 2}, "input_tokens": 100, "output_tokens": 100}, {})))
	d.allow
}

test_allows_money_within_the_amount if {
	d := decide(act("send_money", {"iban": "X", "amount": 200}, session({}, {"amount_moved": 800})))
	d.allow
}

test_allows_request_within_tokens_cost_and_time if {
	d := decide(request(session({"input_tokens": 1000, "output_tokens": 1000}, {})))
	d.allow
}

test_allows_cheaper_model_prices if {
	inp := object.union(request(session({"input_tokens": 100000, "output_tokens": 40000}, {})), {"call": {"model": "small"}})
	rules(decide(inp)) == {"budget.tokens"}
}

test_allows_sub_agent_within_depth_and_fan_out if {
	sess := object.union(session({"tool_calls": {"spawn_agent": 2}}, {}), {"depth": 1})
	decide(act("spawn_agent", {"task": "x"}, sess)).allow
}

test_allows_without_tree_counters if {
	decide(act("search", {}, session({}, {}))).allow
}

test_allows_everything_without_limits if {
	d := decide_with(act("search", {}, session({"tool_calls_total": 100000, "input_tokens": 99999999}, {})), {})
	d.allow
}

test_allows_tool_calls_below_the_session_limit if {
	decide_with(act("search", {}, session({"tool_calls_total": 2}, {})), {"budgets": {"max_tool_calls": 3}}).allow
}

test_allows_other_tools_when_one_is_at_its_limit if {
	decide(act("open", {}, session({"tool_calls": {"search": 3}}, {}))).allow
}

test_allows_reads_when_side_effects_are_at_their_limit if {
	decide(act("search", {}, session({"tool_calls": {"send_money": 1, "send_email": 3}}, {}))).allow
}

test_allows_side_effects_below_their_limit if {
	decide(act("send_email", {"to": "a@b.example"}, session({"tool_calls": {"send_email": 3}}, {}))).allow
}

test_allows_tool_calls_after_the_token_budget if {
	# the token budget refuses new model calls; the reply already paid for is judged on its own
	decide(act("search", {}, session({"input_tokens": 40000, "output_tokens": 10000}, {}))).allow
}

test_allows_a_root_session_at_any_depth_limit if {
	decide(request(session({}, {}))).allow
}

test_allows_tool_calls_within_the_tree_budget if {
	sess := object.union(session({}, {}), {"tree": {"sessions": 4, "counters": {"tool_calls_total": 150, "input_tokens": 1000}}})
	decide(act("search", {}, sess)).allow
	decide(act("spawn_agent", {"task": "x"}, sess)).allow
}

test_blocks_calls_beyond_the_rate if {
	now := time.now_ns() / 1000000000
	d := decide(request(session({}, {"recent_call_times": [now - 50, now - 20, now - 5]})))
	rules(d) == {"budget.rate"}
	count(d.labels.recent_call_times) == 3
}

test_allows_calls_once_the_minute_has_passed if {
	now := time.now_ns() / 1000000000
	d := decide(request(session({}, {"recent_call_times": [now - 300, now - 200, now - 5]})))
	d.allow
	count(d.labels.recent_call_times) == 2
}

test_blocks_calls_of_one_tool_when_it_is_the_only_budget if {
	d := decide_with(act("search", {}, session({"tool_calls": {"search": 3}}, {})), {"budgets": {"per_tool": {"search": 3}}})
	rules(d) == {"budget.tool_calls_per_tool"}
}

test_allows_other_tools_when_one_tool_is_the_only_budget if {
	d := decide_with(act("read_file", {}, session({"tool_calls": {"search": 3, "read_file": 9}}, {})), {"budgets": {"per_tool": {"search": 3}}})
	count(d.deny) == 0
}
