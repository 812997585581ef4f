# Loops: an agent that repeats itself without making progress.
#   loop.repeat       the same tool call, same arguments, for the max_repeats-th
#                     time among the last `window` tool calls
#   loop.alternation  two calls taking turns (A B A B ...) for alternation_cycles
#                     rounds in a row
#
# Incremental: the last `window` tool calls are kept in the label recent_calls
# as short keys (the tool's name and its arguments, keys sorted; long
# arguments keep their start, end and length); a new user turn clears it, since
# the user asked for something new.
#
# Settings (data.proctor_settings.loops): max_repeats (0: off), window,
# alternation_cycles (0: off).
package proctor

import rego.v1

loops_cfg := object.union(object.get(defaults, "loops", {}), object.get(settings, "loops", {})) # module_settings("loops"), inlined

recent_calls := label_list("recent_calls")

# (sprintf %v, not json.marshal: OPA's JSON escapes <, > and & and regorus's
# does not, and the label must be the same on both engines.)
call_key(name, args) := short_call_key(name, sprintf("%v", [args]))

short_call_key(name, j) := sprintf("%s %s", [name, j]) if {
	count(j) <= 240
} else := sprintf("%s %s...%d...%s", [name, substring(j, 0, 160), count(j), substring(j, count(j) - 60, -1)])

pending_key := call_key(tool_call.tool_name, tool_call.arguments)

labels["recent_calls"] := array.slice(calls, max([0, count(calls) - window]), count(calls)) if {
	tool_call
	window := object.get(loops_cfg, "window", 10)
	calls := array.concat(recent_calls, [pending_key])
}

labels["recent_calls"] := [] if {
	input.stage == "request"
	count(recent_calls) > 0
	some ev in input.new
	ev.kind == "user"
}

deny contains {"rule": "loop.repeat", "message": msg} if {
	tool_call
	n := object.get(loops_cfg, "max_repeats", 5)
	n > 0
	before := count([k | some k in recent_calls; k == pending_key])
	before + 1 >= n
	msg := sprintf("blocked %s: the agent made this exact call (same arguments) %v times among its last %v tool calls without getting anywhere; try something different or ask the user", [tool_call.tool_name, before + 1, count(recent_calls) + 1])
}

deny contains {"rule": "loop.alternation", "message": msg} if {
	tool_call
	cycles := object.get(loops_cfg, "alternation_cycles", 3)
	cycles > 0
	tail_len := (2 * cycles) - 1
	count(recent_calls) >= tail_len
	tail := array.slice(recent_calls, count(recent_calls) - tail_len, count(recent_calls))
	other := tail[count(tail) - 1]
	other != pending_key
	every i, k in tail {
		alternates(i, tail_len, k, other)
	}
	msg := sprintf("blocked %s: the agent has been alternating between the same two calls for %v rounds without progress; try something different or ask the user", [tool_call.tool_name, cycles])
}

# Counting back from the pending call: odd distances are the other call, even ones this one.
alternates(i, len, k, other) if {
	(len - i) % 2 == 1
	k == other
}

alternates(i, len, k, _) if {
	(len - i) % 2 == 0
	k == pending_key
}
