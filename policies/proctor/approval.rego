# Human approval: irreversible actions listed in data wait for a person
# (decision "ask"; Proctor holds the call until someone approves or denies it
# through POST /api/approvals/{id}, and denies it when nobody answers in time).
#   approval.required  the tool is listed, and its "when" conditions hold
#
# Settings (data.proctor_settings.approval):
#   {tool: {"why": "moving money cannot be undone",
#           "when": {argument: condition}}}   (constraints.rego; no "when": always)
package proctor

import rego.v1

approval_rules := setting("approval", {})

ask contains {"rule": "approval.required", "message": msg} if {
	name := tool_call.tool_name # (first: the request stage stops here)
	spec := approval_rules[name]
	when := object.get(spec, "when", {})
	every arg, cond in when {
		condition_holds(tool_call.arguments[arg], cond)
	}
	msg := sprintf("%s needs a person's approval: %s%s", [tool_call.tool_name, object.get(spec, "why", "it is listed as irreversible"), when_note(when)])
}

when_note(when) := "" if count(when) == 0

when_note(when) := sprintf(" (%s)", [concat("; ", [sprintf("%s %s", [arg, describe_condition(cond)]) | some arg, cond in when])]) if count(when) > 0
