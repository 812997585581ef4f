# Information flow: values that only untrusted content supplied may not steer
# an action. Reading untrusted content (web pages, inboxes, reviews, files from
# others) labels the session; then a sink call (see tools.rego) is denied, or
# needs approval (flow_action), when
#   - a destination carries a value (address, link, account, phone) that appears
#     only in untrusted content, not in the user's or system's instructions nor
#     in trusted tool results                          flow.untrusted_to_external
#   - an external destination is grounded nowhere trusted at all
#     (flow.taint)                                     flow.untrusted_to_external
#   - a payload carries such a value                   flow.untrusted_payload
#   - a date that decides the action ("when" arguments) came only from
#     untrusted content                                flow.untrusted_date
# and a final answer that urges the user toward something only untrusted content
# named ("You should absolutely visit X") is patched, denied or warned about
# (flow.recommendation)                                flow.untrusted_recommendation
#
# A destination for someone the user named (an "addressee" argument, e.g. the
# user says "invite Dora" and the agent finds her address on her web page) is
# accepted: the user delegated that lookup. Destinations in internal_domains
# are not external.
#
# Settings (data.proctor_settings): untrusted_tools, sinks, internal_domains
# (tools.rego), flow_action ("deny" or "ask"), and flow: {taint, dates, names,
# destination_names, recommendation: "patch"|"deny"|"warn"|"off", urging}.
# The value labels are kept by values.rego.
package proctor

import rego.v1

# ---- the session label: first untrusted read -------------------------------------

labels["untrusted_source"] := {"tool": first.tool, "seq": first.seq, "what": untrusted_spec(first.tool).what} if {
	input.stage == "request"
	not input.session.labels.untrusted_source
	count(new_untrusted) > 0
	first := new_untrusted[0]
}

# A call that brought more events than the input holds (input.new_omitted),
# among them results of an untrusted tool: the rules fail closed on what those
# said (with flow_overflow, values.rego), from a source named for what happened.
labels["untrusted_source"] := {"tool": "the events left out of the policy input", "seq": -1, "what": "untrusted content no policy read (the call brought more than policy_new_limit events)"} if {
	input.stage == "request"
	not input.session.labels.untrusted_source
	count(new_untrusted) == 0
	omitted_untrusted
}

untrusted_source := src if {
	src := input.session.labels.untrusted_source
	is_object(src)
}

# ---- provenance of one value ----------------------------------------------

# The untrusted source of a value that no trusted text vouches for.
untrusted_only(v) := untrusted_source_at(untrusted_values[v][1]) if not v in trusted_values

# Beyond the caps, anything not known to be trusted counts as untrusted.
untrusted_only(v) := {"tool": untrusted_source.tool, "seq": untrusted_source.seq, "what": "more untrusted content than Proctor keeps track of, starting with what"} if {
	flow_overflow
	not v in trusted_values
	not untrusted_values[v]
}

trusted_word(w) if w in trusted_names

trusted_word(w) if w in instruction_words

# Cheap gates, tested first: untrusted_only(v) can only hold once the labels
# carry untrusted values (or overflowed), and the name rule needs untrusted
# names. Until the session read untrusted content, the sink rules below cost
# two label lookups instead of running the extractors on every argument.
values_tainted if count(untrusted_values) > 0

values_tainted if flow_overflow

names_tainted if count(untrusted_names) > 0

# ---- the pending sink call ------------------------------------------------

sink_args(role) := {[name, s] |
	is_object(tool_call.arguments)
	some name in object.get(sink_spec, role, [])
	v := tool_call.arguments[name] # an argument the call leaves out has no strings
	some s in strings_in(v)
}

# [argument, string value] pairs of the pending sink call, by role.
sink_destinations := sink_args("destination") if sink_spec

sink_payloads := sink_args("payload") if sink_spec

sink_dates := sink_args("when") if sink_spec

# The user named whom the call is for: every word of an addressee argument
# appears in the user's or system's instructions.
vouched if {
	sink_spec.addressee
	some pair in sink_args("addressee")
	s := pair[1]
	ws := words(s)
	count(ws) > 0
	every w in ws {
		w in instruction_words
	}
}

# (Each definition tests internal_domains first: with none configured, the
# usual case, nothing is internal and nothing more is evaluated.)
internal_value(c) if {
	count(internal_domains) > 0
	c.kind == "email"
	some d in internal_domains
	endswith(c.value, concat("", ["@", d]))
}

internal_value(c) if {
	count(internal_domains) > 0
	c.kind == "url"
	some d in internal_domains
	c.value == d
}

internal_value(c) if {
	count(internal_domains) > 0
	c.kind == "url"
	some d in internal_domains
	endswith(c.value, concat("", [".", d]))
}

# A destination string is internal when it has values and all of them are internal,
# or when it is exactly an internal domain.
internal_destination(s) if {
	count(internal_domains) > 0
	cs := destination_candidates(s)
	count(cs) > 0
	every c in cs {
		internal_value(c)
	}
}

internal_destination(s) if {
	count(internal_domains) > 0
	lower(s) in internal_domains
}

# The candidate values of each destination string of the pending call,
# extracted once (three rules below read them).
destination_values[s] := candidates(s) if {
	some pair in sink_destinations
	s := pair[1]
}

destination_candidates(s) := destination_values[s]

