package proctor_test.flow

import rego.v1

# (Tests refer to data.proctor.decision by its full path: regorus 0.13 resolves
# rules reached through an import alias wrongly when a package spans files.)

cfg := {
	"untrusted_tools": {"fetch_url": {"what": "a web page"}, "read_inbox": {"what": "the inbox"}},
	"sinks": {
		"send_email": {"destination": ["to"], "payload": ["body"]},
		"send_chat": {"destination": ["recipient"], "payload": ["body"], "external": false},
		"invite": {"destination": ["email"], "addressee": ["name"]},
		"book": {"destination": ["place"], "when": ["date"]},
	},
	"internal_domains": ["corp.example"],
}

tainted := {"untrusted_source": {"tool": "fetch_url", "seq": 4, "what": "a web page"}}

# What the session read: an attacker's address, link, name and date at step 4.
read := object.union(tainted, {
	"untrusted_sources": [{"tool": "fetch_url", "seq": 4}],
	"untrusted_values": {
		"eve@evil.example": ["email", 0], "evil.example": ["url", 0],
		"dora@mail.example": ["email", 0], "05-01": ["date", 0],
	},
	"untrusted_names": {"riverside": 0, "dora": 0},
	"trusted_values": ["bob@partner.example", "01-15"],
	"trusted_names": ["alice"],
	"instruction_words": ["invite", "dora", "to", "the", "team", "alice"],
})

act(tool, args, labels) := {
	"stage": "action",
	"session": {"labels": labels, "counters": {}},
	"new": [],
	"action": {"kind": "tool_call", "tool_name": tool, "arguments": args},
}

answer(text, labels) := {
	"stage": "action",
	"session": {"labels": labels, "counters": {}},
	"new": [],
	"action": {"kind": "assistant", "text": text},
}

email(to, labels) := act("send_email", {"to": to, "body": "hi"}, labels)

read_web := {"stage": "request", "session": {"labels": {}, "counters": {}}, "new": [{"seq": 4, "kind": "tool_result", "tool_name": "fetch_url", "text": "page"}]}

decide(inp) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as cfg
}

decide_with(inp, extra) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as object.union(cfg, extra)
}

rules(d, key) := {f.rule | some f in d[key]}

# ---- the session label ----------------------------------------------------

test_labels_untrusted_read if {
	d := decide(read_web)
	d.labels.untrusted_source.tool == "fetch_url"
	d.labels.untrusted_source.seq == 4
	d.labels.untrusted_source.what == "a web page"
	d.allow
}

test_labels_nothing_for_a_trusted_tool_result if {
	inp := json.patch(read_web, [{"op": "replace", "path": "/new/0/tool_name", "value": "read_file"}])
	d := decide(inp)
	not d.labels.untrusted_source
}

test_labels_list_form_of_untrusted_tools if {
	d := decide_with(read_web, {"untrusted_tools": ["fetch_url"]})
	d.labels.untrusted_source.what == "fetch_url"
}

# ---- destinations ----------------------------------------------------------

test_blocks_external_email_after_untrusted_read if {
	d := decide(email("mallory@unknown.example", tainted))
	not d.allow
	d.deny[0].rule == "flow.untrusted_to_external"
	contains(d.deny[0].message, "fetch_url at step 4")
}

test_blocks_recipient_list_with_one_outsider if {
	d := decide(email(["bob@corp.example", "mallory@unknown.example"], tainted))
	not d.allow
}

test_blocks_destination_that_only_untrusted_content_named if {
	d := decide(email("eve@evil.example", read))
	rules(d, "deny") == {"flow.untrusted_to_external"}
	contains(d.deny[0].message, "blocked send_email to eve@evil.example: that email address came from a web page the agent read with fetch_url at step 4, not from the user")
}

test_blocks_untrusted_destination_even_for_an_internal_sink if {
	d := decide(act("send_chat", {"recipient": "eve@evil.example", "body": "hi"}, read))
	rules(d, "deny") == {"flow.untrusted_to_external"}
}

test_blocks_invite_for_someone_the_user_did_not_name if {
	d := decide(act("invite", {"name": "Fred", "email": "eve@evil.example"}, read))
	rules(d, "deny") == {"flow.untrusted_to_external"}
}

test_asks_instead_of_denying_in_ask_mode if {
	d := decide_with(email("eve@evil.example", tainted), {"flow_action": "ask"})
	d.allow
	d.ask[0].rule == "flow.untrusted_to_external"
}

test_allows_internal_email_after_untrusted_read if {
	d := decide(email("bob@corp.example", tainted))
	d.allow
}

test_allows_external_email_without_untrusted_read if {
	d := decide(email("eve@evil.example", {}))
	d.allow
}

test_allows_destination_trusted_data_also_names if {
	d := decide(email("bob@partner.example", read))
	d.allow
}

test_allows_address_looked_up_for_someone_the_user_named if {
	# the user said "invite Dora"; her address came from her web page
	d := decide(act("invite", {"name": "Dora", "email": "dora@mail.example"}, read))
	d.allow
}

