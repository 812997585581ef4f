# Tool classification, shared by the modules: which tools return untrusted
# content, which are sinks (tools with side effects) and what their arguments
# mean. Only data names tools; no rule of the library does.
#
# Settings (data.proctor_settings):
#   untrusted_tools   ["fetch_url", ...] or {tool: {"what": "a web page",
#                     "when": {argument: regex}}}: results are untrusted content
#                     (when "when" is given, only for calls whose arguments match)
#   sinks             {tool: {"destination": [arg], "payload": [arg], "when": [arg],
#                     "addressee": [arg], "external": bool, "amount": arg}}
#                     destination: where data or money goes (recipients, URLs, accounts)
#                     payload:     what is sent (bodies, contents, subjects)
#                     when:        dates that decide what happens (bookings, events)
#                     addressee:   names of whom the call is for; when the user named
#                                  them, an address looked up for them is accepted
#                     external:    false for sinks that stay inside the organisation
#                     amount:      the argument carrying money moved (budgets)
#   internal_domains  destinations in these domains are not external
package proctor

import rego.v1

# The classification of one untrusted tool: {"what", "when"}, from either form
# of the setting (a list of names, or an object of descriptions).
untrusted_tools_setting := setting("untrusted_tools", [])

untrusted_spec(name) := {"what": object.get(s, "what", name), "when": object.get(s, "when", {})} if {
	s := untrusted_tools_setting[name]
	is_object(untrusted_tools_setting)
} else := {"what": name, "when": {}} if {
	is_array(untrusted_tools_setting)
	name in untrusted_tools_setting
}

sinks := setting("sinks", {})

internal_domains := {lower(d) | some d in setting("internal_domains", [])}

# The pending tool call, at the action stage.
tool_call := input.action if {
	input.stage == "action"
	input.action.kind == "tool_call"
}

# A function tool call whose arguments are not a JSON object (cut short, say, or
# a JSON string holding one): no rule can read them, while a lenient agent may
# still run what it can salvage. Fail closed. A custom tool's input is free text
# by design (Proctor labels its calls free_text); empty arguments are no arguments.
deny contains {"rule": "tools.unreadable_arguments", "message": msg} if {
	is_string(tool_call.arguments)
	not tool_call.labels.free_text
	trim_space(tool_call.arguments) != ""
	msg := sprintf("blocked %s: its arguments are not a JSON object (cut short?), so no policy could read them; call the tool again", [tool_call.tool_name])
}

# The pending final answer's text, at the action stage.
final_answer := input.action.text if {
	input.stage == "action"
	input.action.kind == "assistant"
	is_string(input.action.text)
}

# (The call first: at the request stage the sinks setting is not read at all.)
sink_spec := spec if {
	name := tool_call.tool_name
	spec := sinks[name]
}

external_sink if object.get(sink_spec, "external", true) == true

# The string values of some arguments of a call, nested lists and objects flattened.
arg_strings(args, names) := {s |
	is_object(args)
	some name in names
	some s in strings_in(object.get(args, name, null))
}

# (One definition with else branches: the cases exclude each other, and the
# first that holds ends the evaluation instead of all six being tried.)
strings_in(v) := {v} if {
	is_string(v)
} else := {format_int(v, 10)} if {
	is_number(v)
	v == floor(v)
} else := {sprintf("%v", [v])} if {
	is_number(v)
} else := {s | some x in v; is_string(x); s := x} | {s | some x in v; is_array(x); some s in x; is_string(s)} if {
	is_array(v)
} else := {s | some x in v; is_string(x); s := x} if {
	is_object(v)
} else := set()

# All string values of a call's arguments.
all_arg_strings(args) := {s | is_object(args); some v in args; some s in strings_in(v)}

# Does an untrusted source's "when" condition hold for these arguments?
when_matches(when, args) if {
	every arg, pattern in when {
		is_object(args)
		some s in strings_in(object.get(args, arg, null))
		regex.match(pattern, s)
	}
}

# The tool call in this call's window that a result answers (bounded: the window
# holds the last policy_window events plus this call's).
call_for_result(ev) := c if {
	some c in input.trajectory
	c.kind == "tool_call"
	c.tool_call_id == ev.tool_call_id
	ev.tool_call_id != null
}

# A tool result from an untrusted source; its source description.
untrusted_result(ev) := spec if {
	ev.kind == "tool_result"
	spec := untrusted_spec(ev.tool_name)
	conditions_hold(spec.when, ev)
}

# (One definition with else branches: most sources have no conditions, and
# the first test settles them.)
conditions_hold(when, ev) := true if {
	count(when) == 0
} else := true if {
	when_matches(when, call_for_result(ev).arguments)
} else := true if {
	# A conditional source whose call fell out of the window: untrusted (fail closed).
	not call_for_result(ev)
}

# What a new event's text is: "instruction" (the user's and system's own
# turns), "untrusted" (results of untrusted tools), "echo" (a sink's result,
# which only repeats what the agent sent), "trusted" (any other tool result).
event_class(ev) := "instruction" if {
	instruction_kinds[ev.kind]
} else := "untrusted" if {
	untrusted_result(ev)
} else := "echo" if {
	ev.kind == "tool_result"
	sinks[ev.tool_name]
} else := "trusted" if {
	ev.kind == "tool_result"
} else := "other"

instruction_kinds := {"user", "system"}

# "a web page the agent read with fetch_url at step 4"
source_phrase(src) := sprintf("%s the agent read with %s at step %v", [src.what, src.tool, src.seq]) if src.what != src.tool

source_phrase(src) := sprintf("the result of %s at step %v", [src.tool, src.seq]) if src.what == src.tool
