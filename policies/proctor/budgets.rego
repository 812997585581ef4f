# Budgets and rates: how much one session, and one sub-agent tree, may do.
#   budget.tool_calls      tool calls per session                  counters.tool_calls_total
#   budget.tool_calls_per_tool  calls of one tool per session      counters.tool_calls[tool]
#   budget.side_effects    sink calls (tools.rego) per session     counters.tool_calls[sink]
#   budget.amount          money moved per session: the sum of the "amount" argument
#                          of sinks that name one, kept in the label amount_moved
#   budget.tokens          input + output tokens per session        counters
#   budget.cost            tokens priced per model (USD per million tokens)
#   budget.wall_time       seconds since the session started
#   budget.rate            model calls per minute: the times of the last calls are
#                          kept in the label recent_call_times (at most the limit)
#   budget.depth           sub-agent depth (session.depth, 0 for a root session)
#   budget.fan_out         sub-agents one session may spawn: calls of budgets.spawn_tools
#   budget.tree_*          the same limits over the whole sub-agent tree, from
#                          input.session.tree.counters when Proctor supplies them
#
# All read counters Proctor keeps, or one small label; none scans the trajectory.
# Calls made earlier in the same reply (parallel tool calls) are not yet in the
# counters, so they are counted from this call's own events.
#
# Settings (data.proctor_settings.budgets; 0 or absent means no limit):
#   max_tool_calls, per_tool {tool: n}, max_side_effects, max_amount,
#   max_tokens, max_calls_per_minute, max_cost_usd, prices {model: {"input", "output"}} (USD per
#   million tokens, "*" for any model), max_seconds, max_depth, max_children,
#   spawn_tools [tool], tree_max_tool_calls, tree_max_tokens, tree_max_sessions.
# (max_tool_calls at the top of proctor_settings is still honoured.)
package proctor

import rego.v1

budgets_cfg := object.union(object.get(defaults, "budgets", {}), object.get(settings, "budgets", {})) # module_settings("budgets"), inlined

# The limits that are set: {name: n} for every positive number.
budget_limits := object.union(
	{name: n | some name, n in budgets_cfg; is_number(n); n > 0},
	{"max_tool_calls": n | n := setting("max_tool_calls", 0); is_number(n); n > 0; not budgets_cfg.max_tool_calls},
)

# The budget rules below add to budget_denials, which joins deny only when some
# limit is set: with no budget configured (the default) the fourteen rules are
# not evaluated at all.
deny contains f if {
	budgets_on
	some f in budget_denials
}

# (Some budget setting, or the legacy top-level max_tool_calls: cheaper to
# test than budget_limits, and true whenever a limit or per_tool is set.)
budgets_on if count(budgets_cfg) > 0

budgets_on if setting("max_tool_calls", 0) != 0

counters := object.get(input.session, "counters", {})

counter(name) := object.get(counters, name, 0)

tool_counter(tool) := object.get(object.get(counters, "tool_calls", {}), tool, 0)

# Tool calls earlier in this same reply: in the trajectory, after the stored events.
this_call_tool_calls := [ev |
	some ev in input.trajectory
	ev.kind == "tool_call"
	ev.seq >= object.get(input.session, "events", 0)
]

budget_denials contains {"rule": "budget.tool_calls", "message": msg} if {
	n := budget_limits.max_tool_calls
	tool_call
	used := counter("tool_calls_total") + count(this_call_tool_calls)
	used >= n
	msg := sprintf("blocked %s: the session already made %v tool calls, the limit is %v", [tool_call.tool_name, used, n])
}

budget_denials contains {"rule": "budget.tool_calls_per_tool", "message": msg} if {
	tool_call
	n := budgets_cfg.per_tool[tool_call.tool_name]
	used := tool_counter(tool_call.tool_name) + count([1 | some ev in this_call_tool_calls; ev.tool_name == tool_call.tool_name])
	used >= n
	msg := sprintf("blocked %s: the session already called it %v times, the limit is %v", [tool_call.tool_name, used, n])
}

budget_denials contains {"rule": "budget.side_effects", "message": msg} if {
	n := budget_limits.max_side_effects
	sink_spec
	stored := sum([tool_counter(name) | some name, _ in sinks])
	pending := count([1 | some ev in this_call_tool_calls; sinks[ev.tool_name]])
	stored + pending >= n
	msg := sprintf("blocked %s: the session already made %v calls with side effects, the limit is %v", [tool_call.tool_name, stored + pending, n])
}

# ---- money ------------------------------------------------------------------

amount_moved := object.get(input.session.labels, "amount_moved", 0)

pending_amount := a if {
	arg := sink_spec.amount
	a := as_number(tool_call.arguments[arg])
}

budget_denials contains {"rule": "budget.amount", "message": msg} if {
	n := budget_limits.max_amount
	a := pending_amount
	amount_moved + a > n
	msg := sprintf("blocked %s of %v: the session already moved %v, and the limit is %v", [tool_call.tool_name, a, amount_moved, n])
}

