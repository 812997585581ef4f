# Session-wide limits read from counters Proctor keeps (no trajectory scan).
#
# Settings (data.proctor_settings):
#   max_tool_calls        tool calls per session (0: no limit)
package proctor

import rego.v1

deny contains {"rule": "session.max_tool_calls", "message": msg} if {
	input.stage == "action"
	input.action.kind == "tool_call"
	limit := setting("max_tool_calls", 0)
	limit > 0
	used := object.get(input.session.counters, "tool_calls_total", 0)
	used >= limit
	msg := sprintf("blocked %s: the session already made %d tool calls, the limit is %d", [input.action.tool_name, used, limit])
}
