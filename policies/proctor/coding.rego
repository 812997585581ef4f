# Coding agents: shell commands and file tools that can do lasting harm.
#   coding.dangerous_command        a command matches a pattern of coding.dangerous_commands
#                                   (curl | sh, unset HISTFILE, history -c, mkfs, ...)
#   coding.credential_access        a command or a file tool touches a credential file
#                                   (~/.ssh/id_rsa, ~/.aws/credentials, .env, ...)
#   coding.delete_outside_workspace rm of a path outside the workspace
#   coding.write_outside_workspace  a file tool or a shell redirection writes outside it
#
# Paths: relative paths are inside the workspace unless ".." climbs out of it;
# ~ and $HOME are outside; absolute paths are inside only under
# coding.workspace, or under coding.scratch_dirs (/tmp, /dev/null, ...). With no
# workspace configured, writes are not judged and rm is denied only for top
# level directories (/, /etc, ~, $HOME, ...) and paths that climb out with "..".
#
# Settings (data.proctor_settings.coding): workspace, shell_tools {tool: argument
# holding the command}, write_tools and read_tools {tool: argument holding the
# path}, dangerous_commands [{"regex", "why"}], credential_paths [regex], scratch_dirs.
# An argument may also be a list of names, the first one the call has counting
# (agents name the same tool's argument differently); a command may be a string
# or, as Codex sends it, an argv list (["bash", "-lc", "..."]), judged joined by spaces;
# an argument named "commands" holds a list of whole commands (the Responses
# API's shell tool), judged joined by " ; ".
package proctor

import rego.v1

coding_cfg := object.union(object.get(defaults, "coding", {}), object.get(settings, "coding", {})) # module_settings("coding"), inlined

coding_setting(name, fallback) := object.get(coding_cfg, name, fallback)

workspace := trim_right(object.get(coding_cfg, "workspace", ""), "/")

# The argument a coding tool keeps its command or path in (looked up by path:
# cheaper than merging the coding settings for every tool call).
coding_arg(kind) := arg if {
	spec := coding_tool_spec(kind)
	is_string(spec)
	arg := spec
} else := arg if {
	spec := coding_tool_spec(kind)
	is_array(spec)
	is_object(tool_call.arguments) # (string arguments: tools.unreadable_arguments judges them)
	present := [a | some a in spec; object.get(tool_call.arguments, a, null) != null]
	arg := present[0]
}

coding_tool_spec(kind) := object.get(settings, ["coding", kind, tool_call.tool_name], object.get(defaults, ["coding", kind, tool_call.tool_name], null))

shell_command := cmd if {
	cmd := tool_call.arguments[coding_arg("shell_tools")]
	is_string(cmd)
} else := concat(" ; ", [c | some c in cmds; is_string(c)]) if {
	# a list of whole commands, as the Responses API's shell tool sends them
	coding_arg("shell_tools") == "commands"
	cmds := tool_call.arguments.commands
	is_array(cmds)
} else := cmd if {
	argv := tool_call.arguments[coding_arg("shell_tools")]
	is_array(argv)
	cmd := argv_command(argv)
} else := tool_call.arguments if {
	# a custom (free-text) tool listed as a shell: its whole input is the command
	tool_call.labels.free_text
	is_string(tool_call.arguments)
	coding_tool_spec("shell_tools") != null
}

# An argv list as the command it runs. A shell's -c script (["bash", "-lc",
# "rm -rf /"], also behind env or sudo and after other options) is judged on
# its own line, then the whole list joined by spaces: a rule matches either.
argv_command(argv) := concat(" ; ", [script, joined]) if {
	joined := concat(" ", [a | some a in argv; is_string(a)])
	flags := [i | some i, a in argv; is_string(a); regex.match(`^-[a-z]*c[a-z]*$`, a)]
	count(flags) > 0
	i := flags[0] # the first -c: one script, however the list goes on
	shells := [j | some j, a in argv; j < i; is_string(a); regex.match(`^(?:[^ ]*/)?(?:ba|z|da|k)?sh$`, a)]
	count(shells) > 0
	script := argv[i + 1]
	is_string(script)
} else := concat(" ", [a | some a in argv; is_string(a)])

file_path(kind) := p if {
	p := tool_call.arguments[coding_arg(kind)]
	is_string(p)
}

read_path := file_path("read_tools")

write_path := file_path("write_tools")

# The coding rules below add to coding_denials, which joins deny only for a
# call of a shell, read or write tool: other calls, and the request stage,
# skip the seven rules.
deny contains f if {
	coding_call
	some f in coding_denials
}

# (A call of a tool listed in shell_tools, read_tools or write_tools: every
# coding rule needs shell_command, read_path or write_path, which need that.)
coding_call if {
	some kind in ["shell_tools", "read_tools", "write_tools"]
	coding_tool_spec(kind) != null
}

short(cmd) := cmd if count(cmd) <= 120