destination_candidates(s) := candidates(s) if not destination_values[s]

flow_findings contains {"rule": "flow.untrusted_to_external", "message": msg} if {
	values_tainted
	some pair in sink_destinations
	s := pair[1]
	some c in destination_values[s]
	not internal_value(c)
	src := untrusted_only(c.value)
	not vouched
	msg := sprintf("blocked %s to %s: that %s came from %s, not from the user", [tool_call.tool_name, c.value, value_label(c.kind), source_phrase(src)])
}

# The strict form (flow.taint): after an untrusted read, an external destination
# must appear in the user's instructions or in trusted data.
flow_findings contains {"rule": "flow.untrusted_to_external", "message": msg} if {
	source := untrusted_source
	object.get(flow_cfg, "taint", true) == true
	external_sink
	some pair in sink_destinations
	s := pair[1]
	not internal_destination(s)
	cs := {c.value | some c in destination_values[s]}
	count(cs) > 0
	not_grounded(cs)
	not vouched
	msg := sprintf("blocked %s to %s: the session read untrusted content from %s at step %v, and that destination does not appear in the user's instructions or in trusted data", [tool_call.tool_name, s, source.tool, source.seq])
}

# None of the values is trusted and none is reported by the rule above.
# (A count, not `every`: regorus mis-evaluates `not set[x]` inside `every`.)
not_grounded(cs) if count({v | some v in cs; grounded_or_reported(v)}) == 0

grounded_or_reported(v) if v in trusted_values

grounded_or_reported(v) if untrusted_only(v)

# Names in destinations (flow.destination_names): a capitalised word that only
# untrusted content used, e.g. a hotel only a review mentioned.
flow_findings contains {"rule": "flow.untrusted_to_external", "message": msg} if {
	names_tainted
	object.get(flow_cfg, "destination_names", false) == true
	some pair in sink_destinations
	arg := pair[0]
	s := pair[1]
	some t in name_tokens(s)
	i := untrusted_names[t]
	not trusted_word(t)
	not vouched
	msg := sprintf("blocked %s: the name %q in %s came from %s, not from the user", [tool_call.tool_name, t, arg, source_phrase(untrusted_source_at(i))])
}

flow_findings contains {"rule": "flow.untrusted_payload", "message": msg} if {
	values_tainted
	some pair in sink_payloads
	arg := pair[0]
	s := pair[1]
	some c in candidates(s)
	src := untrusted_only(c.value)
	msg := sprintf("blocked %s: its %s carries the %s %s, which came from %s, not from the user", [tool_call.tool_name, arg, value_label(c.kind), c.value, source_phrase(src)])
}

flow_findings contains {"rule": "flow.untrusted_date", "message": msg} if {
	values_tainted
	dates_on
	some pair in sink_dates
	arg := pair[0]
	s := pair[1]
	some d in date_keys(s)
	src := untrusted_only(d)
	msg := sprintf("blocked %s: the date in %s (month-day %s) came from %s, not from the user", [tool_call.tool_name, arg, d, source_phrase(src)])
}

flow_action := setting("flow_action", "deny")

# (Only a sink call can have flow findings: other calls, answers and the
# request stage stop at the first condition.)
deny contains f if {
	sink_spec
	flow_action == "deny"
	some f in flow_findings
}

ask contains f if {
	sink_spec
	flow_action == "ask"
	some f in flow_findings
}

# ---- final answers that push untrusted content --------------------------------

# Sentences of the pending final answer that urge the user toward something
# (flow.urging) named only by untrusted content.
pushed_sentences[sentence] := src if {
	final_answer
	untrusted_source
	some sentence in regex.find_n(`[^.!?\n]+[.!?]*`, final_answer, -1)
	regex.match(object.get(flow_cfg, "urging", "$^"), sentence)
	src := pushed_source(sentence)
}

pushed_source(sentence) := untrusted_source_at(srcs[0]) if {
	tokens := inline_name_tokens(sentence)
	srcs := [untrusted_names[t] | some t in tokens; untrusted_names[t]; not trusted_word(t)]
	count(srcs) > 0
}

# Capitalised words inside a sentence (not the first word of it).
inline_name_tokens(sentence) := sort({lower(t) |
	some m in regex.find_all_string_submatch_n(`[a-z,;:] ([A-Z][a-z'-]*[a-z](?: [A-Z][a-z'-]*[a-z])*)`, sentence, -1)
	some t in split(m[1], " ")
})

recommendation_findings contains {"rule": "flow.untrusted_recommendation", "message": msg} if {
	some sentence, src in pushed_sentences
	msg := sprintf("the answer urges the user toward something only %s named: %q", [source_phrase(src), trim_space(sentence)])
}

recommendation_action := object.get(flow_cfg, "recommendation", "patch")

deny contains f if {
	final_answer
	some f in recommendation_findings
	recommendation_action == "deny"
}

warn contains f if {
	final_answer
	some f in recommendation_findings
	recommendation_action in {"warn", "patch"}
}

patch := {"text": concat("", [strings.replace_n({s: "" | some s, _ in pushed_sentences}, final_answer), note])} if {
	final_answer
	count(pushed_sentences) > 0
	recommendation_action == "patch"
	note := "\n\n[Proctor removed a recommendation that came only from content the agent read, not from you or from trusted data.]"
}
