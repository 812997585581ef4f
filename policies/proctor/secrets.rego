# Secrets may not flow to external sinks. Detectors are data (regexes for API
# keys, tokens, private keys, "password: ..." lines). A sink call marked
# external (tools.rego) is denied, or needs approval (secrets.action), when
#   - an argument matches a detector itself, or
#   - an argument carries a secret the session saw earlier (in a user turn or
#     a tool result), even stripped of what made it recognisable.
#
# Incremental and bounded: at the request stage the new events are scanned once
# and each secret found is remembered in the label secrets_seen as a
# fingerprint (its length and three weighted sums of its bytes) and a shape
# (letters and digits as "a" and "9"), never as text, with where it was seen;
# at most secrets.max_seen of them (the first).
# A detector's value is its regex's first capture group (or the whole match);
# "require" is a regex the value must also match.
#
# Settings (data.proctor_settings.secrets): detectors [{"name", "regex",
# "require"?, "hint"?: lower-case substrings, one of which the text must
# contain for the regex to run}], action ("deny" or "ask"), max_seen.
package proctor

import rego.v1

secrets_cfg := object.union(object.get(defaults, "secrets", {}), object.get(settings, "secrets", {})) # module_settings("secrets"), inlined

secret_detectors := object.get(secrets_cfg, "detectors", [])

# [{"kind", "value"}] found in a text by the detectors of the hints it holds
# (hints: {hint: [detector index]}, from hints_in).
secrets_in(text, hints) := {{"kind": d.name, "value": v} |
	lowered := lower(text)
	some i in {j | some h, detectors in hints; contains(lowered, h); some j in detectors}
	d := secret_detectors[i]
	some m in regex.find_all_string_submatch_n(d.regex, text, -1)
	v := secret_value(m)
	regex.match(object.get(d, "require", "."), v)
}

# A detector's "hint" (lower-case substrings) must be in the text before its
# regex runs; a detector without one runs on every text (the hint "" is in
# any text).
detector_hints(d) := [""] if not d.hint

detector_hints(d) := d.hint if d.hint

# Every detector's hints ("" for a detector without one).
secret_hints := {h | some d in secret_detectors; d.hint; some h in d.hint} | {"" | some d in secret_detectors; not d.hint}

# The hints some texts hold, with the detectors that have each ({hint:
# [detector index]}), tested once on all of them joined: most texts hold none,
# and then no text is tested one by one; otherwise each text is tested only for
# the hints found, and only their detectors run. Up to a thousand characters one
# strings.replace_n call over every hint tells whether the text holds any (it
# changes the text only if one is in it), cheaper than a contains() per hint;
# its cost grows with the text's length times the hints', so a longer text is
# tested hint by hint.
hints_in(texts) := {} if {
	lowered := lower(concat("\n", texts))
	count(lowered) <= 1000
	not secret_detector_unhinted
	strings.replace_n(secret_hint_blanks, lowered) == lowered
} else := {h: [i | some i, d in secret_detectors; h in detector_hints(d)] |
	lowered := lower(concat("\n", texts))
	some h in secret_hints
	contains(lowered, h)
}

secret_hint_blanks := {h: "" | some d in secret_detectors; d.hint; some h in d.hint; h != ""}

# Some detector has no hint, or the hint "" (detector_hints inlined: this is
# tested on most decisions).
secret_detector_unhinted if {
	some d in secret_detectors
	not d.hint
}

secret_detector_unhinted if {
	some d in secret_detectors
	"" in d.hint
}

secret_value(m) := m[1] if {
	count(m) > 1
	m[1] != ""
}

secret_value(m) := m[0] if count(m) == 1

hex_digits := {
	"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "7": 7,
	"8": 8, "9": 9, "a": 10, "b": 11, "c": 12, "d": 13, "e": 14, "f": 15,
}

# Its shape ("1a7b3d" -> "9a9a9a"): a cheap first test before the fingerprint.
secret_shape(s) := regex.replace(regex.replace(s, `[0-9]`, "9"), `[A-Za-z]`, "a")

# A fingerprint to recognise a secret again without keeping it.
secret_fingerprint(s) := sprintf("%d:%d:%d:%d", [count(s), a, b, c]) if {
	nibbles := [hex_digits[ch] | some ch in split(hex.encode(s), "")]
	a := sum([x | some i, n in nibbles; x := n * (i + 1)])
	b := sum([x | some i, n in nibbles; x := n * ((i + 1) * (i + 1))])
	c := sum([x | some i, n in nibbles; x := n * (((i + 3) * (i + 5)) % 1009)])
}

seen_secrets := label_list("secrets_seen")

seen_fingerprints := {s.fp: s | some s in seen_secrets; is_object(s)}

new_secrets := [{"fp": secret_fingerprint(x.value), "shape": secret_shape(x.value), "kind": x.kind, "tool": t.tool, "seq": t.seq} |
	hints := hints_in([t.text | some t in new_texts])
	count(hints) > 0
	some t in new_texts
	some x in secrets_in(t.text, hints)
]

new_secret_entries := [s |
	some i, s in new_secrets
	not seen_fingerprints[s.fp]
	not earlier_duplicate(i, s.fp)
]

earlier_duplicate(i, fp) if {
	some j, t in new_secrets
	j < i
	t.fp == fp
}

labels["secrets_seen"] := array.concat(seen_secrets, array.slice(new_secret_entries, 0, room)) if {
	input.stage == "request"
	count(new_secret_entries) > 0
	room := max([0, object.get(secrets_cfg, "max_seen", 50) - count(seen_secrets)])
	room > 0
}

# ---- the pending external sink call ------------------------------------------

# The string values of the pending call's arguments, gathered once.
pending_arg_strings := all_arg_strings(tool_call.arguments)

secret_findings contains {"rule": "flow.secret_to_external", "message": msg} if {
	sink_spec
	external_sink
	hints := hints_in(pending_arg_strings)
	count(hints) > 0
	some s in pending_arg_strings
	some x in secrets_in(s, hints)
	msg := sprintf("blocked %s: its arguments carry what looks like a %s, and secrets may not leave through an external tool", [tool_call.tool_name, x.kind])
}

secret_findings contains {"rule": "flow.secret_to_external", "message": msg} if {
	sink_spec
	count(seen_secrets) > 0
	external_sink
	shapes := {s.shape | some s in seen_secrets; is_object(s)}
	some s in pending_arg_strings
	some token in regex.find_n(`[A-Za-z0-9_+/=!@#$%^&*.-]{6,}`, s, -1)
	some t in {token, trim_right(token, ".")}
	shapes[secret_shape(t)]
	seen := seen_fingerprints[secret_fingerprint(t)]
	msg := sprintf("blocked %s: its arguments carry the %s the session saw %s", [tool_call.tool_name, seen.kind, seen_where(seen)])
}

seen_where(seen) := sprintf("in the result of %s at step %v", [seen.tool, seen.seq]) if is_string(seen.tool)

seen_where(seen) := sprintf("at step %v", [seen.seq]) if not is_string(seen.tool)

# (The findings first: they need a sink call, so the request stage stops there.)
deny contains f if {
	some f in secret_findings
	object.get(secrets_cfg, "action", "deny") == "deny"
}

ask contains f if {
	some f in secret_findings
	object.get(secrets_cfg, "action", "deny") == "ask"
}
