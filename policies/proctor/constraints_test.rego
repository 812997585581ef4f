package proctor_test.constraints

import rego.v1

holds(v, cond) if data.proctor.condition_holds(v, cond)

test_allows_values_that_meet_each_test if {
	holds("abc-12", {"pattern": "^[a-z]+-[0-9]+$"})
	holds("ok", {"not_pattern": "secret"})
	holds("EUR", {"one_of": ["eur", "usd"]})
	holds("gbp", {"not_one_of": ["eur", "usd"]})
	holds("a@corp.example", {"domains": ["corp.example"]})
	holds("https://eu.corp.example/x", {"domains": ["corp.example"]})
	holds(["a@corp.example", "b@corp.example"], {"domains": ["corp.example"]})
	holds(150, {"gt": 100, "lte": 150})
	holds("99.5", {"lt": 100, "gte": 0})
	holds("short", {"max_length": 5})
	holds("0250", {"gt": 249, "lt": 251}) # leading zeros, as models write amounts and days
	holds(" -07.5 ", {"lt": -7, "gt": -8})
	holds("0", {"gte": 0, "lte": 0})
	holds("0.25", {"gt": 0.2, "lt": 0.3})
}

test_blocks_values_that_fail_a_test if {
	not holds("abc", {"pattern": "^[0-9]+$"})
	not holds("my secret", {"not_pattern": "secret"})
	not holds("btc", {"one_of": ["eur", "usd"]})
	not holds("usd", {"not_one_of": ["eur", "usd"]})
	not holds("a@corp.example.evil.io", {"domains": ["corp.example"]})
	not holds(["a@corp.example", "b@gmail.com"], {"domains": ["corp.example"]})
	not holds(100, {"gt": 100})
	not holds("lots", {"lt": 100})
	not holds("0500", {"lt": 100})
	not holds("1e9", {"lt": 100}) # not a plain number: the test fails
	not holds("longer", {"max_length": 5})
}

test_labels_conditions_in_plain_words if {
	data.proctor.describe_condition({"gt": 100}) == "> 100"
	data.proctor.describe_condition({"one_of": ["a", "b"]}) == `one of ["a", "b"]`
}
