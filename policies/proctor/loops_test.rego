package proctor_test.loops

import rego.v1

call_key(tool, args) := data.proctor.call_key(tool, args)

act(tool, args, recent) := {
	"stage": "action",
	"session": {"labels": {"recent_calls": recent}, "counters": {}},
	"new": [],
	"action": {"kind": "tool_call", "tool_name": tool, "arguments": args},
}

decide(inp) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as {}
}

a := call_key("search", {"q": "weather"})

b := call_key("open", {"id": 1})

c := call_key("open", {"id": 2})

rules(d) := {f.rule | some f in d.deny}

repeat(s, n) := concat("", [s | some _ in numbers.range(1, n)])

test_blocks_the_fifth_identical_call if {
	d := decide(act("search", {"q": "weather"}, [a, b, a, a, c, a]))
	rules(d) == {"loop.repeat"}
	contains(d.deny[0].message, "5 times among its last 7 tool calls")
}

test_blocks_two_calls_taking_turns if {
	d := decide(act("open", {"id": 1}, [c, a, b, a, b, a]))
	rules(d) == {"loop.alternation"}
}

test_blocks_with_a_lower_repeat_limit if {
	d := data.proctor.decision with input as act("search", {"q": "weather"}, [a, a]) with data.proctor_settings as {"loops": {"max_repeats": 3}}
	rules(d) == {"loop.repeat"}
}

test_labels_each_call_within_the_window if {
	d := decide(act("search", {"q": "x"}, [a, b, c, a, b, c, a, b, c, a]))
	count(d.labels.recent_calls) == 10
	d.labels.recent_calls[9] == call_key("search", {"q": "x"})
	d.labels.recent_calls[0] == b
}

test_labels_cleared_by_a_new_user_turn if {
	inp := {"stage": "request", "session": {"labels": {"recent_calls": [a, a]}, "counters": {}}, "new": [{"seq": 9, "kind": "user", "text": "now something else"}]}
	d := decide(inp)
	d.labels.recent_calls == []
}

test_allows_the_same_tool_with_other_arguments if {
	d := decide(act("search", {"q": "news"}, [a, a, a, a, a]))
	not "loop.repeat" in rules(d)
}

test_allows_repeats_below_the_limit if {
	d := decide(act("search", {"q": "weather"}, [a, b, a, c, a]))
	d.allow
}

test_allows_turns_that_make_progress if {
	d := decide(act("open", {"id": 1}, [c, a, b, a, c, a]))
	d.allow
}

test_allows_long_arguments_that_differ_only_in_the_middle if {
	long1 := {"content": concat("", [repeat("a", 300), "1", repeat("z", 100)])}
	long2 := {"content": concat("", [repeat("a", 300), "2", repeat("z", 100)])}
	k1 := call_key("write", long1)
	k2 := call_key("write", long2)
	# long arguments keep their start, length and end: a change in the middle is not seen
	k1 == k2
	d := decide(act("write", {"content": "short"}, [k1, k1, k1, k1]))
	d.allow
}
