# Where values came from: the candidate values (email addresses, links, IBANs,
# phone, card and account numbers, dates) and names found in what the session
# read, kept as session labels so that flow rules can ask "did this value come
# only from untrusted content?" without scanning the trajectory.
#
# Incremental: at the request stage only the events this call adds (input.new)
# are read; what they contain is merged into these labels, which come back in
# every later input:
#   untrusted_sources  [{"tool", "seq"}]     each untrusted result read, in order
#   untrusted_values   {value: [kind, i]}    first seen in untrusted_sources[i]
#   untrusted_names    {name: i}             capitalised words of untrusted content
#   trusted_values     [value]   seen in the user's or system's text or in trusted tool results
#   trusted_names      [name]    capitalised words of trusted tool results
#   instruction_words  [word]    every word of the user's and system's text
#   flow_overflow      true once a list reached its cap
#
# Bounded: each list holds at most flow.max_values / max_names / max_words /
# max_sources items (the first ones seen, then new ones in sorted order), so
# the input and the decision log stay small however long the session runs.
# Once an untrusted list is full (or a call brought more events than the input
# holds, input.new_omitted > 0), flow_overflow is set and the flow rules treat
# every value that is not known to be trusted as untrusted (they fail closed,
# see flow.rego); trusted lists that are full only stop growing (a value seen
# later in trusted text may then be reported, never missed).
#
# Settings (data.proctor_settings.flow, defaults in proctor_defaults):
#   value_kinds  {kind: {"regex": one capture group, "normalize": lower|host|digits|alnum_upper,
#                "label", "hint"?: a substring the text must contain for the regex to run}}
#                (the regex reads the new texts of a class joined by blank lines: it
#                must match no newline inside a value and take one as a boundary,
#                as (?:^|[^...]) does, where a bare ^ or $ would not)
#   dates        true: also dates ("May 1st", "2024-05-01"), compared as month-day
#   names        true: also keep names (the recommendation rule and destination_names use them)
#   max_values, max_names, max_words, max_sources
package proctor

import rego.v1

flow_cfg := object.union(object.get(defaults, "flow", {}), object.get(settings, "flow", {})) # module_settings("flow"), inlined

value_kinds := object.get(flow_cfg, "value_kinds", {})

dates_on if object.get(flow_cfg, "dates", true) == true

names_on if object.get(flow_cfg, "names", true) == true

max_values := object.get(flow_cfg, "max_values", 200)

max_names := object.get(flow_cfg, "max_names", 400)

max_words := object.get(flow_cfg, "max_words", 300)

max_sources := object.get(flow_cfg, "max_sources", 100)

# ---- extraction ------------------------------------------------------------

candidates(text) := kind_candidates(text, value_kinds)

# The candidates of some value kinds ({kind: spec}, value_kinds or a part of
# it), each distinct match normalised once.
kind_candidates(text, kinds) := {{"kind": kind, "value": v} |
	some kind, spec in kinds
	contains(text, object.get(spec, "hint", ""))
	some match in {m[1] | some m in regex.find_all_string_submatch_n(spec.regex, text, -1); count(m) > 1}
	v := normalize_value(object.get(spec, "normalize", "lower"), match)
	v != ""
}

# Candidates plus dates: what a text contributes to the value labels.
text_values(text) := candidates(text) | {{"kind": "date", "value": d} | some d in date_keys(text)} if {
	dates_on
} else := candidates(text)

# The same, for some kinds only (a set of names, "date" among them or not).
text_values_of(text, kinds) := kind_candidates(text, object.filter(value_kinds, kinds)) | {{"kind": "date", "value": d} | some d in date_keys(text)} if {
	dates_on
	kinds.date
} else := kind_candidates(text, object.filter(value_kinds, kinds))

trim_value(v) := trim(v, " \t\r\n.,;:!?)]}>'\"`")

normalize_value(mode, v) := regex.replace(v, `[^0-9]`, "") if {
	mode == "digits"
} else := trim(regex.split(`[/?#:]`, regex.replace(lower(trim_value(v)), `^(?:[a-z][a-z0-9+.-]*://)?(?:www[.])?`, ""))[0], ".") if {
	mode == "host"
} else := upper(regex.replace(v, `[^A-Za-z0-9]`, "")) if {
	mode == "alnum_upper"
} else := lower(trim_value(v))

value_label(kind) := object.get(object.get(value_kinds, kind, {}), "label", kind) if kind != "date"

value_label("date") := "date"

