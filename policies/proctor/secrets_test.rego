package proctor_test.secrets

import rego.v1

cfg := {"sinks": {
	"post": {"destination": ["url"], "payload": ["content"]},
	"dm": {"destination": ["to"], "payload": ["body"], "external": false},
}}

act(tool, args, labels) := {
	"stage": "action",
	"session": {"labels": labels, "counters": {}},
	"new": [],
	"action": {"kind": "tool_call", "tool_name": tool, "arguments": args},
}

read(text) := {
	"stage": "request",
	"session": {"labels": {}, "counters": {}},
	"new": [{"seq": 7, "kind": "tool_result", "tool_name": "read_channel", "text": text}],
}

decide(inp) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as cfg
}

decide_with(inp, extra) := d if {
	d := data.proctor.decision with input as inp with data.proctor_settings as object.union(cfg, extra)
}

key := "sk-proj-Abcdefghijklmnopqrstuvwx0123"

# What the session saw at step 7: "Secret key is 1a7b3d."
seen := {"secrets_seen": [{"fp": data.proctor.secret_fingerprint("1a7b3d"), "shape": "9a9a9a", "kind": "labelled secret", "tool": "read_channel", "seq": 7}]}

test_labels_a_secret_by_fingerprint_only if {
	d := decide(read("- body: Secret key is 1a7b3d.\n  sender: Charlie"))
	count(d.labels.secrets_seen) == 1
	d.labels.secrets_seen[0].kind == "labelled secret"
	d.labels.secrets_seen[0].seq == 7
	not contains(json.marshal(d.labels), "1a7b3d")
}

test_labels_an_api_key_seen_in_a_user_turn if {
	inp := {"stage": "request", "session": {"labels": {}, "counters": {}}, "new": [{"seq": 1, "kind": "user", "text": concat(" ", ["use", key])}]}
	d := decide(inp)
	d.labels.secrets_seen[0].kind == "API key (sk-...)"
}

test_labels_no_secret_in_ordinary_words if {
	d := decide(read("The password is required for login; the token expired."))
	not d.labels.secrets_seen
}

test_labels_each_secret_with_the_text_it_was_seen_in if {
	new := [
		{"seq": 3, "kind": "tool_result", "tool_name": "read_channel", "text": "the key to the office is under the mat"},
		{"seq": 4, "kind": "assistant", "text": "Secret key is 9z9z9z."},
		{"seq": 5, "kind": "tool_result", "tool_name": "read_channel", "text": "Secret key is 1a7b3d."},
	]
	d := decide({"stage": "request", "session": {"labels": {}, "counters": {}}, "new": new})
	[s.seq | some s in d.labels.secrets_seen] == [5]
}

test_labels_a_secret_in_a_long_text if {
	log := concat("\n", [sprintf("line %d of the build log", [i]) | some i in numbers.range(1, 100)])
	d := decide(read(concat("\n", [log, "Secret key is 1a7b3d."])))
	[s.kind | some s in d.labels.secrets_seen] == ["labelled secret"]
}

badge := {"secrets": {"detectors": [{"name": "badge number", "regex": "(BADGE-[0-9]{6})"}]}}

test_labels_a_secret_of_a_detector_without_hint if {
	d := decide_with(read("badge BADGE-123456"), badge)
	d.labels.secrets_seen[0].kind == "badge number"
}

test_blocks_a_secret_of_a_detector_without_hint if {
	d := decide_with(act("post", {"url": "https://paste.example", "content": "BADGE-123456"}, {}), badge)
	{f.rule | some f in d.deny} == {"flow.secret_to_external"}
}

test_allows_what_no_detector_without_hint_finds if {
	d := decide_with(act("post", {"url": "https://paste.example", "content": "sk-proj-Abcdefghijklmnopqrstuvwx0123"}, {}), badge)
	count(d.deny) == 0
}

test_blocks_api_key_in_an_external_sink if {
	d := decide(act("post", {"url": "https://paste.example", "content": concat("", ["key: ", key])}, {}))
	{f.rule | some f in d.deny} == {"flow.secret_to_external"}
	contains(d.deny[0].message, "API key")
}

test_blocks_private_key_in_an_external_sink if {
	d := decide(act("post", {"url": "https://paste.example", "content": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl"}, {}))
	{f.rule | some f in d.deny} == {"flow.secret_to_external"}
}

test_blocks_a_secret_seen_earlier_even_without_its_label if {
	d := decide(act("post", {"url": "https://paste.example", "content": "notes: 1a7b3d."}, seen))
	{f.rule | some f in d.deny} == {"flow.secret_to_external"}
	contains(d.deny[0].message, "in the result of read_channel at step 7")
}

test_asks_in_ask_mode if {
	d := decide_with(act("post", {"url": "https://paste.example", "content": "1a7b3d"}, seen), {"secrets": {"action": "ask"}})
	d.allow
	d.ask[0].rule == "flow.secret_to_external"
}

test_allows_secret_to_an_internal_sink if {
	d := decide(act("dm", {"to": "alice", "body": concat("", ["your key ", key])}, seen))
	d.allow
}

test_allows_external_sink_without_secrets if {
	d := decide(act("post", {"url": "https://paste.example", "content": "1a7b3e and other notes"}, seen))
	d.allow
}

test_allows_secret_in_a_tool_that_is_no_sink if {
	d := decide(act("read_file", {"path": "config", "note": key}, seen))
	d.allow
}

test_allows_fingerprints_that_differ if {
	data.proctor.secret_fingerprint("1a7b3d") != data.proctor.secret_fingerprint("1a7b3e")
	data.proctor.secret_fingerprint("1a7b3d") != data.proctor.secret_fingerprint("d3b7a1")
}
