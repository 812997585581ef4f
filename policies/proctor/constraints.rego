# Conditions on one argument value, shared by permissions (what a value must be)
# and approval (when a call needs a person). A condition is an object of tests,
# all of which must hold:
#   pattern / not_pattern   regex the value must (not) match
#   one_of / not_one_of     the value (case-insensitive) is (not) in the list
#   domains                 an email address or URL whose domain is one of these
#                           (or a subdomain); for a list value, every item
#   gt, gte, lt, lte        numeric comparisons
#   max_length              string length
package proctor

import rego.v1

# The values a condition is checked against: a list checks each of its items.
condition_values(v) := v if is_array(v)

condition_values(v) := [v] if not is_array(v)

condition_holds(value, cond) if {
	every op, param in cond {
		every v in condition_values(value) {
			test_holds(op, param, v)
		}
	}
}

test_holds("pattern", p, v) if regex.match(p, sprintf("%v", [v]))

test_holds("not_pattern", p, v) if not regex.match(p, sprintf("%v", [v]))

test_holds("one_of", list, v) if as_text(v) in {as_text(x) | some x in list}

test_holds("not_one_of", list, v) if not as_text(v) in {as_text(x) | some x in list}

# Any value as lower-case text: "EUR" and "eur", true and "true" compare equal.
as_text(v) := lower(sprintf("%v", [v]))

test_holds("domains", list, v) if {
	host := value_domain(sprintf("%v", [v]))
	some d in list
	domain_matches(host, lower(d))
}

test_holds("gt", n, v) if as_number(v) > n

test_holds("gte", n, v) if as_number(v) >= n

test_holds("lt", n, v) if as_number(v) < n

test_holds("lte", n, v) if as_number(v) <= n

test_holds("max_length", n, v) if count(sprintf("%v", [v])) <= n

value_domain(s) := lower(trim_value(parts[count(parts) - 1])) if {
	contains(s, "@")
	not contains(s, "://")
	parts := split(s, "@")
}

value_domain(s) := normalize_value("host", s) if not email_like(s)

email_like(s) if {
	contains(s, "@")
	not contains(s, "://")
}

domain_matches(host, d) if host == d

domain_matches(host, d) if endswith(host, concat("", [".", d]))

# A number, or a string that is one ("250", "19.99", "0250"); undefined otherwise.
# (Leading zeros are dropped first: regorus's to_number fails on "05", which OPA
# reads as 5, and a failing builtin is an engine error that denies the call.)
as_number(v) := v if is_number(v)

as_number(v) := to_number(concat("", [m[1], m[2]])) if {
	is_string(v)
	some m in regex.find_all_string_submatch_n(`^[ ]*(-?)0*([0-9]+(?:[.][0-9]+)?)[ ]*$`, v, 1)
}

# "amount > 100" for messages.
describe_condition(cond) := concat(", ", [describe_test(op, param) | some op, param in cond])

describe_test(op, param) := sprintf("%s %v", [symbols[op], param]) if symbols[op]

describe_test(op, param) := sprintf("%s %v", [op, param]) if not symbols[op]

symbols := {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "one_of": "one of", "not_one_of": "not one of", "pattern": "matching", "not_pattern": "not matching", "domains": "in domains"}
