"""Policies: load Rego bundles, evaluate them on an engine, and turn the decision
document into data the proxy acts on."""