# Counted once the call is allowed (an asked-for call counts: it may be approved).
labels["amount_moved"] := amount_moved + pending_amount if {
	sink_spec.amount
	pending_amount > 0
	count(deny) == 0
}

# ---- tokens, cost, time ------------------------------------------------------

tokens_used := counter("input_tokens") + counter("output_tokens")

budget_denials contains {"rule": "budget.tokens", "message": msg} if {
	input.stage == "request"
	n := budget_limits.max_tokens
	tokens_used >= n
	msg := sprintf("blocked this call: the session already used %v tokens, the limit is %v", [tokens_used, n])
}

price := p if {
	p := budgets_cfg.prices[input.call.model]
} else := p if {
	p := budgets_cfg.prices["*"]
}

cost_usd := ((counter("input_tokens") * object.get(price, "input", 0)) + (counter("output_tokens") * object.get(price, "output", 0))) / 1000000

budget_denials contains {"rule": "budget.cost", "message": msg} if {
	input.stage == "request"
	n := budget_limits.max_cost_usd
	cost_usd >= n
	msg := sprintf("blocked this call: the session already cost about $%v at %s prices, the limit is $%v", [cents(cost_usd), input.call.model, n])
}

# Dollars rounded to cents. (sprintf("%.2f") prints integers wrongly on OPA.)
cents(x) := round(x * 100) / 100

budget_denials contains {"rule": "budget.wall_time", "message": msg} if {
	input.stage == "request"
	n := budget_limits.max_seconds
	elapsed := (time.now_ns() / 1000000000) - input.session.started
	elapsed >= n
	msg := sprintf("blocked this call: the session started %v seconds ago, the limit is %v", [floor(elapsed), n])
}

now_s := time.now_ns() / 1000000000

recent_call_times := [t | some t in label_list("recent_call_times"); is_number(t); t > now_s - 60]

budget_denials contains {"rule": "budget.rate", "message": msg} if {
	input.stage == "request"
	n := budget_limits.max_calls_per_minute
	count(recent_call_times) >= n
	msg := sprintf("blocked this call: the session made %v model calls in the last minute, the limit is %v; wait a little", [count(recent_call_times), n])
}

# The calls of the last minute, this one included, at most the limit.
labels["recent_call_times"] := array.slice(times, max([0, count(times) - n]), count(times)) if {
	input.stage == "request"
	budgets_on
	n := budget_limits.max_calls_per_minute
	times := array.concat(recent_call_times, [floor(now_s)])
}

# ---- sub-agents ----------------------------------------------------------------

budget_denials contains {"rule": "budget.depth", "message": msg} if {
	input.stage == "request"
	n := budget_limits.max_depth
	input.session.depth > n
	msg := sprintf("blocked this call: this sub-agent is %v levels below its root session, the limit is %v", [input.session.depth, n])
}

spawn_tools := {t | some t in object.get(budgets_cfg, "spawn_tools", [])}

budget_denials contains {"rule": "budget.depth", "message": msg} if {
	n := budget_limits.max_depth
	spawn_tools[tool_call.tool_name]
	input.session.depth + 1 > n
	msg := sprintf("blocked %s: a sub-agent spawned here would be %v levels deep, the limit is %v", [tool_call.tool_name, input.session.depth + 1, n])
}

budget_denials contains {"rule": "budget.fan_out", "message": msg} if {
	n := budget_limits.max_children
	spawn_tools[tool_call.tool_name]
	stored := sum([tool_counter(t) | some t in spawn_tools])
	pending := count([1 | some ev in this_call_tool_calls; spawn_tools[ev.tool_name]])
	stored + pending >= n
	msg := sprintf("blocked %s: this session already started %v sub-agents, the limit is %v", [tool_call.tool_name, stored + pending, n])
}

# ---- the whole tree (when Proctor supplies input.session.tree) -----------------

tree := t if {
	t := input.session.tree
	is_object(t)
}

tree_counter(name) := object.get(object.get(tree, "counters", {}), name, 0)

budget_denials contains {"rule": "budget.tree_tool_calls", "message": msg} if {
	n := budget_limits.tree_max_tool_calls
	tool_call
	used := tree_counter("tool_calls_total") + count(this_call_tool_calls)
	used >= n
	msg := sprintf("blocked %s: the agents of this session's tree already made %v tool calls, the limit is %v", [tool_call.tool_name, used, n])
}

budget_denials contains {"rule": "budget.tree_tokens", "message": msg} if {
	input.stage == "request"
	n := budget_limits.tree_max_tokens
	used := tree_counter("input_tokens") + tree_counter("output_tokens")
	used >= n
	msg := sprintf("blocked this call: the agents of this session's tree already used %v tokens, the limit is %v", [used, n])
}

budget_denials contains {"rule": "budget.tree_sessions", "message": msg} if {
	n := budget_limits.tree_max_sessions
	spawn_tools[tool_call.tool_name]
	used := object.get(tree, "sessions", 1)
	used >= n
	msg := sprintf("blocked %s: this session's tree already has %v agents, the limit is %v", [tool_call.tool_name, used, n])
}