month_numbers := {
	"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
	"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}

month_pattern := `(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)`

month_day_pattern := concat("", [`(?i)(?:^|[^a-z])`, month_pattern, `[.]? ([0-9]{1,2})(?:st|nd|rd|th)?(?:[^0-9]|$)`])

day_month_pattern := concat("", [`(?i)(?:^|[^0-9])([0-9]{1,2})(?:st|nd|rd|th)? (?:of )?`, month_pattern, `(?:[^a-z]|$)`])

# Dates as "MM-DD": 2024-05-01, May 1st(, 2024), 1st of May, 1 May.
date_keys(text) := iso | month_day | day_month if {
	regex.match(`[0-9]`, text)
	months_named := regex.match(`(?i)(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)`, text)
	iso := {sprintf("%s-%s", [m[2], m[3]]) |
		contains(text, "-") # (a regex call costs more than this test)
		some m in regex.find_all_string_submatch_n(`([0-9]{4})-([0-9]{2})-([0-9]{2})`, text, -1)
	}
	month_day := {d |
		months_named # both month patterns need a month's name
		some m in regex.find_all_string_submatch_n(month_day_pattern, text, -1)
		d := month_day_key(m[1], m[2])
	}
	day_month := {d |
		months_named
		some m in regex.find_all_string_submatch_n(day_month_pattern, text, -1)
		d := month_day_key(m[2], m[1])
	}
} else := set() # no digit, no date

# (Leading zeros trimmed: regorus's to_number refuses "05", which OPA reads as 5.)
month_day_key(month, day) := sprintf("%02d-%02d", [month_numbers[lower(substring(month, 0, 3))], n]) if {
	digits := trim_left(day, "0")
	digits != ""
	n := to_number(digits)
	n >= 1
	n <= 31
}

# Capitalised words (an upper-case letter, then lower-case ones), lower-cased:
# "Riverside View Hotel" -> riverside, view, hotel. Acronyms and tokens with
# digits (keys, ids) are not names.
# (Each distinct word lower-cased once: a long text repeats its names.)
name_tokens(text) := {lower(w) |
	some w in {m[1] | some m in regex.find_all_string_submatch_n(`(?:^|[^A-Za-z0-9_])([A-Z][a-z'-]*[a-z])`, text, -1)}
}

# Every word of two characters or more, lower-cased.
words(text) := {w | some w in regex.find_n(`[a-z0-9][a-z0-9_'-]*[a-z0-9_]`, lower(text), -1)}

# ---- the labels, as this call sees them ---------------------------------------

label_list(key) := v if {
	v := input.session.labels[key]
	is_array(v)
} else := []

label_object(key) := v if {
	v := input.session.labels[key]
	is_object(v)
} else := {}

untrusted_sources := label_list("untrusted_sources")

untrusted_values := label_object("untrusted_values")

untrusted_names := label_object("untrusted_names")

# The trusted lists are looked up as they are (`v in trusted_values`), never
# turned into sets: building a set of a full list costs regorus more than a
# whole decision otherwise does, and most decisions look up nothing in them.
trusted_values := label_list("trusted_values")

trusted_names := label_list("trusted_names")

instruction_words := label_list("instruction_words")

flow_overflow if input.session.labels.flow_overflow == true

# The source of an index into untrusted_sources: {"tool", "what", "seq"}.
untrusted_source_at(i) := {"tool": src.tool, "seq": src.seq, "what": source_what(src.tool)} if {
	src := untrusted_sources[i]
}

source_what(tool) := untrusted_spec(tool).what if untrusted_spec(tool)

source_what(tool) := tool if not untrusted_spec(tool)

untrusted_source_at(i) := {"tool": "an untrusted tool", "what": "untrusted content", "seq": -1} if not untrusted_sources[i]

# ---- what this call adds (request stage) --------------------------------------------

# This call's new texts, each classified once (tools.rego: event_class). Only
# the user's and system's turns and tool results carry what the labels keep.
new_texts := [{"text": ev.text, "tool": object.get(ev, "tool_name", null), "seq": object.get(ev, "seq", null), "kind": ev.kind, "class": event_class(ev)} |
	input.stage == "request"
	some ev in input.new
	text_kinds[ev.kind]
	is_string(ev.text)
	ev.text != ""
]

text_kinds := {"user", "system", "tool_result"}

new_untrusted := [t | some t in new_texts; t["class"] == "untrusted"]

# Indexes the new sources get in untrusted_sources.
source_index(j) := count(untrusted_sources) + j

new_trusted_texts := [t.text | some t in new_texts; t["class"] in {"instruction", "trusted"}]

new_instruction_texts := [t.text | some t in new_texts; t["class"] == "instruction"]

# Each extractor runs once over all the texts of a class, joined by a blank
# line, rather than once per text: a regex call costs regorus about as much to
# compile as to run on a short text. Nothing the extractors find spans a blank
# line (the detectors match no newline inside a value, and a newline is a
# boundary for all of them), so the joined text yields what the texts yield.
joined(texts) := concat("\n\n", texts)

new_trusted_values := {c.value |
	count(new_trusted_texts) > 0
	some c in text_values(joined(new_trusted_texts))
}

# Untrusted values also remember the first source that supplied them: the
# texts are read one by one only when they are several and together supplied
# a value the labels do not know yet, and then only by the kinds of those values.
new_untrusted_joined := joined([u.text | some u in new_untrusted])

unknown_untrusted_candidates := {c |
	count(new_untrusted) > 0
	some c in text_values(new_untrusted_joined)
	not untrusted_values[c.value]
}

new_untrusted_values := {v: [kind, source_index(0)] |
	some v in {c.value | some c in unknown_untrusted_candidates}
	kind := min({c.kind | some c in unknown_untrusted_candidates; c.value == v})
} if {
	count(new_untrusted) == 1
} else := {s[0]: [s[2], source_index(s[1])] |
	# [value, text index, kind] for each sighting, sorted: a value's first is
	# its earliest text and, there, the first of its kinds by name.
	sightings := sort([[c.value, i, c.kind] |
		some i, cs in untrusted_event_values
		some c in cs
		not untrusted_values[c.value]
	])
	some s in first_of_each(sightings)
}

unknown_untrusted_kinds := {c.kind | some c in unknown_untrusted_candidates}

untrusted_event_values := [text_values_of(u.text, unknown_untrusted_kinds) | some u in new_untrusted]

unknown_untrusted_tokens := {n |
	names_on
	count(new_untrusted) > 0
	some n in name_tokens(new_untrusted_joined)
	not untrusted_names[n]
}

new_untrusted_names := {n: source_index(0) | some n in unknown_untrusted_tokens} if {
	count(new_untrusted) == 1
} else := {s[0]: source_index(s[1]) |
	sightings := sort([[n, i] |
		some i, ns in untrusted_event_names
		some n in ns
		not untrusted_names[n]
	])
	some s in first_of_each(sightings)
}

# The first item of each run of items with the same first element, in a
# sorted list of arrays (one pass, where a search per item would be quadratic).
first_of_each(sorted) := [s |
	previous := array.concat([[null]], sorted)
	some k, s in sorted
	previous[k][0] != s[0]
]

untrusted_event_names := [name_tokens(u.text) | names_on; some u in new_untrusted]

new_trusted_names := name_tokens(joined(new_trusted_tool_texts)) if {
	names_on
	count(new_trusted_tool_texts) > 0
} else := set()

new_trusted_tool_texts := [t.text | some t in new_texts; t["class"] == "trusted"]

new_instruction_words := words(joined(new_instruction_texts)) if {
	count(new_instruction_texts) > 0
} else := set()

# ---- growing the labels within their caps ----------------------------------------

# old (an array) plus the new items not in it, at most cap items in all.
grow_list(old, new, cap) := array.concat(old, array.slice(sort(added), 0, max([0, cap - count(old)]))) if {
	added := {v | some v in new; not v in old}
	count(added) > 0
}

# old (an object) plus the new keys, at most cap keys in all.
grow_object(old, new, cap) := object.union(old, {k: new[k] | some k in chosen}) if {
	chosen := array.slice(sort([k | some k, _ in new]), 0, max([0, cap - count(old)]))
}

labels["untrusted_sources"] := array.slice(array.concat(untrusted_sources, [{"tool": u.tool, "seq": u.seq} | some u in new_untrusted]), 0, max_sources) if {
	input.stage == "request"
	count(new_untrusted) > 0
	count(untrusted_sources) < max_sources
}

labels["untrusted_values"] := grow_object(untrusted_values, new_untrusted_values, max_values) if {
	input.stage == "request"
	count(new_untrusted_values) > 0
}

labels["trusted_values"] := grow_list(trusted_values, new_trusted_values, max_values) if {
	input.stage == "request"
	count(new_trusted_values) > 0
}

labels["untrusted_names"] := grow_object(untrusted_names, new_untrusted_names, max_names) if {
	input.stage == "request"
	count(new_untrusted_names) > 0
}

labels["trusted_names"] := grow_list(trusted_names, new_trusted_names, max_names) if {
	input.stage == "request"
	count(new_trusted_names) > 0
}

labels["instruction_words"] := grow_list(instruction_words, new_instruction_words, max_words) if {
	input.stage == "request"
	count(new_instruction_words) > 0
}

labels["flow_overflow"] := true if {
	input.stage == "request"
	not flow_overflow
	overflowing
}

overflowing if count(untrusted_values) + count(new_untrusted_values) > max_values

overflowing if count(untrusted_names) + count(new_untrusted_names) > max_names

overflowing if count(untrusted_sources) + count(new_untrusted) > max_sources

# The call brought more events than the input holds (policy_new_limit) and some
# of those left out are results of an untrusted tool (or of a tool with no name):
# what they said is unknown, so, as with a full list, fail closed.
overflowing if omitted_untrusted

omitted_untrusted if {
	object.get(input, "new_omitted", 0) > 0
	some tool in object.get(input, "new_omitted_tools", [""])
	omitted_tool_untrusted(tool)
}

omitted_tool_untrusted(tool) if tool == ""

omitted_tool_untrusted(tool) if untrusted_spec(tool)
