# The decision document Proctor asks for: data.proctor.decision.
#
# Every module of the library (and any module you add to package proctor)
# contributes to the rule sets below; this file only combines them.
package proctor

import rego.v1

# deny, warn, ask and terminate are sets of {"rule", "message"} objects.
# labels is an object merged into the session's labels for later calls (one
# rule owns each key; a new value replaces the old one, so a rule that
# accumulates outputs the union of the old value and the new items).
# patch is {"arguments": {...}} (rewrite the pending tool call) or {"text": "..."}.

default patch := null

decision := {
	"allow": count(deny) == 0,
	"deny": sort_findings(deny),
	"warn": sort_findings(warn),
	"ask": sort_findings(ask),
	"terminate": sort_findings(terminate),
	"labels": labels,
	"patch": patch,
}

sort_findings(s) := [f | some f in s]

# Every rule set exists even when no module adds to it.
deny contains f if some f in []

warn contains f if some f in []

ask contains f if some f in []

terminate contains f if some f in []

labels[k] := v if {
	some k, v in {}
}

# The library's settings: data.proctor_settings (policies/data.json), which your
# own data files override without editing any Rego. A setting the file leaves
# out falls back to data.proctor_defaults (policies/proctor_defaults/data.json:
# detectors and safe limits), then to the fallback given here.
# (Named refs, not object.get(data, ...): a rule that reads all of data would
# depend on itself, which OPA refuses as recursion.)
default settings := {}

settings := data.proctor_settings

default defaults := {}

defaults := data.proctor_defaults

setting(name, fallback) := object.get(settings, name, object.get(defaults, name, fallback))

# A module's own settings: data.proctor_settings.<module> over
# data.proctor_defaults.<module>, key by key. Each module keeps the result in a
# rule of its own (computed once per decision; a function would be evaluated
# at every use, which costs regorus a few microseconds each time).
module_settings(module) := object.union(object.get(defaults, module, {}), object.get(settings, module, {}))
