# Tool permissions: which tools an agent or API key may call, and what their
# arguments may be.
#   permissions.tool_not_allowed  the tool is on a deny list, or not on the allow
#                                 list that applies to this caller
#   permissions.argument          an argument breaks a constraint (constraints.rego)
#
# Who is calling: input.call.client.agent (the X-Proctor-Agent header) and
# input.call.client.key_id (a fingerprint of the API key, never the key). The
# allow lists of every entry that matches the caller must all allow the tool
# (the "default" entry applies when no agent or key entry matches); deny lists
# add up. Names are globs ("read_*", "*").
#
# Settings (data.proctor_settings.permissions):
#   default  {"allow": [glob], "deny": [glob], "arguments": {...}}
#   agents   {agent: {"allow", "deny", "arguments"}}
#   keys     {key_id: {"allow", "deny", "arguments"}}
#   arguments  {tool: {argument: condition}} for every caller
package proctor

import rego.v1

permissions_cfg := object.union(object.get(defaults, "permissions", {}), object.get(settings, "permissions", {})) # module_settings("permissions"), inlined

permission_setting(name, fallback) := object.get(permissions_cfg, name, fallback)

# Nothing to check unless some permission is configured.
permissions_on if count(permissions_cfg) > 0

caller_entries := entries if {
	entries := [e |
		some e in [
			object.get(permission_setting("agents", {}), object.get(input.call.client, "agent", ""), null),
			object.get(permission_setting("keys", {}), object.get(input.call.client, "key_id", ""), null),
		]
		is_object(e)
	]
	count(entries) > 0
} else := [e | e := permission_setting("default", {}); is_object(e)]

caller_name := sprintf("the agent %q", [input.call.client.agent]) if is_string(input.call.client.agent)

caller_name := "this API key" if {
	not is_string(input.call.client.agent)
	is_string(input.call.client.key_id)
}

caller_name := "this caller" if {
	not is_string(input.call.client.agent)
	not is_string(input.call.client.key_id)
}

glob_any(patterns, name) if {
	some p in patterns
	glob.match(p, [], name)
}

deny contains {"rule": "permissions.tool_not_allowed", "message": msg} if {
	tool_call
	permissions_on
	some e in array.concat(caller_entries, [permission_setting("default", {})])
	glob_any(object.get(e, "deny", []), tool_call.tool_name)
	msg := sprintf("blocked %s: %s may not use this tool (it is on a deny list)", [tool_call.tool_name, caller_name])
}

deny contains {"rule": "permissions.tool_not_allowed", "message": msg} if {
	tool_call
	permissions_on
	some e in caller_entries
	allow := object.get(e, "allow", ["*"])
	not glob_any(allow, tool_call.tool_name)
	msg := sprintf("blocked %s: %s may only use %s", [tool_call.tool_name, caller_name, concat(", ", allow)])
}

# {argument: condition} that apply to this tool for this caller.
argument_rules contains [arg, cond] if {
	some arg, cond in object.get(permission_setting("arguments", {}), tool_call.tool_name, {})
}

argument_rules contains [arg, cond] if {
	some e in caller_entries
	some arg, cond in object.get(object.get(e, "arguments", {}), tool_call.tool_name, {})
}

deny contains {"rule": "permissions.argument", "message": msg} if {
	tool_call
	permissions_on
	some r in argument_rules
	value := tool_call.arguments[r[0]]
	not condition_holds(value, r[1])
	msg := sprintf("blocked %s: %s is %v, but it must be %s", [tool_call.tool_name, r[0], value, describe_condition(r[1])])
}
