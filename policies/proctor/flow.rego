# Information flow: once a session has read content from an untrusted source
# (web pages, inboxes, files from others), a tool call that sends data to an
# external destination is denied (or needs approval, see flow_action).
#
# Settings (data.proctor_settings):
#   untrusted_tools       tools whose results are untrusted content
#   sinks                 {tool: {"destination": [argument names]}} side-effecting tools
#   internal_domains      destinations in these domains are not external
#   flow_action           "deny" (default) or "ask"
package proctor

import rego.v1

untrusted_tools := {t | some t in setting("untrusted_tools", [])}

sinks := setting("sinks", {})

internal_domains := {d | some d in setting("internal_domains", [])}

# Incremental: the first untrusted read is remembered as a session label, so later
# calls need not scan the trajectory for it.
untrusted_reads := [ev |
	some ev in input.new
	ev.kind == "tool_result"
	ev.tool_name in untrusted_tools
]

labels["untrusted_source"] := {"tool": untrusted_reads[0].tool_name, "seq": untrusted_reads[0].seq} if {
	not input.session.labels.untrusted_source
	count(untrusted_reads) > 0
}

# The pending action's destinations: values of its destination arguments.
destinations contains value if {
	input.stage == "action"
	input.action.kind == "tool_call"
	some name in object.get(sinks, input.action.tool_name, {}).destination
	value := input.action.arguments[name]
	is_string(value)
}

destinations contains value if {
	input.stage == "action"
	input.action.kind == "tool_call"
	some name in object.get(sinks, input.action.tool_name, {}).destination
	values := input.action.arguments[name]
	is_array(values)
	some value in values
	is_string(value)
}

external(destination) if {
	not internal(destination)
}

internal(destination) if {
	some domain in internal_domains
	endswith(lower(destination), concat("", ["@", domain]))
}

internal(destination) if {
	some domain in internal_domains
	lower(destination) == domain
}

flow_finding := {"rule": "flow.untrusted_to_external", "message": msg} if {
	source := object.get(input.session.labels, "untrusted_source", null)
	source != null
	some destination in destinations
	external(destination)
	msg := sprintf(
		"blocked %s to %s: the session read untrusted content from %s at step %d, and sending data outside after that needs the user's own instruction",
		[input.action.tool_name, destination, source.tool, source.seq],
	)
}

deny contains flow_finding if setting("flow_action", "deny") == "deny"

ask contains flow_finding if setting("flow_action", "deny") == "ask"