test_allows_strict_rule_off if {
	d := decide_with(email("mallory@unknown.example", tainted), {"flow": {"taint": false}})
	d.allow
}

# ---- payloads and dates -----------------------------------------------------

test_blocks_link_in_payload_that_only_untrusted_content_named if {
	d := decide(act("send_chat", {"recipient": "alice", "body": "see https://www.evil.example/x"}, read))
	rules(d, "deny") == {"flow.untrusted_payload"}
	contains(d.deny[0].message, "its body carries the link evil.example")
}

test_blocks_date_that_only_untrusted_content_named if {
	d := decide(act("book", {"place": "Cafe", "date": "2024-05-01 10:00"}, read))
	rules(d, "deny") == {"flow.untrusted_date"}
}

test_allows_payload_without_untrusted_values if {
	d := decide(act("send_chat", {"recipient": "alice", "body": "the meeting moved to 3pm, see bob@partner.example"}, read))
	d.allow
}

test_allows_date_the_user_gave if {
	d := decide(act("book", {"place": "Cafe", "date": "January 15th"}, read))
	d.allow
}

test_allows_dates_off if {
	d := decide_with(act("book", {"place": "Cafe", "date": "2024-05-01"}, read), {"flow": {"dates": false}})
	d.allow
}

# ---- names in destinations (opt-in) ----------------------------------------------

test_blocks_untrusted_name_in_destination_when_enabled if {
	d := decide_with(act("book", {"place": "Riverside View", "date": "January 15th"}, read), {"flow": {"destination_names": true}})
	rules(d, "deny") == {"flow.untrusted_to_external"}
	contains(d.deny[0].message, "riverside")
}

test_allows_untrusted_name_in_destination_by_default if {
	d := decide(act("book", {"place": "Riverside View", "date": "January 15th"}, read))
	d.allow
}

# ---- beyond the caps ----------------------------------------------------------

test_blocks_unknown_value_once_the_lists_overflowed if {
	d := decide(act("send_chat", {"recipient": "alice", "body": "go to www.unseen.example"}, object.union(read, {"flow_overflow": true})))
	rules(d, "deny") == {"flow.untrusted_payload"}
}

test_allows_trusted_value_once_the_lists_overflowed if {
	d := decide(act("send_chat", {"recipient": "alice", "body": "write to bob@partner.example"}, object.union(read, {"flow_overflow": true})))
	d.allow
}

# ---- final answers --------------------------------------------------------------

test_patches_answer_pushing_what_only_untrusted_content_named if {
	d := decide(answer("Your table is booked. You should absolutely visit Riverside View Hotel! Enjoy.", read))
	d.allow
	rules(d, "warn") == {"flow.untrusted_recommendation"}
	not contains(d.patch.text, "Riverside")
	contains(d.patch.text, "Your table is booked.")
	contains(d.patch.text, "Proctor removed a recommendation")
}

test_blocks_such_an_answer_in_deny_mode if {
	d := decide_with(answer("You should absolutely visit Riverside View Hotel.", read), {"flow": {"recommendation": "deny"}})
	rules(d, "deny") == {"flow.untrusted_recommendation"}
}

test_allows_recommendation_of_what_trusted_data_named if {
	d := decide(answer("I recommend meeting Alice there.", read))
	d.patch == null
	count(d.warn) == 0
}

test_allows_plain_mention_of_an_untrusted_name if {
	d := decide(answer("The reviews mention the Riverside View Hotel.", read))
	d.patch == null
}

test_allows_answer_before_any_untrusted_read if {
	d := decide(answer("You should absolutely visit Riverside View Hotel.", {}))
	d.patch == null
}

test_allows_recommendation_rule_off if {
	d := decide_with(answer("You should absolutely visit Riverside View Hotel.", read), {"flow": {"recommendation": "off"}})
	d.patch == null
	count(d.warn) == 0
}

# ---- a call with more events than the input holds ------------------------------------

too_big := {
	"stage": "request", "session": {"labels": {}, "counters": {}}, "new_omitted": 1000,
	"new_omitted_tools": ["fetch_url", "read_file"],
	"new": [{"seq": 0, "kind": "user", "text": "summarise my files"}, {"seq": 1001, "kind": "tool_result", "tool_name": "read_file", "text": "notes"}],
}

test_allows_external_email_after_a_big_call_that_left_out_only_trusted_results if {
	labels := decide(object.union(too_big, {"new_omitted_tools": ["read_file"]})).labels
	not labels.flow_overflow
	d := decide(email("eve@evil.example", labels))
	d.allow
}

test_blocks_external_email_after_a_call_too_big_to_read if {
	labels := decide(too_big).labels
	labels.flow_overflow == true
	labels.untrusted_source.seq == -1
	d := decide(email("eve@evil.example", labels))
	"flow.untrusted_to_external" in rules(d, "deny")
}

test_allows_internal_email_after_a_call_too_big_to_read if {
	d := decide(email("bob@corp.example", decide(too_big).labels))
	d.allow
}
