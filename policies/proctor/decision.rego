# The decision document Proctor asks for: data.proctor.decision.
#
# Every module of the library (and any module you add to package proctor)
# contributes to the rule sets below; this file only combines them.
package proctor

import rego.v1

# deny, warn, ask and terminate are sets of {"rule", "message"} objects.
# labels is an object merged into the session's labels for later calls.
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

# The library's settings: data.proctor_settings (policies/data.json), which your
# own data files override without editing any Rego.
setting(name, fallback) := object.get(object.get(data, "proctor_settings", {}), name, fallback)