short(cmd) := concat("", [substring(cmd, 0, 117), "..."]) if count(cmd) > 120

coding_denials contains {"rule": "coding.dangerous_command", "message": msg} if {
	cmd := shell_command
	some d in coding_setting("dangerous_commands", [])
	regex.match(d.regex, cmd)
	msg := sprintf("blocked %s `%s`: %s", [tool_call.tool_name, short(shell_command), d.why])
}

coding_denials contains {"rule": "coding.credential_access", "message": msg} if {
	cmd := shell_command
	some pattern in coding_setting("credential_paths", [])
	regex.match(pattern, cmd)
	msg := sprintf("blocked %s `%s`: it touches a credential file, which an agent has no business reading", [tool_call.tool_name, short(shell_command)])
}

coding_denials contains {"rule": "coding.credential_access", "message": msg} if {
	some path in {p | p := read_path} | {p | p := write_path}
	some pattern in coding_setting("credential_paths", [])
	regex.match(pattern, path)
	msg := sprintf("blocked %s of %s: it is a credential file, which an agent has no business reading or changing", [tool_call.tool_name, path])
}

# ---- paths ---------------------------------------------------------------

home_path(p) if startswith(p, "~")

home_path(p) if regex.match(`^[$][{]?HOME([}/]|$)`, p)

# A relative path that climbs above where it starts.
climbs_out(rel) if {
	segs := [s | some s in split(rel, "/"); s != ""; s != "."]
	count(segs) > 0
	some i in numbers.range(0, count(segs) - 1)
	ups := count([1 | some j in numbers.range(0, i); segs[j] == ".."])
	ups * 2 > i + 1
}

under(p, dir) if {
	dir != ""
	p == dir
}

under(p, dir) if {
	dir != ""
	startswith(p, concat("", [dir, "/"]))
	not climbs_out(substring(p, count(dir) + 1, -1))
}

inside_workspace(p) if {
	not startswith(p, "/")
	not home_path(p)
	not startswith(p, "$")
	not climbs_out(p)
}

inside_workspace(p) if under(p, workspace)

inside_workspace(p) if {
	some dir in coding_setting("scratch_dirs", [])
	under(p, trim_right(dir, "/"))
}

# With no workspace: only top-level directories and climbing out count.
reckless_target(p) if {
	startswith(p, "/")
	count([s | some s in split(p, "/"); s != ""; s != "*"]) <= 1
}

reckless_target(p) if {
	home_path(p)
	count([s | some s in split(p, "/"); s != ""; s != "*"]) <= 1
}

reckless_target(p) if {
	not startswith(p, "/")
	not home_path(p)
	climbs_out(p)
}

outside(p) if {
	workspace != ""
	not inside_workspace(p)
}

outside(p) if {
	workspace == ""
	reckless_target(p)
	not inside_scratch(p)
}

inside_scratch(p) if {
	some dir in coding_setting("scratch_dirs", [])
	under(p, trim_right(dir, "/"))
}

unquote(s) := trim(s, "\"'")

# The targets of each rm in a command line.
rm_targets contains unquote(t) if {
	cmd := shell_command
	contains(cmd, "rm")
	some segment in regex.split(`;|&&|[|][|]|[|]|\n`, cmd)
	argv := [w | some w in regex.split(`[ \t]+`, trim_space(segment)); w != ""]
	some i, w in argv
	w == "rm"
	every pre in array.slice(argv, 0, i) {
		pre in {"sudo", "command", "exec", "nohup", "time", "xargs"}
	}
	some t in array.slice(argv, i + 1, count(argv))
	not startswith(t, "-")
}

coding_denials contains {"rule": "coding.delete_outside_workspace", "message": msg} if {
	some t in rm_targets
	outside(t)
	msg := sprintf("blocked %s `%s`: it deletes %s, outside the workspace%s", [tool_call.tool_name, short(shell_command), t, workspace_note])
}

workspace_note := concat("", [" ", workspace]) if workspace != ""

workspace_note := "" if workspace == ""

# Shell redirections and tee write files too.
redirect_targets contains unquote(m[2]) if {
	cmd := shell_command
	some m in regex.find_all_string_submatch_n(`(>>?|tee[ \t]+(?:-a[ \t]+)?)[ \t]*([^ \t;|&<>()]+)`, cmd, -1)
	not startswith(m[2], "&")
}

coding_denials contains {"rule": "coding.write_outside_workspace", "message": msg} if {
	some t in redirect_targets
	workspace != ""
	not inside_workspace(t)
	msg := sprintf("blocked %s `%s`: it writes %s, outside the workspace %s", [tool_call.tool_name, short(shell_command), t, workspace])
}

coding_denials contains {"rule": "coding.write_outside_workspace", "message": msg} if {
	path := write_path
	workspace != ""
	not inside_workspace(path)
	msg := sprintf("blocked %s of %s: it is outside the workspace %s", [tool_call.tool_name, path, workspace])
}
